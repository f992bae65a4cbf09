package restore

import (
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// crcOf returns the CRC-32C of f's first size bytes. On Linux it maps the file, populated in one
// call, and checksums the mapping: reading a 16 MiB spool file through a buffer cost about 2 ms
// of copying from the page cache while PostgreSQL's replay waited. Where the file cannot be
// mapped it is read as elsewhere.
func crcOf(f *os.File, size int64) (sum uint32, err error) {
	if size <= 0 || int64(int(size)) != size {
		return crcRead(f, size)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return crcRead(f, size)
	}
	defer unix.Munmap(m)
	// A file truncated under the mapping faults (SIGBUS): a damaged spool file, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errSpool, r)
		}
	}()
	return crc32.Checksum(m, castagnoli), nil
}

// bootID is the kernel's random boot id, which changes at every boot; zero if it cannot be read.
var bootID = sync.OnceValue(func() (id [16]byte) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id
	}
	h, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if err != nil || len(h) != len(id) {
		return id
	}
	copy(id[:], h)
	return id
})

// stampOf is the stamp (see spoolMagic) of a spool file with the FileInfo fi.
func stampOf(fi os.FileInfo) spoolStamp {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return spoolStamp{}
	}
	return spoolStamp{boot: bootID(), ino: st.Ino, ctime: st.Ctim.Nano()}
}

// resident reports whether every page of f's first size bytes is in the page cache (mincore on
// a mapping that is not populated, so nothing is read).
func resident(f *os.File, size int64) bool {
	if size <= 0 || int64(int(size)) != size {
		return false
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return false
	}
	defer unix.Munmap(m)
	pages := make([]byte, (int(size)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&pages[0]))); errno != 0 {
		return false
	}
	for _, p := range pages {
		if p&1 == 0 {
			return false
		}
	}
	return true
}
