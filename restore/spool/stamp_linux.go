package spool

import (
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

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

// StampOf is the stamp (see Magic) of a spool file with the FileInfo fi.
func StampOf(fi os.FileInfo) Stamp {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Stamp{}
	}
	return Stamp{Boot: bootID(), Ino: st.Ino, Ctime: st.Ctim.Nano()}
}

// resident reports whether every page of f's first size bytes is in the page cache (mincore on
// a mapping that is not populated, so nothing is read).
func resident(f *os.File, size int64) bool {
	if size <= 0 || int64(int(size)) != size {
		return false
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return false
	}
	defer syscall.Munmap(m)
	pages := make([]byte, (int(size)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&pages[0]))); errno != 0 {
		return false
	}
	for _, p := range pages {
		if p&1 == 0 {
			return false
		}
	}
	return true
}
