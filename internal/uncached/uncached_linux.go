package uncached

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// align is the alignment of direct reads' offsets, lengths and memory: the page size, a multiple
// of every logical block size in common use. A device that needs more makes the first direct read
// fail with EINVAL, and the rest is read through the cache.
const align = 4096

func alignedBuf(n int) []byte {
	b := make([]byte, n+align)
	off := (align - int(uintptr(unsafe.Pointer(&b[0]))%align)) % align
	return b[off : off+n : off+n]
}

// startAhead starts the direct read-ahead if f is a regular file large enough, the start is
// aligned, some page from there on is not cached, and f can be reopened with O_DIRECT.
func (r *Reader) startAhead() {
	fi, err := r.f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < minSize || r.off%align != 0 || r.off >= fi.Size() {
		return
	}
	resident, err := residency(r.f, fi.Size())
	if err != nil || allResident(resident, r.off, fi.Size()-r.off) {
		return
	}
	d, err := reopenDirect(r.f, fi)
	if err != nil {
		return
	}
	r.direct = true
	r.ahead = make(chan chunk, depth)
	r.free = make(chan []byte, depth)
	for range depth {
		r.free <- getBuf()
	}
	r.stop = make(chan struct{})
	r.wg.Add(1)
	go r.readAhead(d, resident, r.off)
}

// readAhead reads chunk after chunk into the free buffers until the end of the file or an error,
// which it passes on as the last chunk. A chunk whose pages are all cached is copied from the
// cache; an unaligned one (the tail after a short read) too.
func (r *Reader) readAhead(d *os.File, resident []byte, off int64) {
	defer r.wg.Done()
	defer d.Close()
	useDirect := true
	for {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.stop:
			return
		}
		var n int
		var err error
		if useDirect && off%align == 0 && !allResident(resident, off, int64(len(buf))) {
			n, err = pread(d, buf, off)
			if errors.Is(err, syscall.EINVAL) && n == 0 {
				useDirect = false // the device wants more alignment, or the filesystem changed its mind
				n, err = pread(r.f, buf, off)
			}
		} else {
			n, err = pread(r.f, buf, off)
		}
		if err != nil {
			err = &os.PathError{Op: "read", Path: r.f.Name(), Err: err}
		} else if n == 0 {
			err = io.EOF
		}
		off += int64(n)
		select {
		case r.ahead <- chunk{buf, n, err}:
		case <-r.stop:
			putBuf(buf)
			return
		}
		if err != nil {
			return
		}
	}
}

// pread is one pread(2), retried on EINTR. A short count is the end of the file (or, for a direct
// read, its unaligned tail).
func pread(f *os.File, buf []byte, off int64) (int, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := sc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Pread(int(fd), buf, off)
			if rerr != unix.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	if n < 0 {
		n = 0
	}
	return n, rerr
}

// residency returns mincore's vector for f: one byte per page, bit 0 set when the page is cached.
func residency(f *os.File, size int64) ([]byte, error) {
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%s: too large to map", f.Name())
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(m)
	vec := make([]byte, (size+int64(os.Getpagesize())-1)/int64(os.Getpagesize()))
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return nil, errno
	}
	return vec, nil
}

// allResident reports whether every page of [off, off+n) that the vector covers is cached.
func allResident(vec []byte, off, n int64) bool {
	ps := int64(os.Getpagesize())
	for i := off / ps; i < (off+n+ps-1)/ps && i < int64(len(vec)); i++ {
		if vec[i]&1 == 0 {
			return false
		}
	}
	return true
}

// reopenDirect opens f's own inode again with O_DIRECT (through /proc/self/fd, so a rename or
// replacement of its path cannot substitute another file), checking it is the same file.
func reopenDirect(f *os.File, fi os.FileInfo) (*os.File, error) {
	d, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDONLY|syscall.O_DIRECT|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	di, err := d.Stat()
	if err != nil || !os.SameFile(fi, di) {
		d.Close()
		return nil, errors.New("reopened a different file")
	}
	return d, nil
}

// Cached reports how many of path's pages the page cache holds, out of how many.
func Cached(path string) (cached, pages int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, 0, err
	}
	vec, err := residency(f, fi.Size())
	for _, v := range vec {
		cached += int(v & 1)
	}
	return cached, len(vec), err
}
