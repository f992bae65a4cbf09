//go:build !linux

package restore

import "os"

// crcOf returns the CRC-32C of f's first size bytes (see crc_linux.go).
func crcOf(f *os.File, size int64) (uint32, error) { return crcRead(f, size) }

// stampOf is a stamp no checksum file is trusted with: elsewhere than on Linux the content is
// always checked with its CRC (see spoolMagic).
func stampOf(os.FileInfo) spoolStamp { return spoolStamp{} }

// resident is false: see stampOf.
func resident(*os.File, int64) bool { return false }
