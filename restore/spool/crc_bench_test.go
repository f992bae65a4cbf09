package spool

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSpoolCRC measures the check a wal-fetch call makes of a spooled 16 MiB segment
// before serving it, over files in the page cache but not in the CPU's caches (eight files,
// 128 MiB, taken in turn), as when the prefetcher spooled them a few segments earlier.
func BenchmarkSpoolCRC(b *testing.B) {
	const size = 16 << 20
	dir := b.TempDir()
	var files []*os.File
	buf := make([]byte, size)
	for i := range 8 {
		rand.Read(buf)
		p := filepath.Join(dir, string(rune('a'+i)))
		if err := os.WriteFile(p, buf, 0o600); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		if _, err := crcRead(files[i%len(files)], size); err != nil {
			b.Fatal(err)
		}
	}
}
