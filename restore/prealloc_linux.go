package restore

import (
	"os"
	"syscall"

	"github.com/walship/walship/object"
)

const (
	// fallocKeepSize is FALLOC_FL_KEEP_SIZE: the blocks are reserved, the size is left to the writes.
	fallocKeepSize = 0x1
	// maxPrealloc is the largest WAL segment PostgreSQL makes; metadata claiming more (damaged,
	// or not a segment) reserves nothing.
	maxPrealloc = 1 << 30
)

// preallocate reserves the blocks of the raw content the object's metadata declares (plus
// extra bytes) in f before it is written, so the filesystem allocates them in one go rather
// than one page at a time as the writes arrive: on ext4, writing a 16 MiB segment into the
// page cache then costs about a third less CPU. The size is left to the writes (so a short or
// failed decode leaves nothing that looks complete), and a filesystem without fallocate is
// simply written as before.
func preallocate(f *os.File, meta map[string]string, extra int64) {
	s, ok := object.SummaryFromMetadata(meta)
	if !ok || s.RawSize <= 0 || s.RawSize > maxPrealloc {
		return
	}
	syscall.Fallocate(int(f.Fd()), fallocKeepSize, 0, s.RawSize+extra)
}
