package restore

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/walship/walship/object"
)

const (
	// fallocKeepSize is FALLOC_FL_KEEP_SIZE: the blocks are reserved, the size is left to the writes.
	fallocKeepSize = 0x1
	// maxPrealloc is the largest WAL segment PostgreSQL makes; metadata claiming more (damaged,
	// or not a segment) reserves nothing.
	maxPrealloc = 1 << 30
)

// preallocate reserves the blocks of the raw content the object's metadata declares in f before
// it is written, so the filesystem allocates them in one go rather than one page at a time as
// the writes arrive: on ext4, writing a 16 MiB segment into the page cache then costs about a
// third less CPU. The size is left to the writes (so a short or
// failed decode leaves nothing that looks complete), and a filesystem without fallocate is
// simply written as before.
func preallocate(f *os.File, meta map[string]string) {
	s, ok := object.SummaryFromMetadata(meta)
	if !ok || s.RawSize <= 0 || s.RawSize > maxPrealloc {
		return
	}
	syscall.Fallocate(int(f.Fd()), fallocKeepSize, 0, s.RawSize)
}

// startWriteback starts writing f's dirty pages to disk without waiting for them. PostgreSQL
// fsyncs every segment it restores (durable_rename, in the startup process, while replay
// waits): a 16 MiB segment still dirty in the page cache cost that fsync about 10 ms here, one
// already written 0.6 ms. The prefetcher works several segments ahead of replay, so a spooled
// segment's writeback has long finished when PostgreSQL syncs it. Errors are ignored: the
// writeback is an optimisation, and PostgreSQL's own fsync decides durability.
func startWriteback(f *os.File) {
	unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
