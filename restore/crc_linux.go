package restore

import (
	"fmt"
	"hash/crc32"
	"os"
	"runtime/debug"

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
