//go:build cgo

package object

import (
	"errors"
	"io"

	ddzstd "github.com/DataDog/zstd"
)

// ZstdEncoder names the library that writes zstd frames in this build.
//
// With cgo, frames are written by libzstd (through github.com/DataDog/zstd, which builds its
// bundled copy of the C library, so no system package is needed). Without cgo (CGO_ENABLED=0, or
// no C compiler on the build machine) klauspost/compress writes them (zstd_nocgo.go). Both write standard
// frames, and klauspost/compress decodes either.
//
// libzstd is given the raw bytes zstdChunk at a time, each compressed whole into a frame of its
// own (the payload is then a run of frames, which zstd decoders read as one stream). Its
// streaming API, fed 256 KiB at a time, spends most of its time in the slower "extDict" match
// finder once its window buffer wraps: on a pgbench corpus, one core compresses a 16 MiB segment
// at level 3 in 50-56 ms as 4 MiB frames, 62-93 ms streamed, 107-132 ms with klauspost/compress,
// and two at once cost 70 ms each as frames against 114 streamed. A 2 MiB frame stores 2.1%
// more than one 16 MiB frame (level 3's window is 2 MiB, so little reaches across) and holds
// 4 MiB per compression in memory instead of the segment; 4 MiB frames stored 0.9% more for
// 1.5 MB more RSS in wal-push.
const ZstdEncoder = "libzstd"

// zstdChunk is the raw bytes per frame. A frame of known size gets a window no larger than
// itself, well within zstdMaxWindow at every level.
const zstdChunk = 2 << 20

// zstdChunker holds a compression context and the buffers of one chunk; kept in a freeList, so
// a long-lived process reuses them.
type zstdChunker struct {
	ctx ddzstd.Ctx
	in  []byte
	out []byte
}

var zstdChunkers = make(freeList[*zstdChunker], keptCodecs)

func newZstdChunker() (*zstdChunker, error) {
	return &zstdChunker{ctx: ddzstd.NewCtx(), in: make([]byte, 0, zstdChunk), out: make([]byte, ddzstd.CompressBound(zstdChunk))}, nil
}

type zstdChunkWriter struct {
	w      io.Writer
	level  int
	c      *zstdChunker
	frames int
	err    error
}

func zstdWriter(w io.Writer, level int) (io.WriteCloser, error) {
	c, _ := zstdChunkers.get(newZstdChunker)
	c.in = c.in[:0]
	return &zstdChunkWriter{w: w, level: min(max(level, 1), ddzstd.BestCompression), c: c}, nil
}

func (z *zstdChunkWriter) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n := len(p)
	for len(p) > 0 {
		k := copy(z.c.in[len(z.c.in):zstdChunk], p)
		z.c.in = z.c.in[:len(z.c.in)+k]
		p = p[k:]
		if len(z.c.in) == zstdChunk {
			if err := z.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush compresses the buffered chunk into one frame.
func (z *zstdChunkWriter) flush() error {
	out, err := z.c.ctx.CompressLevel(z.c.out, z.c.in, z.level)
	if err == nil {
		_, err = z.w.Write(out)
	}
	z.c.in = z.c.in[:0]
	z.frames++
	z.err = err
	return err
}

// Close writes the last frame (an empty one when nothing was written, so the payload is always a
// valid zstd stream) and returns the buffers to the free list.
func (z *zstdChunkWriter) Close() error {
	if z.c == nil {
		return z.err
	}
	if z.err == nil && (len(z.c.in) > 0 || z.frames == 0) {
		z.flush()
	}
	zstdChunkers.put(z.c)
	z.c = nil
	err := z.err
	if err == nil {
		z.err = errors.New("object: write after close")
	}
	return err
}
