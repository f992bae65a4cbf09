package archive_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/file"
	"github.com/walship/walship/storage/mem"
	"github.com/walship/walship/walfile"
)

const seg = 1 << 20 // 1 MiB segments keep the tests fast; the code reads the size from the header

// countingStore counts requests by operation.
type countingStore struct {
	storage.Store
	ops  map[string]*atomic.Int32
	gets []string
}

func newCounting(s storage.Store) *countingStore {
	c := &countingStore{Store: s, ops: map[string]*atomic.Int32{}}
	for _, op := range []string{"put", "create", "get", "stat", "list", "delete"} {
		c.ops[op] = &atomic.Int32{}
	}
	return c
}

func (c *countingStore) Unwrap() storage.Store { return c.Store }
func (c *countingStore) Create(ctx context.Context, k string, b io.ReadSeeker, m map[string]string) error {
	c.ops["create"].Add(1)
	return storage.Create(ctx, c.Store, k, b, m)
}
func (c *countingStore) Get(ctx context.Context, k string) (io.ReadCloser, storage.Info, error) {
	c.ops["get"].Add(1)
	c.gets = append(c.gets, k)
	return c.Store.Get(ctx, k)
}
func (c *countingStore) Stat(ctx context.Context, k string) (storage.Info, error) {
	c.ops["stat"].Add(1)
	return c.Store.Stat(ctx, k)
}
func (c *countingStore) List(ctx context.Context, p string, fn func(storage.Info) error) error {
	c.ops["list"].Add(1)
	return c.Store.List(ctx, p, fn)
}
func (c *countingStore) total() int32 {
	n := int32(0)
	for _, v := range c.ops {
		n += v.Load()
	}
	return n
}

func newPusher(t *testing.T, st storage.Store, spool string, parallel int) *archive.Pusher {
	p, err := archive.New(archive.Config{Store: st, StoreURL: st.String(), Codec: object.DefaultOptions,
		SpoolDir: spool, Parallel: parallel})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fetchRaw(t *testing.T, st storage.Store, name string) []byte {
	t.Helper()
	key, _ := layout.WALKey(name)
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := object.Decode(&out, rc); err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return out.Bytes()
}

func TestPushRoundTripAndRequestCount(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := newCounting(mem.New())
	p := newPusher(t, st, filepath.Join(t.TempDir(), "spool"), 1)
	path := waltest.WriteSegment(t, wal, 1, 3, seg, 42)
	if err := p.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(path)
	if got := fetchRaw(t, st, filepath.Base(path)); !bytes.Equal(got, want) {
		t.Fatal("archived content differs")
	}
	// The first push also records the archive identity (one more create, one more for the WAL).
	st2 := newCounting(st.Store)
	p2 := newPusher(t, st2, filepath.Join(filepath.Dir(filepath.Dir(path)), "walship-other"), 1)
	_ = p2
	before := st.total()
	path4 := waltest.WriteSegment(t, wal, 1, 4, seg, 42)
	if err := p.Push(ctx, path4); err != nil {
		t.Fatal(err)
	}
	if n := st.total() - before; n != 1 || st.ops["create"].Load() != 3 {
		t.Errorf("second push made %d requests (%d creates in all), want exactly 1 create", n, st.ops["create"].Load())
	}
}

func TestPushIdempotentAndConflict(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := newCounting(mem.New())
	path := waltest.WriteSegment(t, wal, 1, 5, seg, 42)
	if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	// Same content again, from a process without a marker: success after a stat, no overwrite.
	if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, path); err != nil {
		t.Fatalf("identical re-push: %v", err)
	}
	if st.ops["stat"].Load() != 1 {
		t.Errorf("identical re-push: %d stats, want 1 (compare metadata, no download)", st.ops["stat"].Load())
	}
	for _, k := range st.gets {
		if k != layout.ClusterKey {
			t.Errorf("identical re-push downloaded %s", k)
		}
	}
	orig, _ := os.ReadFile(path)
	// Different content under the same name: refused, and the archived copy is kept.
	changed := bytes.Clone(orig)
	changed[5000] ^= 0xff
	os.WriteFile(path, changed, 0o600)
	err := newPusher(t, st, t.TempDir(), 1).Push(ctx, path)
	if !errors.Is(err, archive.ErrConflict) {
		t.Fatalf("different content: got %v, want ErrConflict", err)
	}
	for _, s := range []string{"archived xxh3", "local xxh3"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("conflict error %q does not name the %s", err, s)
		}
	}
	if got := fetchRaw(t, st, filepath.Base(path)); !bytes.Equal(got, orig) {
		t.Fatal("conflicting push changed the archived copy")
	}
}

func TestHistoryNeverOverwritten(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := mem.New()
	h := filepath.Join(wal, "00000002.history")
	os.WriteFile(h, []byte("1\t0/3000060\tno recovery target specified\n"), 0o600)
	if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, h); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(h, []byte("1\t0/4000000\tother\n"), 0o600)
	if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, h); !errors.Is(err, archive.ErrConflict) {
		t.Fatalf("different history: got %v, want ErrConflict", err)
	}
	if got := fetchRaw(t, st, "00000002.history"); !strings.Contains(string(got), "0/3000060") {
		t.Fatalf("history overwritten: %q", got)
	}
}

func TestForeignCluster(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	// Each WALDir changes into its own data directory, as each cluster's archive_command runs in its own.
	if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, waltest.WriteSegment(t, waltest.WALDir(t), 1, 1, seg, 111)); err != nil {
		t.Fatal(err)
	}
	err := newPusher(t, st, t.TempDir(), 1).Push(ctx, waltest.WriteSegment(t, waltest.WALDir(t), 1, 9, seg, 222))
	if !errors.Is(err, archive.ErrForeignCluster) || !strings.Contains(err.Error(), "222") || !strings.Contains(err.Error(), "111") {
		t.Fatalf("push from another system: got %v, want ErrForeignCluster naming both systems", err)
	}
	key, _ := layout.WALKey(walfile.SegmentName(1, 9, seg))
	if _, err := st.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
		t.Fatal("foreign segment was stored")
	}
}

func TestBadFiles(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := mem.New()
	p := newPusher(t, st, t.TempDir(), 1)
	good := waltest.WriteSegment(t, wal, 1, 7, seg, 42)
	data, _ := os.ReadFile(good)
	wrongName := filepath.Join(wal, walfile.SegmentName(1, 8, seg))
	os.WriteFile(wrongName, data, 0o600)
	short := filepath.Join(wal, walfile.SegmentName(1, 9, seg))
	os.WriteFile(short, data[:seg/2], 0o600)
	notWAL := filepath.Join(wal, walfile.SegmentName(1, 10, seg))
	os.WriteFile(notWAL, bytes.Repeat([]byte("x"), seg), 0o600)
	laterTLI := filepath.Join(wal, walfile.SegmentName(1, 11, seg))
	os.WriteFile(laterTLI, waltest.Segment(2, 11, seg, 42, 42), 0o600)
	abs, _ := filepath.Abs(good)
	escaping := []string{abs, "pg_wal/../../" + filepath.Base(good), "../data/" + good, good + "\x00",
		"pg_wal/" + strings.Repeat("0", 5000), ""}
	for _, path := range append([]string{wrongName, short, notWAL, laterTLI, filepath.Join(wal, "foo.txt")}, escaping...) {
		if err := p.Push(ctx, path); !errors.Is(err, archive.ErrBadFile) {
			t.Errorf("push %.80q: got %v, want ErrBadFile", path, err)
		}
	}
	if err := p.Push(ctx, filepath.Join(wal, walfile.SegmentName(1, 20, seg))); err == nil || errors.Is(err, archive.ErrBadFile) {
		t.Errorf("missing file: got %v, want an open error", err)
	}
}

func TestParallelPushAndMarkers(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := newCounting(mem.New())
	spool := t.TempDir()
	var paths []string
	for i := uint64(1); i <= 6; i++ {
		paths = append(paths, waltest.WriteSegment(t, wal, 1, i, seg, 42))
	}
	p := newPusher(t, st, spool, 4)
	if err := p.Push(ctx, paths[0]); err != nil {
		t.Fatal(err)
	}
	// The first call pushed segments 1 to 4 (itself and the three oldest ready ones).
	for i, path := range paths {
		key, _ := layout.WALKey(filepath.Base(path))
		_, err := st.Store.Stat(ctx, key)
		if (i < 4) != (err == nil) {
			t.Errorf("after the first call, segment %d stored=%v", i+1, err == nil)
		}
	}
	// PostgreSQL marks 1 done and asks for 2: answered from the marker, without a request.
	os.Rename(filepath.Join(wal, "archive_status", filepath.Base(paths[0])+".ready"), filepath.Join(wal, "archive_status", filepath.Base(paths[0])+".done"))
	os.Remove(filepath.Join(wal, "archive_status", filepath.Base(paths[1])+".ready"))
	before := st.total()
	if err := newPusher(t, st, spool, 1).Push(ctx, paths[1]); err != nil {
		t.Fatal(err)
	}
	if st.total() != before {
		t.Errorf("push of a marked segment made %d requests, want 0", st.total()-before)
	}
	// A marker never vouches for different content.
	os.WriteFile(paths[2], waltest.Segment(1, 3, seg, 42, 999), 0o600)
	if err := newPusher(t, st, spool, 1).Push(ctx, paths[2]); !errors.Is(err, archive.ErrConflict) {
		t.Errorf("changed file with a marker: got %v, want ErrConflict", err)
	}
}

// TestBacklogPushAheadSkipsMarked checks that a call in a backlog tops up the files pushed ahead
// with ones not yet pushed, and leaves those an earlier call pushed (they have markers) unread.
func TestBacklogPushAheadSkipsMarked(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := newCounting(mem.New())
	spool := t.TempDir()
	var paths []string
	for i := uint64(1); i <= 7; i++ {
		paths = append(paths, waltest.WriteSegment(t, wal, 1, i, seg, 42))
	}
	if err := newPusher(t, st, spool, 4).Push(ctx, paths[0]); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(wal, "archive_status", filepath.Base(paths[0]))
	os.Rename(status+".ready", status+".done")
	// Were segment 3 read again, its changed content would fail its marker and be pushed, which
	// costs requests and conflicts with the stored copy.
	os.WriteFile(paths[2], waltest.Segment(1, 3, seg, 42, 999), 0o600)
	before := st.total()
	if err := newPusher(t, st, spool, 4).Push(ctx, paths[1]); err != nil {
		t.Fatal(err)
	}
	if got := st.total() - before; got != 3 {
		t.Errorf("second call made %d requests, want 3 (creates of segments 5, 6 and 7 only)", got)
	}
	for i, path := range paths {
		key, _ := layout.WALKey(filepath.Base(path))
		if _, err := st.Store.Stat(ctx, key); err != nil {
			t.Errorf("segment %d not stored after two calls: %v", i+1, err)
		}
	}
}

// TestMarkerIdentity: a marker hit is trusted on the file's unchanged identity, and a file
// rewritten in place with other content of the same size, even with its modification time put
// back, is hashed and refused.
func TestMarkerIdentity(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := newCounting(mem.New())
	spool := t.TempDir()
	path := waltest.WriteSegment(t, wal, 1, 1, seg, 42)
	if err := newPusher(t, st, spool, 1).Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	before := st.total()
	if err := newPusher(t, st, spool, 1).Push(ctx, path); err != nil || st.total() != before {
		t.Fatalf("unchanged file: err %v, %d requests; want a marker hit without requests", err, st.total()-before)
	}
	fi, _ := os.Stat(path)
	os.WriteFile(path, waltest.Segment(1, 1, seg, 42, 999), 0o600)
	os.Chtimes(path, fi.ModTime(), fi.ModTime())
	if err := newPusher(t, st, spool, 1).Push(ctx, path); !errors.Is(err, archive.ErrConflict) {
		t.Errorf("rewritten file with its old mtime: got %v, want ErrConflict", err)
	}
}

func TestStandbyRefused(t *testing.T) {
	wal := waltest.WALDir(t)
	os.WriteFile(filepath.Join(wal, "..", "standby.signal"), nil, 0o600)
	path := waltest.WriteSegment(t, wal, 1, 1, seg, 42)
	err := newPusher(t, mem.New(), t.TempDir(), 1).Push(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "standby") {
		t.Fatalf("push from a standby: got %v, want a refusal", err)
	}
	p, _ := archive.New(archive.Config{Store: mem.New(), SpoolDir: t.TempDir(), AllowStandby: true})
	if err := p.Push(context.Background(), path); err != nil {
		t.Fatalf("with AllowStandby: %v", err)
	}
}

// TestLargeSegmentUsesDisk pushes a 128 MiB segment, which goes through a spool temp file.
func TestLargeSegment(t *testing.T) {
	dir := t.TempDir()
	st, _ := file.New(dir)
	wal := waltest.WALDir(t)
	path := waltest.WriteSegment(t, wal, 1, 2, 128<<20, 42)
	spool := t.TempDir()
	if err := newPusher(t, st, spool, 1).Push(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(path)
	if !bytes.Equal(fetchRaw(t, st, filepath.Base(path)), want) {
		t.Fatal("large segment differs")
	}
	left, _ := filepath.Glob(filepath.Join(spool, ".push-*"))
	if len(left) != 0 {
		t.Fatalf("temp files left in the spool: %v", left)
	}
}

// TestFailureIsNotSuccess: a store that fails makes Push fail; nothing is reported archived.
func TestFailureIsNotSuccess(t *testing.T) {
	wal := waltest.WALDir(t)
	boom := errors.New("503 service unavailable")
	st := &storage.Faulty{Store: mem.New(), Before: func(_ context.Context, op, key string) error {
		if strings.HasPrefix(key, "pg/wal/") {
			return boom
		}
		return nil
	}}
	spool := t.TempDir()
	path := waltest.WriteSegment(t, wal, 1, 1, seg, 42)
	if err := newPusher(t, st, spool, 1).Push(context.Background(), path); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the storage error", err)
	}
	if m, _ := filepath.Glob(filepath.Join(spool, "archived", "*")); len(m) != 0 {
		t.Fatalf("a failed push left a marker: %v", m)
	}
}

// TestHistoryUploadRetried (hazard 4): PostgreSQL probes the archive for .history files to pick
// the next timeline, so a failed history upload must fail the call (PostgreSQL retries it) and
// leave no marker, and the retry must store it: when the store refused the upload, when the
// upload took effect but its reply was lost, and when the history was pushed ahead as a ready
// neighbour of a segment.
func TestHistoryUploadRetried(t *testing.T) {
	const hist = "00000002.history"
	content := []byte("1\t0/3000060\tno recovery target specified\n")
	boom := errors.New("connection reset by peer")
	for _, c := range []struct {
		name      string
		lostReply bool // fail after the create took effect, not before
		ahead     bool // push the history as a ready neighbour of a segment
	}{{"refused", false, false}, {"reply lost", true, false}, {"pushed ahead", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			wal := waltest.WALDir(t)
			path := filepath.Join(wal, hist)
			os.WriteFile(path, content, 0o600)
			os.WriteFile(filepath.Join(wal, "archive_status", hist+".ready"), nil, 0o600)
			var failed atomic.Bool // the first history create fails, later ones work
			failOnce := func(op, key string) bool {
				return op == "create" && strings.HasPrefix(key, layout.HistoryPrefix) && failed.CompareAndSwap(false, true)
			}
			st := &storage.Faulty{Store: mem.New()}
			if c.lostReply {
				st.After = func(_ context.Context, op, key string, err error) error {
					if err == nil && failOnce(op, key) {
						return boom
					}
					return err
				}
			} else {
				st.Before = func(_ context.Context, op, key string) error {
					if failOnce(op, key) {
						return boom
					}
					return nil
				}
			}
			spool := t.TempDir()
			if c.ahead {
				if err := newPusher(t, st, spool, 4).Push(ctx, waltest.WriteSegment(t, wal, 1, 3, seg, 42)); err != nil {
					t.Fatalf("segment push with a failing history neighbour: %v", err)
				}
			} else if err := newPusher(t, st, spool, 1).Push(ctx, path); !errors.Is(err, boom) {
				t.Fatalf("history push with a failing store: got %v, want the storage error", err)
			}
			if !failed.Load() {
				t.Fatal("the history upload was never attempted")
			}
			if m, _ := filepath.Glob(filepath.Join(spool, "archived", hist)); len(m) != 0 {
				t.Fatalf("a failed history upload left a marker: %v", m)
			}
			if err := newPusher(t, st, spool, 1).Push(ctx, path); err != nil {
				t.Fatalf("PostgreSQL's retry of the history push: %v", err)
			}
			if got := fetchRaw(t, st, hist); !bytes.Equal(got, content) {
				t.Fatalf("archived history %q, want %q", got, content)
			}
		})
	}
}

// TestVerifyHeaderAgainstName: verify reports as corrupt an object whose WAL header says another
// timeline or segment than its name, and passes a new timeline's first segment that begins with
// its parent's pages.
func TestVerifyHeaderAgainstName(t *testing.T) {
	st := mem.New()
	put := func(name string, data []byte) {
		var buf bytes.Buffer
		sum, _ := object.Encode(&buf, bytes.NewReader(data), object.DefaultOptions)
		key, _ := layout.WALKey(name)
		st.Put(context.Background(), key, bytes.NewReader(buf.Bytes()), sum.Metadata())
	}
	want := map[string]bool{ // name -> corrupt
		walfile.SegmentName(1, 3, seg): true,  // holds timeline 2's header
		walfile.SegmentName(1, 4, seg): true,  // holds segment 5
		walfile.SegmentName(2, 6, seg): false, // opens with timeline 1's pages
	}
	put(walfile.SegmentName(1, 3, seg), waltest.Segment(2, 3, seg, 42, 1))
	put(walfile.SegmentName(1, 4, seg), waltest.Segment(1, 5, seg, 42, 1))
	put(walfile.SegmentName(2, 6, seg), waltest.Segment(1, 6, seg, 42, 1))
	n := 0
	err := archive.Verify(context.Background(), st, 2, nil, func(r archive.Result) {
		n++
		if archive.IsCorrupt(r.Err) != want[r.Name] {
			t.Errorf("%s: verify error %v, want corrupt=%v", r.Name, r.Err, want[r.Name])
		}
	})
	if err != nil || n != 3 {
		t.Fatalf("verify: %v after %d results, want 3", err, n)
	}
}

// TestForeignHistoryAndBackup: .history and .backup files carry no WAL header; they are checked
// against the archive's system with the system identifier in DATADIR/global/pg_control, and
// refused, like a foreign segment, when it differs or when pg_control is missing or damaged.
func TestForeignHistoryAndBackup(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, waltest.WriteSegment(t, waltest.WALDir(t), 1, 1, seg, waltest.SystemID)); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"00000002.history":                         "1\t0/3000060\tno recovery target specified\n",
		"000000010000000000000002.00000028.backup": "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
	}
	stored := func(name string) bool {
		key, _ := layout.WALKey(name)
		_, err := st.Stat(ctx, key)
		return err == nil
	}
	damaged := waltest.Control(waltest.SystemID)
	damaged[100] ^= 1
	for what, c := range map[string]struct {
		control []byte // nil: no pg_control
		want    string
	}{
		"other system":       {waltest.Control(222), "from database system 222, but mem:// belongs to system 42"},
		"no pg_control":      {nil, "pg_control"},
		"damaged pg_control": {damaged, "CRC"},
		"short pg_control":   {waltest.Control(waltest.SystemID)[:300], "300 bytes"},
	} {
		wal := waltest.WALDir(t)
		os.Remove(filepath.Join("global", "pg_control"))
		if c.control != nil {
			os.WriteFile(filepath.Join("global", "pg_control"), c.control, 0o600)
		}
		for name, content := range files {
			os.WriteFile(filepath.Join(wal, name), []byte(content), 0o600)
			err := newPusher(t, st, t.TempDir(), 1).Push(ctx, filepath.Join(wal, name))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: push %s: got %v, want an error containing %q", what, name, err, c.want)
			}
			if (what == "other system") != errors.Is(err, archive.ErrForeignCluster) {
				t.Errorf("%s: push %s: ErrForeignCluster=%v", what, name, errors.Is(err, archive.ErrForeignCluster))
			}
			if stored(name) {
				t.Fatalf("%s: %s was stored", what, name)
			}
		}
	}
	// The archive's own system, and an archive with no identity yet, accept them.
	for what, st := range map[string]storage.Store{"same system": st, "new archive": mem.New()} {
		wal := waltest.WALDir(t)
		for name, content := range files {
			os.WriteFile(filepath.Join(wal, name), []byte(content), 0o600)
			if err := newPusher(t, st, t.TempDir(), 1).Push(ctx, filepath.Join(wal, name)); err != nil {
				t.Errorf("%s: push %s: %v", what, name, err)
			}
		}
	}
}

// TestMarkersPruned: with any --parallel, the marker a push leaves is dropped by a later call once
// PostgreSQL has marked that file done, so the spool does not grow with every segment archived.
func TestMarkersPruned(t *testing.T) {
	for _, parallel := range []int{1, 4} {
		ctx := context.Background()
		wal := waltest.WALDir(t)
		st := mem.New()
		spool := t.TempDir()
		for i := uint64(1); i <= 10; i++ {
			path := waltest.WriteSegment(t, wal, 1, i, seg, waltest.SystemID)
			if err := newPusher(t, st, spool, parallel).Push(ctx, path); err != nil {
				t.Fatal(err)
			}
			ready := filepath.Join(wal, "archive_status", filepath.Base(path))
			os.Rename(ready+".ready", ready+".done") // as PostgreSQL does after exit 0
		}
		if m, _ := filepath.Glob(filepath.Join(spool, "archived", "0*")); len(m) > 1 {
			t.Errorf("--parallel %d: %d markers left after 10 pushes, want at most 1: %v", parallel, len(m), m)
		}
	}
}
