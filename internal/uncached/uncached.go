// Package uncached reads a file once, start to end, without filling the page cache: what the
// cache already holds is copied from it, and the rest is read from disk with O_DIRECT, a chunk
// ahead of the consumer.
//
// wal-push reads each segment exactly once, and in a backlog the segment was written long enough
// ago that the kernel may have dropped it from the cache. Reading such a file through the cache
// makes the kernel allocate (and, on a VM that hands free memory back to its host, fault in) 4096
// pages per 16 MiB segment only to drop them again: on this project's benchmark VM a cold
// segment cost 12-28 ms of CPU that way and 3-4 ms read directly (machine-wide, /proc/stat, 20
// segments). A file the cache holds (the common case right after PostgreSQL wrote it) is read
// through it as before; only the pages it lacks go to disk.
//
// Direct reads need aligned offsets, lengths and memory; anything that does not fit (a file under
// 1 MiB, an unaligned start, a filesystem that refuses O_DIRECT) is read through the cache, so
// the bytes a Reader yields are always the file's. The kernel keeps direct reads coherent with
// the cache (dirty pages are written back before the disk is read).
package uncached

import (
	"io"
	"os"
	"sync"
)

const (
	// chunkSize is what one read asks for, and the size of the read-ahead buffers.
	chunkSize = 1 << 20
	// depth is how many chunks are in flight: one being consumed, one being read.
	depth = 2
	// minSize: smaller files are read through the cache (too little to gain, and .history files
	// and the like are often cached).
	minSize = 1 << 20
)

// bufs keeps chunk buffers for reuse: in a long-lived pusher, fresh memory costs page faults too.
var bufs = make(chan []byte, 8)

func getBuf() []byte {
	select {
	case b := <-bufs:
		return b
	default:
		return alignedBuf(chunkSize)
	}
}

func putBuf(b []byte) {
	if b == nil {
		return
	}
	select {
	case bufs <- b:
	default:
	}
}

// Reader yields the bytes of a file from the offset it had when NewReader was called to its end.
// The file's own offset is not used after NewReader. Close releases the read-ahead; it does not
// close the file.
type Reader struct {
	f   *os.File
	off int64 // next offset read through the cache, when there is no read-ahead

	// read-ahead (direct mode)
	ahead chan chunk
	free  chan []byte
	stop  chan struct{}
	wg    sync.WaitGroup
	cur   chunk
	pos   int

	closeOnce sync.Once
	direct    bool // whether the read-ahead was started (for tests)
}

type chunk struct {
	buf []byte
	n   int
	err error
}

// NewReader returns a Reader for f from its current offset.
func NewReader(f *os.File) *Reader {
	r := &Reader{f: f}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return r // not seekable: read through f as it is
	}
	r.off = off
	r.startAhead()
	return r
}

// Read reads up to len(p) bytes.
func (r *Reader) Read(p []byte) (int, error) {
	if !r.direct {
		n, err := r.f.ReadAt(p, r.off)
		r.off += int64(n)
		if n > 0 && err == io.EOF {
			err = nil
		}
		return n, err
	}
	if err := r.fill(); err != nil {
		return 0, err
	}
	n := copy(p, r.cur.buf[r.pos:r.cur.n])
	r.pos += n
	return n, nil
}

// WriteTo writes the rest of the file to w, handing it the read-ahead's buffers directly. Without
// a read-ahead it is io.Copy of Read (through w's ReadFrom, if it has one).
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if !r.direct {
		return io.Copy(w, struct{ io.Reader }{r})
	}
	var total int64
	for {
		if err := r.fill(); err == io.EOF {
			return total, nil
		} else if err != nil {
			return total, err
		}
		m, err := w.Write(r.cur.buf[r.pos:r.cur.n])
		total += int64(m)
		r.pos += m
		if err != nil {
			return total, err
		}
	}
}

// fill makes r.cur hold unread bytes, or returns what ended the file (io.EOF at its end).
func (r *Reader) fill() error {
	for r.pos >= r.cur.n {
		if r.cur.err != nil {
			return r.cur.err
		}
		if r.cur.buf != nil {
			r.free <- r.cur.buf // room: every buffer is either here, in flight or in free
			r.cur.buf = nil
		}
		r.cur, r.pos = <-r.ahead, 0
	}
	return nil
}

// Close stops the read-ahead and keeps its buffers for the next Reader. It does not close the
// file. It is safe to call more than once.
func (r *Reader) Close() error {
	r.closeOnce.Do(func() {
		if !r.direct {
			return
		}
		close(r.stop)
		r.wg.Wait()
		putBuf(r.cur.buf)
		r.cur.buf = nil
		for {
			select {
			case b := <-r.free:
				putBuf(b)
			case c := <-r.ahead:
				putBuf(c.buf)
			default:
				return
			}
		}
	})
	return nil
}
