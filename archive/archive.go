// Package archive is PostgreSQL's archive_command: push one WAL file, and the ready files after
// it, into storage idempotently, never overwriting a different object and never reporting success
// before the object is durable.
package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/internal/uncached"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// Errors a caller may want to tell apart.
var (
	// ErrConflict: the archive already holds different content under the same name.
	ErrConflict = errors.New("archive holds different content under this name")
	// ErrForeignCluster: the WAL belongs to another database system than the archive.
	ErrForeignCluster = errors.New("WAL from another database system")
	// ErrBadFile: the file is not something PostgreSQL archives, or its content contradicts its name.
	ErrBadFile = errors.New("not an archivable WAL file")
)

// MetaSystemID is the object metadata key holding the database system identifier.
const MetaSystemID = "sysid"

// memLimit is the largest raw file encoded in memory; larger ones go through a temp file so that
// pushing a 1 GiB segment does not hold it in RAM.
const memLimit = 64 << 20

// Config sets up a Pusher.
type Config struct {
	Store    storage.Store
	StoreURL string // identifies the store in markers, so a marker for another archive never counts
	Codec    object.Options
	// SpoolDir keeps the fsynced markers of files pushed ahead of PostgreSQL's request and the
	// cached archive identity. Required.
	SpoolDir string
	// Parallel is how many files one call pushes at once: the requested one plus up to
	// Parallel-1 of the oldest other files PostgreSQL has marked ready.
	Parallel int
	// AllowStandby permits archiving while standby.signal exists (archive_mode=always). A
	// standby's copy of a segment can legitimately differ from the primary's, so it is refused
	// by default.
	AllowStandby bool
	// StartAhead, when set, starts a background pusher (PushAhead, in a process of its own) for
	// the ready files behind the requested one; a call then pushes only its own file and finds
	// the others answered by the pusher's markers. Nil pushes up to Parallel-1 of them within the
	// call instead.
	StartAhead func() error
	Log        *slog.Logger
}

// Pusher pushes WAL files.
type Pusher struct {
	cfg Config
	mu  sync.Mutex
	id  *Identity // archive identity once known
}

// New checks cfg and returns a Pusher.
func New(cfg Config) (*Pusher, error) {
	if cfg.Store == nil || cfg.SpoolDir == "" {
		return nil, errors.New("archive: store and spool directory are required")
	}
	if cfg.Parallel < 1 {
		cfg.Parallel = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Pusher{cfg: cfg}, nil
}

// Identity is the archive's owner: the first push records it, every later push must match.
type Identity struct {
	SystemID uint64 `json:"system_id"`
	SegSize  uint32 `json:"wal_segment_size"`
	PGMajor  int    `json:"pg_major"`
	Format   int    `json:"format"`
}

// Push archives the file at path (PostgreSQL's %p, relative to the data directory, the working
// directory) and gets the other ready files pushed ahead: by a background pusher when
// StartAhead is set (see PushAhead), else up to Parallel-1 of them alongside it. Only the
// requested file decides the result; the others are recorded with markers so PostgreSQL's later
// calls for them are cheap.
func (p *Pusher) Push(ctx context.Context, path string) error {
	name := filepath.Base(path)
	if err := checkPath(path); err != nil {
		return err
	}
	if walfile.Classify(name) == walfile.Invalid {
		return fmt.Errorf("%w: %q is not a WAL segment, .history, .partial or .backup file", ErrBadFile, name)
	}
	walDir := filepath.Dir(path)
	if err := p.checkNotStandby(walDir); err != nil {
		return err
	}
	// Markers of files PostgreSQL has since recorded as archived are dropped on every call, with
	// any --parallel: even alone, each push leaves a marker for its own file.
	p.pruneMarkers(walDir, name)
	if p.cfg.StartAhead != nil && p.cfg.Parallel > 1 {
		// The lock first: in a backlog the pusher is usually running, and the listing (a read of
		// archive_status and a stat per ready file) is then not needed.
		if !p.aheadRunning() && len(p.readyNeighbours(walDir, name, 1)) > 0 {
			if err := p.cfg.StartAhead(); err != nil {
				p.cfg.Log.Warn("could not start the background pusher; pushing this file alone", "err", err.Error())
			}
		}
		return p.pushClaimed(ctx, path)
	}
	extra := p.readyNeighbours(walDir, name, p.cfg.Parallel-1)
	var wg sync.WaitGroup
	for _, n := range extra {
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			if err := p.pushOne(ctx, filepath.Join(walDir, n)); err != nil {
				p.cfg.Log.Warn("push ahead failed; PostgreSQL will ask again", "file", n, "err", err.Error())
			}
		}(n)
	}
	err := p.pushOne(ctx, path)
	wg.Wait()
	return err
}

// checkNotStandby refuses to archive from a standby unless AllowStandby.
func (p *Pusher) checkNotStandby(walDir string) error {
	if p.cfg.AllowStandby {
		return nil
	}
	if _, err := os.Stat(filepath.Join(walDir, "..", "standby.signal")); err == nil {
		return errors.New("refusing to archive from a standby (standby.signal exists; archive_mode=always): " +
			"a standby's copy of a segment can differ from the primary's; use --allow-standby if this standby must archive")
	}
	return nil
}

// maxPath bounds %p: PostgreSQL's is "pg_wal/" and a file name, far below PATH_MAX.
const maxPath = 4096

// checkPath refuses paths that could not come from PostgreSQL's %p, which is always relative to
// the data directory (archive_command runs there): an absolute or escaping path means walship
// was called by something else, and reading it would archive whatever it names.
func checkPath(path string) error {
	switch {
	case path == "":
		return fmt.Errorf("%w: empty path", ErrBadFile)
	case len(path) > maxPath:
		return fmt.Errorf("%w: path of %d bytes is too long (at most %d)", ErrBadFile, len(path), maxPath)
	case strings.ContainsRune(path, 0):
		return fmt.Errorf("%w: path %q contains a NUL byte", ErrBadFile, path)
	case filepath.IsAbs(path):
		return fmt.Errorf("%w: path %q is absolute; PostgreSQL passes %%p relative to the data directory", ErrBadFile, path)
	}
	for _, el := range strings.Split(filepath.ToSlash(path), "/") {
		if el == ".." {
			return fmt.Errorf("%w: path %q contains '..'", ErrBadFile, path)
		}
	}
	return nil
}

// readyNeighbours returns up to max (all, if negative) files PostgreSQL has marked ready, other than name,
// history files first and then oldest first (the order PostgreSQL itself archives in). Files an
// earlier call already pushed ahead (a marker exists) are passed over unread: re-hashing them on
// every call cost two extra reads of a segment per call in a backlog, and PostgreSQL's own call
// for each still confirms its marker.
func (p *Pusher) readyNeighbours(walDir, name string, max int) []string {
	if max == 0 {
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(walDir, "archive_status"))
	if err != nil {
		return nil
	}
	var ready []string
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || n == name || walfile.Classify(n) == walfile.Invalid {
			continue
		}
		if _, err := os.Stat(p.markerPath(n)); err == nil {
			continue
		}
		ready = append(ready, n)
	}
	sort.Slice(ready, func(i, j int) bool {
		hi, hj := strings.HasSuffix(ready[i], ".history"), strings.HasSuffix(ready[j], ".history")
		if hi != hj {
			return hi
		}
		return ready[i] < ready[j]
	})
	if max > 0 && len(ready) > max {
		ready = ready[:max]
	}
	return ready
}

// pushOne archives one file: a marker hit costs no request; otherwise one create, and a stat only
// when the name is taken.
func (p *Pusher) pushOne(ctx context.Context, path string) error {
	name := filepath.Base(path)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	before := statOf(f) // the marker vouches for the file only if nothing wrote to it meanwhile
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrBadFile, path)
	}
	hdr, err := p.checkContent(ctx, f, name, fi.Size())
	if err != nil {
		return err
	}
	if p.markerMatches(f, name, fi.Size()) {
		p.cfg.Log.Debug("already archived (marker)", "file", name)
		return nil
	}
	body, sum, cleanup, err := p.encode(f, fi.Size())
	if err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	defer cleanup()
	key, err := layout.WALKey(name)
	if err != nil {
		return err
	}
	meta := sum.Metadata()
	if hdr != nil {
		meta[MetaSystemID] = fmt.Sprint(hdr.SystemID)
	}
	start := time.Now()
	err = storage.Create(ctx, p.cfg.Store, key, body, meta)
	if errors.Is(err, storage.ErrExist) {
		err = p.compareExisting(ctx, key, name, sum)
		if err == nil {
			p.cfg.Log.Info("already archived with identical content", "file", name, "xxh3", sum.Hex())
		}
	} else if err == nil {
		p.cfg.Log.Debug("archived", "file", name, "raw_bytes", sum.RawSize, "ms", time.Since(start).Milliseconds())
	}
	if err != nil {
		return err
	}
	if err := p.writeMarker(f, name, sum, before); err != nil {
		p.cfg.Log.Warn("could not record marker; the next call re-checks storage", "file", name, "err", err.Error())
	}
	return nil
}

// checkContent reads the WAL page header of segments and partials and checks it against the name
// and the archive's identity. History and backup files carry no header: their system is the one
// in the data directory's pg_control (see checkSystem).
func (p *Pusher) checkContent(ctx context.Context, f *os.File, name string, size int64) (*walfile.PageHeader, error) {
	kind := walfile.Classify(name)
	if kind == walfile.History || kind == walfile.Backup {
		return nil, p.checkSystem(ctx, filepath.Dir(f.Name()), name)
	}
	if kind != walfile.Segment && kind != walfile.Partial {
		return nil, nil
	}
	buf := make([]byte, 40)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("%w: %s: reading the WAL page header: %v", ErrBadFile, name, err)
	}
	hdr, err := walfile.ParseHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadFile, name, err)
	}
	if err := walfile.CheckHeader(name, hdr, size); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFile, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := p.checkIdentity(ctx, hdr); err != nil {
		return nil, err
	}
	return &hdr, nil
}

// compressing bounds the files compressed at once to the CPUs Go may use. Compression is all
// CPU, and libzstd runs on threads of its own outside Go's scheduler: four at once on two CPUs
// cost 159 ms of CPU per segment against 105 alone, the contexts evicting each other from the
// caches. Uploads, which mostly wait, still overlap freely.
var compressing = make(chan struct{}, runtime.GOMAXPROCS(0))

// encode compresses the file into memory, or into a temp file in the spool when it is large. The
// file is read once, from its start, without filling the page cache with what it does not hold
// already (in a backlog, segments written long ago).
func (p *Pusher) encode(f *os.File, size int64) (io.ReadSeeker, object.Summary, func(), error) {
	compressing <- struct{}{}
	defer func() { <-compressing }()
	src := uncached.NewReader(f)
	defer src.Close()
	if size <= memLimit {
		// Sized for WAL's usual 5-10x ratio: a buffer grown to half the segment "just in case"
		// is zeroed whole when its memory is reused, 8 MiB of RSS for each parallel push.
		var buf bytes.Buffer
		buf.Grow(int(size/8) + 4096)
		sum, err := object.Encode(&buf, src, p.cfg.Codec)
		return bytes.NewReader(buf.Bytes()), sum, func() {}, err
	}
	if err := os.MkdirAll(p.cfg.SpoolDir, 0o700); err != nil {
		return nil, object.Summary{}, nil, err
	}
	tmp, err := os.CreateTemp(p.cfg.SpoolDir, ".push-*")
	if err != nil {
		return nil, object.Summary{}, nil, err
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	sum, err := object.Encode(tmp, src, p.cfg.Codec)
	if err != nil {
		cleanup()
		return nil, object.Summary{}, nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, object.Summary{}, nil, err
	}
	return tmp, sum, cleanup, nil
}

// compareExisting decides a name conflict: identical content is success (a repeated push after a
// crash); different content is an error naming both checksums, and nothing is overwritten.
func (p *Pusher) compareExisting(ctx context.Context, key, name string, sum object.Summary) error {
	info, err := p.cfg.Store.Stat(ctx, key)
	if err != nil {
		return fmt.Errorf("%s exists in the archive but could not be read back: %w", name, err)
	}
	stored, ok := object.SummaryFromMetadata(info.Metadata)
	if !ok {
		// No metadata (written by another tool or a backend that lost it): read the object.
		rc, _, err := p.cfg.Store.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("%s exists in the archive but could not be read back: %w", name, err)
		}
		stored, err = object.Decode(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s exists in the archive but is unreadable (%w); not overwriting it", name, err)
		}
	}
	if stored != sum {
		return fmt.Errorf("%w: %s: archived xxh3 %s (%d bytes), local xxh3 %s (%d bytes); the archived copy is kept",
			ErrConflict, name, stored.Hex(), stored.RawSize, sum.Hex(), sum.RawSize)
	}
	return nil
}

// checkIdentity compares the header with the archive's identity, reading it from the spool cache,
// else from storage, creating it on the very first push.
func (p *Pusher) checkIdentity(ctx context.Context, hdr walfile.PageHeader) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.id == nil {
		p.id = p.cachedIdentity()
	}
	if p.id == nil {
		id, err := p.fetchOrCreateIdentity(ctx, hdr)
		if err != nil {
			return err
		}
		p.id = id
		if err := writeFileDurable(filepath.Join(p.cfg.SpoolDir, "identity"), p.identityCache(id)); err != nil {
			p.cfg.Log.Warn("could not cache the archive identity", "err", err.Error())
		}
	}
	if err := p.sameSystem(hdr.SystemID); err != nil {
		return err
	}
	if p.id.SegSize != hdr.SegSize {
		return fmt.Errorf("%w: WAL segment size %d differs from the archive's %d", ErrForeignCluster, hdr.SegSize, p.id.SegSize)
	}
	return nil
}

// sameSystem compares a system identifier with the known archive identity (p.mu held).
func (p *Pusher) sameSystem(sysid uint64) error {
	if p.id.SystemID != sysid {
		return fmt.Errorf("%w: this WAL is from database system %d, but %s belongs to system %d; point each cluster at its own prefix",
			ErrForeignCluster, sysid, p.cfg.StoreURL, p.id.SystemID)
	}
	return nil
}

type identityCache struct {
	Store string   `json:"store"`
	ID    Identity `json:"identity"`
}

func (p *Pusher) identityCache(id *Identity) []byte {
	b, _ := json.Marshal(identityCache{Store: p.cfg.StoreURL, ID: *id})
	return b
}

func (p *Pusher) cachedIdentity() *Identity {
	b, err := os.ReadFile(filepath.Join(p.cfg.SpoolDir, "identity"))
	if err != nil {
		return nil
	}
	var c identityCache
	if json.Unmarshal(b, &c) != nil || c.Store != p.cfg.StoreURL {
		return nil
	}
	return &c.ID
}

func (p *Pusher) fetchOrCreateIdentity(ctx context.Context, hdr walfile.PageHeader) (*Identity, error) {
	want := Identity{SystemID: hdr.SystemID, SegSize: hdr.SegSize, PGMajor: walfile.KnownMagic[hdr.Magic], Format: 1}
	body, _ := json.Marshal(want)
	err := storage.Create(ctx, p.cfg.Store, layout.ClusterKey, bytes.NewReader(body), nil)
	if err == nil {
		p.cfg.Log.Info("new archive: recorded the database system", "system_id", hdr.SystemID, "store", p.cfg.StoreURL)
		return &want, nil
	}
	if !errors.Is(err, storage.ErrExist) {
		return nil, fmt.Errorf("record archive identity: %w", err)
	}
	return ReadIdentity(ctx, p.cfg.Store)
}

// ReadIdentity returns the archive's recorded identity. A record without a system identifier or
// with an impossible segment size is reported as damaged: accepting it would make every later
// push fail with a misleading "segment size differs" instead of naming the damaged record.
func ReadIdentity(ctx context.Context, st storage.Store) (*Identity, error) {
	rc, _, err := st.Get(ctx, layout.ClusterKey)
	if err != nil {
		return nil, fmt.Errorf("read archive identity: %w", err)
	}
	defer rc.Close()
	var id Identity
	if err := json.NewDecoder(io.LimitReader(rc, 1<<16)).Decode(&id); err != nil {
		return nil, fmt.Errorf("archive identity %s is damaged: %v", layout.ClusterKey, err)
	}
	if id.SystemID == 0 || !walfile.ValidSegSize(id.SegSize) {
		return nil, fmt.Errorf("archive identity %s is damaged: system %d, segment size %d", layout.ClusterKey, id.SystemID, id.SegSize)
	}
	return &id, nil
}
