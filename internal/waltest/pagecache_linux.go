package waltest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// DiskTempDir is a temporary directory on a filesystem whose page cache can be dropped and that
// takes O_DIRECT: the test's temp dir, unless that is a tmpfs, then one in the current directory.
func DiskTempDir(t testing.TB) string {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Type != unix.TMPFS_MAGIC {
		return dir
	}
	dir, err := os.MkdirTemp(".", ".walship-test-")
	if err == nil {
		dir, err = filepath.Abs(dir) // tests change directory (WALDirIn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Evict syncs path and drops it from the page cache, as the kernel does with a file written
// long ago.
func Evict(t testing.TB, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}
