package archive_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/walship/walship/internal/uncached"
	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/storage/mem"
)

// TestColdSegmentPushedWithoutCaching: a segment the page cache no longer holds (a backlog
// written long ago) is archived exactly, and reading it leaves the cache as empty as it was
// (uncached reads it from disk directly; see internal/uncached).
func TestColdSegmentPushedWithoutCaching(t *testing.T) {
	wal := waltest.WALDirIn(t, waltest.DiskTempDir(t))
	st := mem.New()
	p := newPusher(t, st, filepath.Join(t.TempDir(), "spool"), 1)
	path := waltest.WriteSegment(t, wal, 1, 7, 16<<20, waltest.SystemID)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	waltest.Evict(t, path)
	if err := p.Push(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	// The header check reads the first page through the cache, with the kernel's readahead.
	if n, pages, err := uncached.Cached(path); err != nil || n > 64 {
		t.Fatalf("%d of %d pages of the segment cached after its push (err %v): it was read through the cache", n, pages, err)
	}
	if got := fetchRaw(t, st, filepath.Base(path)); !bytes.Equal(got, want) {
		t.Fatal("archived content differs from the cold segment")
	}
}
