//go:build cgo

package object

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"

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
	ctx *zstdCCtx
	in  []byte
	out []byte
}

var zstdChunkers = make(freeList[*zstdChunker], keptCodecs)

func newZstdChunker() (*zstdChunker, error) {
	return &zstdChunker{ctx: newZstdCCtx(), in: make([]byte, 0, zstdChunk), out: make([]byte, ddzstd.CompressBound(zstdChunk))}, nil
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
	out, err := z.c.ctx.compress(z.c.out, z.c.in, z.level)
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

// zstdReader decodes a payload with libzstd, one whole frame at a time: each frame's compressed
// bytes are read into memory (their end found by walking the block headers) and decompressed in
// one call into a buffer of the size the frame declares. That is what zstdChunkWriter writes
// (frames of zstdChunk raw bytes, their size in the header). A pgbench segment decodes in 12.6 ms
// on one core against 14.3 with klauspost/compress's streaming decoder, the largest share of a
// prefetcher's CPU (libzstd itself runs at about 1.6 GB/s). A frame that does not declare its size, declares
// more than zstdMaxWindow or names a dictionary (written by other encoders, e.g. a build
// without cgo), and anything after it, goes to klauspost/compress. Memory stays bounded either
// way: a frame is at most zstdMaxWindow raw and maxFrame compressed.
func zstdReader(r io.Reader) (io.Reader, func(), error) {
	d, _ := zstdFrameDecoders.get(newZstdFrameDecoder)
	z := &zstdFrames{src: r, d: d}
	return z, z.release, nil
}

// zstdFrameDecoder is a decompression context and the buffers of one frame; kept in a freeList.
type zstdFrameDecoder struct {
	ctx   ddzstd.Ctx
	frame []byte // the compressed frame
	out   []byte // its content
}

var zstdFrameDecoders = make(freeList[*zstdFrameDecoder], keptCodecs)

func newZstdFrameDecoder() (*zstdFrameDecoder, error) {
	return &zstdFrameDecoder{ctx: ddzstd.NewCtx(), frame: make([]byte, 0, zstdChunk/4), out: make([]byte, zstdChunk)}, nil
}

// The parts of the zstd frame format (RFC 8878) zstdFrames reads.
const (
	zstdMagic       = 0xFD2FB528
	zstdMaxBlock    = 128 << 10
	zstdBlockHeader = 3
	// maxFrame bounds the compressed bytes of a frame held in memory: a frame of zstdMaxWindow
	// raw bytes stored as raw blocks, with room to spare.
	maxFrame = zstdMaxWindow + zstdMaxWindow/64
)

type zstdFrames struct {
	src     io.Reader
	d       *zstdFrameDecoder
	pending []byte // decoded bytes not yet read
	// rest decodes the stream from the first frame zstdFrames does not take.
	rest        io.Reader
	restRelease func()
	err         error
}

func (z *zstdFrames) Read(p []byte) (int, error) {
	for len(z.pending) == 0 {
		if z.rest != nil {
			return z.rest.Read(p)
		}
		if z.err != nil {
			return 0, z.err
		}
		z.err = z.next()
	}
	n := copy(p, z.pending)
	z.pending = z.pending[n:]
	return n, nil
}

func (z *zstdFrames) chunk() ([]byte, error) {
	for len(z.pending) == 0 {
		if z.rest != nil {
			return nil, errNoChunk
		}
		if z.err != nil {
			return nil, z.err
		}
		z.err = z.next()
	}
	b := z.pending
	z.pending = nil
	return b, nil
}

func (z *zstdFrames) release() {
	if z.restRelease != nil {
		z.restRelease()
		z.restRelease = nil
	}
	if z.d != nil {
		zstdFrameDecoders.put(z.d)
		z.d = nil
	}
	z.pending, z.rest = nil, nil
	if z.err == nil {
		z.err = errors.New("object: zstd reader released")
	}
}

// read appends n bytes of the source to the frame buffer. A source that ends mid-frame is a
// truncated payload; any other error of the source is returned as it is.
func (z *zstdFrames) read(n int) error {
	f := z.d.frame
	if len(f)+n > maxFrame {
		return corrupt("zstd: a frame of more than %d compressed bytes", maxFrame)
	}
	f = slices.Grow(f, n)[:len(f)+n]
	_, err := io.ReadFull(z.src, f[len(f)-n:])
	z.d.frame = f
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return corrupt("zstd: truncated frame")
	}
	return err
}

// next decodes the next frame into pending, hands the rest of the stream to klauspost/compress
// when the frame is not one for libzstd, or returns io.EOF at the end of the stream.
func (z *zstdFrames) next() error {
	z.d.frame = z.d.frame[:0]
	// One byte first: the end of the source there is the end of the stream, not a truncation.
	var first [1]byte
	if n, err := io.ReadFull(z.src, first[:]); n == 0 {
		return err // io.EOF at the end of the stream
	}
	z.d.frame = append(z.d.frame, first[0])
	if err := z.read(4); err != nil { // the rest of the magic and the frame header descriptor
		return err
	}
	f := z.d.frame
	if binary.LittleEndian.Uint32(f) != zstdMagic {
		return z.handOff() // a skippable frame, or not zstd at all: klauspost/compress tells
	}
	fhd := f[4]
	single := fhd>>5&1 == 1
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && single {
		fcsSize = 1
	}
	if fcsSize == 0 || fhd&3 != 0 { // no declared size, or a dictionary
		return z.handOff()
	}
	rest := fcsSize
	if !single {
		rest++ // the window descriptor
	}
	if err := z.read(rest); err != nil {
		return err
	}
	f = z.d.frame
	var fcs uint64
	for i := fcsSize - 1; i >= 0; i-- {
		fcs = fcs<<8 | uint64(f[len(f)-fcsSize+i])
	}
	if fcsSize == 2 {
		fcs += 256
	}
	if fcs > zstdMaxWindow {
		return z.handOff()
	}
	for last := false; !last; {
		if err := z.read(zstdBlockHeader); err != nil {
			return err
		}
		f = z.d.frame
		h := uint32(f[len(f)-3]) | uint32(f[len(f)-2])<<8 | uint32(f[len(f)-1])<<16
		last = h&1 == 1
		size := int(h >> 3)
		if size > zstdMaxBlock {
			return corrupt("zstd: a block of %d bytes", size)
		}
		switch h >> 1 & 3 {
		case 1: // RLE: one byte, repeated size times
			size = 1
		case 3:
			return corrupt("zstd: reserved block type")
		}
		if err := z.read(size); err != nil {
			return err
		}
	}
	if fhd>>2&1 == 1 {
		if err := z.read(4); err != nil { // the content checksum
			return err
		}
	}
	// libzstd wants room for at least one byte, even for an empty frame.
	want := int(fcs)
	if cap(z.d.out) < max(want, 1) {
		z.d.out = make([]byte, want)
	}
	n, err := z.d.ctx.DecompressInto(z.d.out[:max(want, 1)], z.d.frame)
	if err != nil {
		return corrupt("zstd: %v", err)
	}
	if n != want {
		return corrupt("zstd: a frame of %d bytes declares %d", n, want)
	}
	z.pending = z.d.out[:n]
	return nil
}

// handOff gives klauspost/compress the stream from the start of the frame just read.
func (z *zstdFrames) handOff() error {
	rest, release, err := zstdStreamReader(io.MultiReader(bytes.NewReader(z.d.frame), z.src))
	if err != nil {
		return corrupt("zstd: %v", err)
	}
	z.rest, z.restRelease = rest, release
	return nil
}
