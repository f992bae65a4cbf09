package uncached

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/walship/walship/internal/waltest"
)

// coldFile writes size random bytes, syncs them and drops them from the page cache.
func coldFile(t testing.TB, dir string, size int) (string, []byte) {
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16)})
	rng.Read(data)
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	waltest.Evict(t, path)
	return path, data
}

// open opens path for the rest of the test.
func open(t *testing.T, path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestColdFileReadDirect: a cold file is read directly, whole and exact, through WriteTo and
// through Read, at sizes around the alignment and chunk boundaries, and the page cache is left
// as empty as it was.
func TestColdFileReadDirect(t *testing.T) {
	dir := waltest.DiskTempDir(t)
	for _, size := range []int{minSize, minSize + 1, 16 << 20, 16<<20 + 100, 3*chunkSize + align - 1} {
		for _, via := range []string{"WriteTo", "Read"} {
			path, data := coldFile(t, dir, size)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			r := NewReader(f)
			if !r.direct {
				t.Fatalf("size %d: a cold file on %s was not read directly", size, dir)
			}
			var got bytes.Buffer
			if via == "WriteTo" {
				_, err = r.WriteTo(&got)
			} else {
				_, err = io.CopyBuffer(struct{ io.Writer }{&got}, struct{ io.Reader }{r}, make([]byte, 100000))
			}
			if err != nil {
				t.Fatalf("size %d via %s: %v", size, via, err)
			}
			if !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("size %d via %s: read %d bytes that differ from the file's %d", size, via, got.Len(), size)
			}
			r.Close()
			f.Close()
			// The unaligned tail (at most one page) and the mincore map may bring a page in.
			if n, pages, err := Cached(path); err != nil || n > 2 {
				t.Fatalf("size %d via %s: %d of %d pages cached after a direct read", size, via, n, pages)
			}
		}
	}
}

// TestPartlyCachedFile: the cached part is copied from the cache, the rest read directly, and
// the bytes are the file's; a start offset is honoured.
func TestPartlyCachedFile(t *testing.T) {
	dir := waltest.DiskTempDir(t)
	path, data := coldFile(t, dir, 8<<20)
	f := open(t, path)
	// Bring 3.5 MiB in the middle into the cache.
	if _, err := f.ReadAt(make([]byte, 3<<19), 2<<20); err != nil {
		t.Fatal(err)
	}
	start := int64(1 << 20)
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	r := NewReader(f)
	defer r.Close()
	if !r.direct {
		t.Fatal("a partly cached file was not read directly")
	}
	var got bytes.Buffer
	if _, err := r.WriteTo(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data[start:]) {
		t.Fatalf("read %d bytes that differ from the file's %d after offset %d", got.Len(), len(data)-int(start), start)
	}
}

// TestCachedOrSmallFileReadThroughCache: a file the cache holds whole, one under minSize and an
// unaligned start are read through the cache, and exactly.
func TestCachedOrSmallFileReadThroughCache(t *testing.T) {
	dir := waltest.DiskTempDir(t)
	cases := []struct {
		name  string
		size  int
		start int64
		warm  bool
	}{
		{"cached", 4 << 20, 0, true},
		{"small", minSize - 1, 0, false},
		{"unaligned start", 4 << 20, 100, false},
	}
	for _, c := range cases {
		path, data := coldFile(t, dir, c.size)
		if c.warm {
			if _, err := os.ReadFile(path); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Seek(c.start, io.SeekStart)
		r := NewReader(f)
		if r.direct {
			t.Fatalf("%s: read directly", c.name)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data[c.start:]) {
			t.Fatalf("%s: read %d bytes (err %v) that differ from the file's", c.name, len(got), err)
		}
		r.Close()
		f.Close()
	}
}

// TestCloseMidway: a consumer that stops early stops the read-ahead; Close returns and can be
// called again.
func TestCloseMidway(t *testing.T) {
	dir := waltest.DiskTempDir(t)
	path, data := coldFile(t, dir, 8<<20)
	f := open(t, path)
	r := NewReader(f)
	if !r.direct {
		t.Fatal("not read directly")
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[:1000]) {
		t.Fatalf("first bytes: %v", err)
	}
	r.Close()
	r.Close()
}

// BenchmarkReadCold reads a cold 16 MiB segment through the cache and with a Reader; cpu-ms/op
// is the process's CPU (user and system) per file.
func BenchmarkReadCold(b *testing.B) {
	dir := waltest.DiskTempDir(b)
	path, _ := coldFile(b, dir, 16<<20)
	for _, mode := range []string{"cache", "uncached"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(16 << 20)
			var cpu int64
			for b.Loop() {
				b.StopTimer()
				waltest.Evict(b, path)
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				c0 := cpuNanos()
				b.StartTimer()
				var r io.Reader = f
				if mode == "uncached" {
					u := NewReader(f)
					defer u.Close()
					r = u
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += cpuNanos() - c0
				f.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
