// Package restore is PostgreSQL's restore_command: fetch one WAL file, verified before PostgreSQL
// sees a byte, from a prefetch spool or from storage, and say clearly whether it is absent or the
// archive could not be read.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/restore/spool"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// ErrNotFound means the archive answered that the file is not there (or it lies on a timeline
// beyond its switch point). Any other error means the archive could not be read or the object
// is damaged, and recovery must not treat it as the end of the archive.
var ErrNotFound = errors.New("not in the archive")

// ErrOldTimeline comes with ErrNotFound for a segment of an ancestor timeline that starts after
// the point where the recovery target's history says that timeline ended: WAL an old primary
// archived after a failover. To PostgreSQL it is not there; to an operator it is worth a warning.
var ErrOldTimeline = errors.New("segment of an old timeline after its switch point")

// Config sets up a Fetcher.
type Config struct {
	Store storage.Store
	// SpoolDir holds prefetched objects, outside pg_wal so pg_rewind and base backups of pg_wal
	// never see them.
	SpoolDir string
	// Prefetch is how many segments after a fetched one are downloaded ahead (0 disables).
	Prefetch int
	// Standby is set when the server runs as a standby (standby.signal). Only then is a recent
	// miss trusted to answer a probe without asking storage: in archive or targeted recovery a
	// stale "not in the archive" would end recovery early, with WAL missing.
	Standby bool
	// MissTTL is how long a recorded miss stays trusted (DefaultMissTTL is the usual choice);
	// 0 disables the negative cache.
	MissTTL time.Duration
	// Now is the clock that dates misses; nil means time.Now.
	Now func() time.Time
	// StartPrefetch launches the background prefetcher (Follow, in a process of its own) for
	// names, consecutive segments of segSize bytes; nil disables prefetching.
	StartPrefetch func(names []string, segSize uint32) error
	// Identities open encrypted objects (an age key file may hold old and new keys).
	Identities []age.Identity
	Log        *slog.Logger
}

// DefaultMissTTL is how long a standby trusts a miss. A standby waiting for WAL calls
// restore_command every wal_retrieve_retry_interval (5 s by default) for the next segment and the
// next timeline's .history; a TTL no longer than that cycle would spare no request at all. 30 s
// cuts those requests six-fold. The price: a standby fed only from the archive (no streaming)
// sees a newly archived segment or timeline history up to 30 s later than it otherwise would —
// replication lag, never lost or wrong WAL. One sharper edge: PostgreSQL picks a promoted
// standby's new timeline by probing .history files while standby.signal still exists, so a
// standby promoted within the TTL of a miss may not see a timeline another node created in those
// seconds. Two promotions that close together are a split brain the archive cannot settle
// anyway; wal-push then refuses the second history (it never overwrites one), loudly.
const DefaultMissTTL = 30 * time.Second

// Fetcher serves restore_command calls.
type Fetcher struct {
	cfg Config
}

// New returns a Fetcher.
func New(cfg Config) (*Fetcher, error) {
	if cfg.Store == nil || cfg.SpoolDir == "" {
		return nil, errors.New("restore: store and spool directory are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MissTTL < 0 {
		return nil, fmt.Errorf("restore: negative miss TTL %s", cfg.MissTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Fetcher{cfg: cfg}, nil
}

// CheckName refuses a %f that is not a file name PostgreSQL asks for.
func CheckName(name string) error {
	switch walfile.Classify(name) {
	case walfile.Segment, walfile.History, walfile.Partial, walfile.Backup:
		return nil
	}
	return fmt.Errorf("%q is not a WAL segment, .history, .partial or .backup file name", name)
}

// maxDest bounds %p: PostgreSQL's is "pg_wal/RECOVERYXLOG" or similar, far below PATH_MAX.
const maxDest = 4096

// CheckDest refuses a %p that could not come from PostgreSQL, which always passes it relative to
// the data directory (restore_command runs there): an absolute or escaping path would let a
// caller other than PostgreSQL have WAL written over any file.
func CheckDest(dest string) error {
	switch {
	case dest == "" || strings.HasSuffix(dest, "/"):
		return fmt.Errorf("invalid destination path %q", dest)
	case len(dest) > maxDest:
		return fmt.Errorf("destination path of %d bytes is too long (at most %d)", len(dest), maxDest)
	case strings.ContainsRune(dest, 0):
		return fmt.Errorf("destination path %q contains a NUL byte", dest)
	case filepath.IsAbs(dest):
		return fmt.Errorf("destination path %q is absolute; PostgreSQL passes %%p relative to the data directory", dest)
	}
	for _, el := range strings.Split(filepath.ToSlash(dest), "/") {
		if el == ".." {
			return fmt.Errorf("destination path %q contains '..'", dest)
		}
	}
	return nil
}

// Fetch writes the verified content of name to dest. It writes a temporary file beside dest and
// renames it only after the frame's length and checksum verified, so PostgreSQL never sees a
// partial or corrupt file. (PostgreSQL re-fetches after a crash, so dest is not fsynced.)
func (f *Fetcher) Fetch(ctx context.Context, name, dest string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if err := CheckDest(dest); err != nil {
		return err
	}
	walDir := filepath.Dir(dest)
	hist := targetHistory(walDir, f.cfg.Log)
	kind := walfile.Classify(name)
	if kind == walfile.Segment {
		if served, err := f.fromSpool(name, dest, hist); served || err != nil {
			return err
		}
	}
	if f.trustMisses(kind) && f.recentMiss(name) {
		f.cfg.Log.Debug("not in the archive (recent miss)", "file", name)
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	key, err := layout.WALKey(name)
	if err != nil {
		return err
	}
	start := time.Now()
	rc, info, err := f.cfg.Store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		f.cfg.Log.Debug("not in the archive", "file", name)
		if f.trustMisses(kind) {
			f.recordMiss(name)
		}
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	f.forgetMiss(name)
	// The prefetcher is started before this call decodes its own segment, with the segment size
	// the object's metadata declares (a whole segment's length), so its set-up and first
	// download overlap this one: replay often asks for the next segment moments after the first.
	// A wrong size only names segments that are not asked for; the header decides below.
	early := uint32(0)
	if s, ok := object.SummaryFromMetadata(info.Metadata); ok && kind == walfile.Segment && s.RawSize == int64(uint32(s.RawSize)) && walfile.ValidSegSize(uint32(s.RawSize)) {
		early = uint32(s.RawSize)
		f.prefetchAfter(name, early)
	}
	hdr, err := writeVerified(rc, name, dest, info.Metadata, f.cfg.Identities)
	rc.Close()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	if err := checkTimeline(name, hdr, hist); err != nil {
		os.Remove(dest)
		return err
	}
	f.cfg.Log.Debug("restored", "file", name, "ms", time.Since(start).Milliseconds())
	if kind == walfile.Segment && hdr != nil && hdr.SegSize != early {
		f.prefetchAfter(name, hdr.SegSize)
	}
	return nil
}

// writeVerified decodes a frame holding name into a temp file beside dest and renames it into
// place only when the frame verified, agrees with the object's metadata and, for segments and
// partials, opens with a WAL page header that fits name (walfile.CheckHeader); it returns that
// header. A header that does not fit is damage like a bad checksum: object.ErrCorrupt.
func writeVerified(r io.Reader, name, dest string, meta map[string]string, ids []age.Identity) (*walfile.PageHeader, error) {
	// The header (and, for encrypted objects, the key) is checked before anything is written.
	fr, err := object.NewReaderWith(r, ids)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".walship-*")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*walfile.PageHeader, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	preallocate(tmp, meta)
	sum, err := fr.CopyTo(tmp)
	if err != nil {
		return fail(err)
	}
	if want, ok := object.SummaryFromMetadata(meta); ok && want != sum {
		return fail(fmt.Errorf("%w: content xxh3 %s, object metadata says %s", object.ErrCorrupt, sum.Hex(), want.Hex()))
	}
	var hdr *walfile.PageHeader
	if k := walfile.Classify(name); k == walfile.Segment || k == walfile.Partial {
		h, err := spool.ReadHeader(tmp, name, sum.RawSize)
		if err != nil {
			return fail(fmt.Errorf("%w: %v", object.ErrCorrupt, err))
		}
		hdr = &h
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	return hdr, nil
}

// history maps a timeline to the LSN where the recovery target's history says it ended.
type history map[uint32]walfile.LSN

// targetHistory reads the newest timeline history file PostgreSQL has restored into pg_wal: the
// one of its recovery target timeline, listing where each ancestor timeline ended.
func targetHistory(walDir string, log *slog.Logger) history {
	matches, _ := filepath.Glob(filepath.Join(walDir, "*.history"))
	var names []string
	for _, m := range matches {
		if walfile.Classify(filepath.Base(m)) == walfile.History {
			names = append(names, filepath.Base(m))
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	b, err := os.ReadFile(filepath.Join(walDir, names[len(names)-1]))
	if err != nil {
		return nil
	}
	entries, err := walfile.ParseHistory(b)
	if err != nil {
		log.Warn("unreadable timeline history in pg_wal; timeline checks off", "file", names[len(names)-1], "err", err.Error())
		return nil
	}
	h := history{}
	for _, e := range entries {
		h[e.Timeline] = e.SwitchLSN
	}
	return h
}

// checkTimeline refuses a segment of an ancestor timeline that starts at or after the point where
// the target's history says that timeline ended: such a segment was written by an old primary
// after the failover, and replaying it would diverge (CloudNativePG #4990).
func checkTimeline(name string, hdr *walfile.PageHeader, h history) error {
	if hdr == nil || len(h) == 0 || walfile.Classify(name) != walfile.Segment {
		return nil
	}
	tli, segno, err := walfile.ParseSegment(name, hdr.SegSize)
	if err != nil {
		return nil
	}
	end, ok := h[tli]
	if !ok {
		return nil
	}
	if start := walfile.LSN(segno * uint64(hdr.SegSize)); start >= end {
		return fmt.Errorf("%s: %w (%w): timeline %d ended at %s in the target's history; this segment starts after it",
			name, ErrNotFound, ErrOldTimeline, tli, end)
	}
	return nil
}
