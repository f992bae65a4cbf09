package restore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/flock"
	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/restore"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/mem"
	"github.com/walship/walship/walfile"
)

const seg = 1 << 20

// archived pushes segments 1..n of timeline tli into a fresh mem store and returns it with the
// original bytes by name.
func archived(t *testing.T, tli uint32, n uint64) (*mem.Store, map[string][]byte) {
	st := mem.New()
	wal := waltest.WALDir(t)
	p, _ := archive.New(archive.Config{Store: st, StoreURL: "mem://", Codec: object.DefaultOptions, SpoolDir: t.TempDir()})
	orig := map[string][]byte{}
	for i := uint64(1); i <= n; i++ {
		path := waltest.WriteSegment(t, wal, tli, i, seg, 42)
		if err := p.Push(context.Background(), path); err != nil {
			t.Fatal(err)
		}
		orig[filepath.Base(path)], _ = os.ReadFile(path)
	}
	return st, orig
}

func fetcher(t *testing.T, st storage.Store, cfg restore.Config) *restore.Fetcher {
	cfg.Store = st
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = t.TempDir()
	}
	f, err := restore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFetchVerified(t *testing.T) {
	st, orig := archived(t, 1, 2)
	wal := waltest.WALDir(t)
	dest := filepath.Join(wal, "RECOVERYXLOG")
	name := walfile.SegmentName(1, 1, seg)
	if err := fetcher(t, st, restore.Config{}).Fetch(context.Background(), name, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
		t.Fatal("restored content differs")
	}
	leftovers(t, wal)
}

func leftovers(t *testing.T, dir string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, ".*walship*"))
	if len(m) != 0 {
		t.Fatalf("temp files left: %v", m)
	}
}

func TestFetchNotFound(t *testing.T) {
	st, _ := archived(t, 1, 1)
	wal := waltest.WALDir(t)
	for _, name := range []string{walfile.SegmentName(1, 9, seg), "00000002.history"} {
		err := fetcher(t, st, restore.Config{}).Fetch(context.Background(), name, filepath.Join(wal, "RECOVERYXLOG"))
		if !errors.Is(err, restore.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", name, err)
		}
	}
}

// TestStorageErrorIsNotNotFound: an unreadable archive must never look like the end of WAL.
func TestStorageErrorIsNotNotFound(t *testing.T) {
	st, _ := archived(t, 1, 1)
	down := &storage.Faulty{Store: st, Before: func(context.Context, string, string) error {
		return errors.New("dial tcp 127.0.0.1:9000: connection refused")
	}}
	wal := waltest.WALDir(t)
	dest := filepath.Join(wal, "RECOVERYXLOG")
	err := fetcher(t, down, restore.Config{}).Fetch(context.Background(), walfile.SegmentName(1, 1, seg), dest)
	if err == nil || errors.Is(err, restore.ErrNotFound) {
		t.Fatalf("storage down: got %v, want an error that is not ErrNotFound", err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatal("a file was written although storage was down")
	}
}

func TestCorruptNeverHandedOver(t *testing.T) {
	name := walfile.SegmentName(1, 1, seg)
	key, _ := layout.WALKey(name)
	damage := map[string]func([]byte) []byte{
		"flip":     func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"truncate": func(b []byte) []byte { return b[:len(b)-100] },
		"empty":    func(b []byte) []byte { return nil },
		"trailer":  func(b []byte) []byte { b[len(b)-10] ^= 0x40; return b },
	}
	for what, f := range damage {
		st, _ := archived(t, 1, 1)
		st.Corrupt(key, f)
		wal := waltest.WALDir(t)
		dest := filepath.Join(wal, "RECOVERYXLOG")
		err := fetcher(t, st, restore.Config{}).Fetch(context.Background(), name, dest)
		if !errors.Is(err, object.ErrCorrupt) || errors.Is(err, restore.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrCorrupt", what, err)
		}
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Errorf("%s: corrupt bytes were handed to PostgreSQL", what)
		}
		leftovers(t, wal)
	}
}

// TestMetadataMismatchRefused: a valid frame stored under the wrong name (or with metadata of
// another object) is refused.
func TestMetadataMismatchRefused(t *testing.T) {
	st, _ := archived(t, 1, 2)
	k1, _ := layout.WALKey(walfile.SegmentName(1, 1, seg))
	k2, _ := layout.WALKey(walfile.SegmentName(1, 2, seg))
	rc, _, _ := st.Get(context.Background(), k2)
	var frame bytes.Buffer
	frame.ReadFrom(rc)
	st.Corrupt(k1, func([]byte) []byte { return frame.Bytes() })
	err := fetcher(t, st, restore.Config{}).Fetch(context.Background(), walfile.SegmentName(1, 1, seg), filepath.Join(waltest.WALDir(t), "RECOVERYXLOG"))
	if !errors.Is(err, object.ErrCorrupt) {
		t.Fatalf("swapped object: got %v, want ErrCorrupt", err)
	}
}

func TestBadArguments(t *testing.T) {
	f := fetcher(t, mem.New(), restore.Config{})
	for _, c := range [][2]string{{"../../etc/passwd", "pg_wal/RECOVERYXLOG"}, {"000000010000000000000001", "../x"},
		{"000000010000000000000001", "pg_wal/\x00"}, {"000000010000000000000001", strings.Repeat("a/", 3000)}, {"", "x"},
		{"000000010000000000000001", filepath.Join(t.TempDir(), "pg_wal", "RECOVERYXLOG")}} {
		if err := f.Fetch(context.Background(), c[0], c[1]); err == nil || errors.Is(err, restore.ErrNotFound) {
			t.Errorf("Fetch(%q, %.80q): got %v, want a refusal", c[0], c[1], err)
		}
	}
}

// TestPartialNotServedAsFull: asking for X never returns X.partial.
func TestPartialNotServedAsFull(t *testing.T) {
	st := mem.New()
	wal := waltest.WALDir(t)
	name := walfile.SegmentName(1, 3, seg)
	part := filepath.Join(wal, name+".partial")
	os.WriteFile(part, waltest.Segment(1, 3, seg, 42, 1)[:seg], 0o600)
	p, _ := archive.New(archive.Config{Store: st, StoreURL: "mem://", SpoolDir: t.TempDir()})
	if err := p.Push(context.Background(), part); err != nil {
		t.Fatal(err)
	}
	f := fetcher(t, st, restore.Config{})
	if err := f.Fetch(context.Background(), name, filepath.Join(wal, "RECOVERYXLOG")); !errors.Is(err, restore.ErrNotFound) {
		t.Fatalf("full name with only a partial archived: got %v, want ErrNotFound", err)
	}
	if err := f.Fetch(context.Background(), name+".partial", filepath.Join(wal, "RECOVERYXLOG")); err != nil {
		t.Fatalf("explicit partial: %v", err)
	}
}

// TestOldTimelineAfterSwitchRefused: with 00000002.history in pg_wal saying timeline 1 ended in
// segment 3, timeline 1's segments from 4 on (an old primary's late archiving) are refused,
// while earlier ones and segment 3 itself are served.
func TestOldTimelineAfterSwitchRefused(t *testing.T) {
	st, _ := archived(t, 1, 5)
	wal := waltest.WALDir(t)
	os.WriteFile(filepath.Join(wal, "00000002.history"), []byte("1\t0/30ABC0\tno recovery target specified\n"), 0o600)
	f := fetcher(t, st, restore.Config{})
	for segno, ok := range map[uint64]bool{1: true, 2: true, 3: true, 4: false, 5: false} {
		err := f.Fetch(context.Background(), walfile.SegmentName(1, segno, seg), filepath.Join(wal, "RECOVERYXLOG"))
		if ok != (err == nil) || (!ok && (!errors.Is(err, restore.ErrNotFound) || !errors.Is(err, restore.ErrOldTimeline))) {
			t.Errorf("timeline 1 segment %d: got %v, want served=%v", segno, err, ok)
		}
	}
}

func TestPrefetchSpool(t *testing.T) {
	st, orig := archived(t, 1, 6)
	spool := t.TempDir()
	var started [][]string
	cfg := restore.Config{SpoolDir: spool, Prefetch: 3, StartPrefetch: func(names []string, _ uint32) error {
		started = append(started, names)
		return restore.Prefetch(context.Background(), st, spool, names, nil) // synchronously, for the test
	}}
	gets := 0
	counted := &storage.Faulty{Store: st, Before: func(_ context.Context, op, _ string) error {
		if op == "get" {
			gets++
		}
		return nil
	}}
	f := fetcher(t, counted, cfg)
	wal := waltest.WALDir(t)
	dest := filepath.Join(wal, "RECOVERYXLOG")
	for i := uint64(1); i <= 6; i++ {
		name := walfile.SegmentName(1, i, seg)
		if err := f.Fetch(context.Background(), name, dest); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
			t.Fatalf("%s: content differs", name)
		}
	}
	if gets != 1 {
		t.Errorf("%d direct storage reads for 6 segments, want 1 (the rest from the spool)", gets)
	}
	if len(started) == 0 || len(started[0]) != 3 || started[0][0] != walfile.SegmentName(1, 2, seg) {
		t.Errorf("prefetch requests: %v", started)
	}
	// The prefetcher found segment 7 missing: a standby's probe within the TTL asks nobody.
	miss := walfile.SegmentName(1, 7, seg)
	sf := fetcher(t, &storage.Faulty{Store: st, Before: func(context.Context, string, string) error {
		return errors.New("storage must not be asked")
	}}, restore.Config{SpoolDir: spool, Standby: true, MissTTL: time.Minute})
	if err := sf.Fetch(context.Background(), miss, dest); !errors.Is(err, restore.ErrNotFound) {
		t.Errorf("standby probe after a recorded miss: got %v, want ErrNotFound without a request", err)
	}
	// Outside standby mode the miss is not trusted: storage is asked.
	af := fetcher(t, st, restore.Config{SpoolDir: spool, MissTTL: time.Minute})
	if err := af.Fetch(context.Background(), miss, dest); !errors.Is(err, restore.ErrNotFound) {
		t.Errorf("archive recovery probe: got %v", err)
	}
	// At the end of recovery PostgreSQL asks again for the last segment it replayed: the spool
	// still holds it and answers without a request.
	last := walfile.SegmentName(1, 6, seg)
	if err := f.Fetch(context.Background(), last, dest); err != nil {
		t.Fatalf("%s again: %v", last, err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[last]) || gets != 1 {
		t.Errorf("%s asked again: content equal %v, %d storage reads in all, want 1", last, bytes.Equal(got, orig[last]), gets)
	}
	entries, _ := os.ReadDir(filepath.Join(spool, "prefetch"))
	for _, e := range entries {
		if n := strings.TrimSuffix(e.Name(), ".sum"); walfile.Classify(n) == walfile.Segment && n != last {
			t.Errorf("spool still holds %s after a later segment was served", e.Name())
		}
	}
	// The spooled copy and PostgreSQL's are one file. Should PostgreSQL write to its copy (a
	// walreceiver reusing it), the spool's no longer matches its checksum and storage is asked.
	flipByte(t, dest, 4096)
	if err := f.Fetch(context.Background(), last, dest); err != nil {
		t.Fatalf("%s after PostgreSQL wrote to it: %v", last, err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[last]) || gets != 2 {
		t.Errorf("%s after PostgreSQL wrote to it: content equal %v, %d storage reads in all, want 2", last, bytes.Equal(got, orig[last]), gets)
	}
}

func TestDamagedSpoolFallsBack(t *testing.T) {
	st, orig := archived(t, 1, 2)
	spool := t.TempDir()
	name := walfile.SegmentName(1, 2, seg)
	os.MkdirAll(filepath.Join(spool, "prefetch"), 0o700)
	os.WriteFile(filepath.Join(spool, "prefetch", name), []byte("torn"), 0o600)
	dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
	if err := fetcher(t, st, restore.Config{SpoolDir: spool}).Fetch(context.Background(), name, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
		t.Fatal("content differs after a damaged spool file")
	}
}

// gets wraps st and counts the Get requests that reach it.
func gets(st storage.Store) (*storage.Faulty, *int) {
	n := new(int)
	return &storage.Faulty{Store: st, Before: func(_ context.Context, op, _ string) error {
		if op == "get" {
			*n++
		}
		return nil
	}}, n
}

// clock is a settable time for the negative cache.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// TestStandbyNegativeCache: a standby probing a missing segment or .history every 5 s (as
// PostgreSQL does while it waits for WAL) causes one storage request per TTL, not per probe; a
// file archived meanwhile is served once the TTL has passed.
func TestStandbyNegativeCache(t *testing.T) {
	for _, name := range []string{walfile.SegmentName(1, 3, seg), "00000002.history"} {
		t.Run(name, func(t *testing.T) {
			st, _ := archived(t, 1, 2)
			counted, n := gets(st)
			clk := &clock{time.Now()}
			spool := t.TempDir()
			f := fetcher(t, counted, restore.Config{SpoolDir: spool, Standby: true, MissTTL: restore.DefaultMissTTL, Now: clk.now})
			wal := "pg_wal"
			probe := func() error { return f.Fetch(context.Background(), name, filepath.Join(wal, "RECOVERYXLOG")) }
			// Two minutes of probes every 5 s: one request per 30 s TTL.
			for i := 0; i < 24; i++ {
				if err := probe(); !errors.Is(err, restore.ErrNotFound) {
					t.Fatalf("probe %d: got %v, want ErrNotFound", i, err)
				}
				clk.t = clk.t.Add(5 * time.Second)
			}
			if *n != 4 {
				t.Errorf("24 probes over 2 minutes made %d storage requests, want 4 (one per 30 s)", *n)
			}
			// A fresh miss at 2:00; then the file is archived. Within the TTL the standby does not
			// see it yet, after the TTL it does.
			if err := probe(); !errors.Is(err, restore.ErrNotFound) || *n != 5 {
				t.Fatalf("probe at 2:00: got %v, %d requests in all, want ErrNotFound and 5", err, *n)
			}
			if walfile.Classify(name) == walfile.History {
				os.WriteFile(filepath.Join(wal, name), []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
			} else {
				waltest.WriteSegment(t, wal, 1, 3, seg, 42)
			}
			p, _ := archive.New(archive.Config{Store: st, StoreURL: "mem://", SpoolDir: t.TempDir()})
			if err := p.Push(context.Background(), filepath.Join(wal, name)); err != nil {
				t.Fatal(err)
			}
			before := *n
			clk.t = clk.t.Add(restore.DefaultMissTTL - time.Second)
			if err := probe(); !errors.Is(err, restore.ErrNotFound) || *n != before {
				t.Fatalf("within the TTL: got %v after %d requests, want the cached miss", err, *n-before)
			}
			clk.t = clk.t.Add(time.Second)
			if err := probe(); err != nil {
				t.Fatalf("after the TTL: %v, want the archived file", err)
			}
			if m, _ := filepath.Glob(filepath.Join(spool, "prefetch", "*.missing")); len(m) != 0 {
				t.Errorf("misses left after the file was served: %v", m)
			}
		})
	}
}

// TestArchiveRecoveryIgnoresMisses: without standby.signal every probe asks storage, even with a
// fresh miss recorded (by the prefetcher or by a standby's probe): a stale miss would end recovery
// early. MissTTL 0 disables the cache on a standby too.
func TestArchiveRecoveryIgnoresMisses(t *testing.T) {
	st, _ := archived(t, 1, 2)
	spool := t.TempDir()
	name := walfile.SegmentName(1, 3, seg)
	dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
	standby := fetcher(t, st, restore.Config{SpoolDir: spool, Standby: true, MissTTL: time.Hour})
	for _, n := range []string{name, "00000002.history"} {
		if err := standby.Fetch(context.Background(), n, dest); !errors.Is(err, restore.ErrNotFound) {
			t.Fatalf("%s: %v", n, err)
		}
	}
	for what, cfg := range map[string]restore.Config{
		"archive recovery":   {SpoolDir: spool, MissTTL: time.Hour},
		"standby, MissTTL 0": {SpoolDir: spool, Standby: true},
	} {
		counted, n := gets(st)
		f := fetcher(t, counted, cfg)
		for i := 0; i < 5; i++ {
			for _, n := range []string{name, "00000002.history"} {
				if err := f.Fetch(context.Background(), n, dest); !errors.Is(err, restore.ErrNotFound) {
					t.Fatalf("%s: %s: %v", what, n, err)
				}
			}
		}
		if *n != 10 {
			t.Errorf("%s: 10 probes made %d storage requests, want 10", what, *n)
		}
	}
}

// storeRaw frames data as walship does and stores it under name's key, bypassing wal-push's
// checks, as a damaged or misplaced object would be.
func storeRaw(t *testing.T, st storage.Store, name string, data []byte) {
	t.Helper()
	var buf bytes.Buffer
	sum, err := object.Encode(&buf, bytes.NewReader(data), object.DefaultOptions)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := layout.WALKey(name)
	if err := st.Put(context.Background(), key, bytes.NewReader(buf.Bytes()), sum.Metadata()); err != nil {
		t.Fatal(err)
	}
}

// TestHeaderMismatchRefused: a verified frame whose WAL page header contradicts the name it was
// asked for (another timeline, segment number or segment size, or the wrong length) is damaged:
// object.ErrCorrupt, and nothing reaches %p, whether it came from storage or the spool. A header
// of an earlier timeline is normal (a new timeline's first segment begins with its parent's pages).
func TestHeaderMismatchRefused(t *testing.T) {
	name := walfile.SegmentName(1, 4, seg)
	segSize2 := waltest.Segment(1, 4, seg, 42, 1)
	binary.LittleEndian.PutUint32(segSize2[32:], 2*seg) // says 2 MiB segments: 4 MiB is segment 2
	cases := map[string][]byte{
		"timeline":       waltest.Segment(2, 4, seg, 42, 1),
		"segment number": waltest.Segment(1, 5, seg, 42, 1),
		"segment size":   segSize2,
		"short":          waltest.Segment(1, 4, seg, 42, 1)[:seg/2],
		"not WAL":        bytes.Repeat([]byte("x"), seg),
		"tiny":           []byte("x"),
	}
	for what, data := range cases {
		for _, fromSpool := range []bool{false, true} {
			st := mem.New()
			storeRaw(t, st, name, data)
			spool := t.TempDir()
			if fromSpool {
				if err := restore.Prefetch(context.Background(), st, spool, []string{name}, nil); err != nil {
					t.Fatal(err)
				}
			}
			dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
			err := fetcher(t, st, restore.Config{SpoolDir: spool}).Fetch(context.Background(), name, dest)
			if !errors.Is(err, object.ErrCorrupt) || errors.Is(err, restore.ErrNotFound) {
				t.Errorf("%s (spool %v): got %v, want ErrCorrupt", what, fromSpool, err)
			}
			if _, err := os.Stat(dest); !os.IsNotExist(err) {
				t.Errorf("%s (spool %v): a mismatched segment was handed to PostgreSQL", what, fromSpool)
			}
			leftovers(t, "pg_wal")
		}
	}
	st := mem.New()
	switchSeg := walfile.SegmentName(2, 4, seg)
	storeRaw(t, st, switchSeg, waltest.Segment(1, 4, seg, 42, 1))
	if err := fetcher(t, st, restore.Config{}).Fetch(context.Background(), switchSeg, filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")); err != nil {
		t.Errorf("timeline 2 segment opening with timeline 1 pages: %v, want it served", err)
	}
}

// TestPrefetchRefillsInBatches checks that the spool is refilled once half of it has been served,
// not after every call: each refill is a background process.
func TestPrefetchRefillsInBatches(t *testing.T) {
	st, orig := archived(t, 1, 40) // more than is fetched: the end of the archive is another case
	spool := t.TempDir()
	starts := 0
	cfg := restore.Config{SpoolDir: spool, Prefetch: 8, StartPrefetch: func(names []string, _ uint32) error {
		starts++
		return restore.Prefetch(context.Background(), st, spool, names, nil)
	}}
	f := fetcher(t, st, cfg)
	dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
	for i := uint64(1); i <= 24; i++ {
		name := walfile.SegmentName(1, i, seg)
		if err := f.Fetch(context.Background(), name, dest); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
			t.Fatalf("%s: content differs", name)
		}
	}
	// One start after the first call, then one per four segments served.
	if starts < 2 || starts > 7 {
		t.Errorf("prefetcher started %d times for 24 segments, want one per half spool (about 6)", starts)
	}
}

// TestSpooledCopyChecked damages prefetched copies the way a crash, a bad disk or another
// writer would (a flipped byte in the content, one with the file's times set back after it, a
// torn tail, its checksum file lost or damaged): each is refused and the segment fetched from
// storage instead, byte for byte; an intact copy is served without a request.
func TestSpooledCopyChecked(t *testing.T) {
	damage := map[string]func(p string){
		"intact":  func(string) {},
		"flipped": func(p string) { flipByte(t, p, 12345) },
		"flipped, times restored": func(p string) {
			fi, _ := os.Stat(p)
			flipByte(t, p, 12345)
			os.Chtimes(p, fi.ModTime(), fi.ModTime())
		},
		"torn":                  func(p string) { fi, _ := os.Stat(p); os.Truncate(p, fi.Size()-1000) },
		"no checksum file":      func(p string) { os.Remove(p + ".sum") },
		"checksum file damaged": func(p string) { flipByte(t, p+".sum", 9) },
		"checksum file stamp":   func(p string) { flipByte(t, p+".sum", 40) },
	}
	for what, hurt := range damage {
		t.Run(what, func(t *testing.T) {
			st, orig := archived(t, 1, 2)
			spool := t.TempDir()
			name := walfile.SegmentName(1, 2, seg)
			if err := restore.Prefetch(context.Background(), st, spool, []string{name}, nil); err != nil {
				t.Fatal(err)
			}
			// A later change, as any other writer's would be: a kernel with coarse timestamps
			// moves a file's change time on once per tick (at most 10 ms).
			time.Sleep(20 * time.Millisecond)
			hurt(filepath.Join(spool, "prefetch", name))
			counted, n := gets(st)
			dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
			if err := fetcher(t, counted, restore.Config{SpoolDir: spool}).Fetch(context.Background(), name, dest); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
				t.Fatalf("%s spool copy: restored content differs", what)
			}
			if want := map[bool]int{true: 0, false: 1}[what == "intact"]; *n != want {
				t.Errorf("%s spool copy: %d storage reads, want %d", what, *n, want)
			}
		})
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
}

// TestFollowServesWholeRecovery: one following prefetcher keeps the spool ahead of a whole
// recovery (40 segments with 8 prefetched) instead of one started per half spool, every segment
// served byte for byte, and it exits on its own once the archive ends, leaving no served segment
// in the spool.
func TestFollowServesWholeRecovery(t *testing.T) {
	st, orig := archived(t, 1, 40)
	counted := &getCounter{Store: st, keys: map[string]int{}}
	spool := t.TempDir()
	var mu sync.Mutex
	var starts [][]string
	var wg sync.WaitGroup
	cfg := restore.Config{SpoolDir: spool, Prefetch: 8, StartPrefetch: func(names []string, segSize uint32) error {
		mu.Lock()
		starts = append(starts, names)
		mu.Unlock()
		wg.Add(1)
		done := make(chan struct{})
		go func() {
			defer wg.Done()
			defer close(done)
			if err := restore.Follow(context.Background(), counted, spool, names, nil, 8, segSize); err != nil {
				t.Errorf("follow: %v", err)
			}
		}()
		// Return once the follower holds the spool's lock (or is done, or has had 100 ms: one
		// that finds the archive ended holds it a moment and then waits for the calls to stop,
		// see restore.settle). The real starter returns before the new process has taken it; a
		// call in that window starts a second prefetcher, which finds the lock taken and exits at
		// once (no download: counted below). Without this wait that benign race, not the
		// following, decided the starts counted here.
		lock := filepath.Join(spool, "prefetch", ".lock")
		for give := time.After(100 * time.Millisecond); !flock.Held(lock); {
			select {
			case <-done:
				return nil
			case <-give:
				return nil
			case <-time.After(time.Millisecond):
			}
		}
		return nil
	}}
	f := fetcher(t, st, cfg)
	dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
	for i := uint64(1); i <= 40; i++ {
		name := walfile.SegmentName(1, i, seg)
		if i == 40 {
			// Replay gives the prefetcher time; this loop does not, so the last segment, whose
			// second request is checked below, is waited for.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if _, err := os.Stat(filepath.Join(spool, "prefetch", name)); err == nil {
					break
				}
			}
		}
		if err := f.Fetch(context.Background(), name, dest); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
			t.Fatalf("%s: content differs", name)
		}
	}
	// PostgreSQL's second request for the last segment, after the miss that ends the archive,
	// is served from the spool.
	last := walfile.SegmentName(1, 40, seg)
	again := fetcher(t, &storage.Faulty{Store: st, Before: func(context.Context, string, string) error {
		return errors.New("storage must not be asked")
	}}, restore.Config{SpoolDir: spool})
	if err := again.Fetch(context.Background(), last, dest); err != nil {
		t.Fatalf("%s asked again: %v", last, err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[last]) {
		t.Fatalf("%s asked again: content differs", last)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the following prefetcher did not exit after the archive ended")
	}
	// Once the calls stopped, the served segments left the spool, the last one too.
	entries, _ := os.ReadDir(filepath.Join(spool, "prefetch"))
	for _, e := range entries {
		if n := strings.TrimSuffix(e.Name(), ".sum"); walfile.Classify(n) == walfile.Segment && n <= last {
			t.Errorf("spool still holds %s after the recovery", e.Name())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// One process served the archive: any later start looks past its end (a miss outside
	// standby mode is not trusted, so each call there probes again).
	for i, names := range starts[1:] {
		if names[0] <= last {
			t.Errorf("prefetcher start %d, for %v, within the archive: one follower should serve it all", i+2, names)
		}
	}
	// Each archived segment downloaded once at most by the prefetcher.
	counted.mu.Lock()
	defer counted.mu.Unlock()
	for i := uint64(1); i <= 40; i++ {
		key, _ := layout.WALKey(walfile.SegmentName(1, i, seg))
		if n := counted.keys[key]; n > 1 {
			t.Errorf("the prefetcher downloaded %s %d times", key, n)
		}
	}
	t.Logf("%d prefetcher starts, %d after the first past the archive's end", len(starts), len(starts)-1)
}

// TestFollowerCleansSpool: while a following prefetcher runs, the calls leave the spool's
// cleaning to it (off the path replay waits on), and it drops the segments served before the
// position as the position moves, not only once the calls stop (followIdle, 3 s later).
func TestFollowerCleansSpool(t *testing.T) {
	st, _ := archived(t, 1, 12)
	spool := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	cfg := restore.Config{SpoolDir: spool, Prefetch: 4, StartPrefetch: func(names []string, segSize uint32) error {
		wg.Add(1)
		go func() {
			defer wg.Done()
			restore.Follow(ctx, st, spool, names, nil, 4, segSize)
		}()
		return nil
	}}
	f := fetcher(t, st, cfg)
	dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
	waitSpooled := func(name string) {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, err := os.Stat(filepath.Join(spool, "prefetch", name+".sum")); err == nil {
				return
			}
		}
		t.Fatalf("%s never reached the spool", name)
	}
	fetch := func(i uint64) {
		if err := f.Fetch(ctx, walfile.SegmentName(1, i, seg), dest); err != nil {
			t.Fatal(err)
		}
	}
	fetch(1) // from storage; starts the follower for 2-5
	// Every download at or below 5 is done before the calls move on, so none can land in the
	// spool after the cleaning below.
	for i := uint64(2); i <= 5; i++ {
		waitSpooled(walfile.SegmentName(1, i, seg))
	}
	for i := uint64(2); i <= 4; i++ {
		fetch(i)
	}
	pos := walfile.SegmentName(1, 4, seg)
	var held []string
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if held = spooledBelow(t, spool, pos); len(held) == 0 {
			break
		}
	}
	if len(held) > 0 {
		t.Errorf("a second after %s was served, the spool still holds %v", pos, held)
	}
	if _, err := os.Stat(filepath.Join(spool, "prefetch", pos)); err != nil {
		t.Errorf("the segment just served left the spool: %v", err)
	}
}

// spooledBelow lists the segments before name (and their checksum files) in the prefetch spool.
func spooledBelow(t *testing.T, spool, name string) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(spool, "prefetch"))
	var held []string
	for _, e := range entries {
		if n := strings.TrimSuffix(e.Name(), ".sum"); walfile.Classify(n) == walfile.Segment && n < name {
			held = append(held, e.Name())
		}
	}
	return held
}

// getCounter counts GETs per key.
type getCounter struct {
	storage.Store
	mu   sync.Mutex
	keys map[string]int
}

func (g *getCounter) Unwrap() storage.Store { return g.Store }
func (g *getCounter) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	g.mu.Lock()
	g.keys[key]++
	g.mu.Unlock()
	return g.Store.Get(ctx, key)
}

// TestOrphanSpoolFileNotAwaited: a spool file without its checksum file, left long ago by a
// prefetcher that died between the two, is not waited for while another prefetcher runs: the
// call fetches the segment from storage at once instead of waiting for a checksum file nothing
// will write.
func TestOrphanSpoolFileNotAwaited(t *testing.T) {
	st, orig := archived(t, 1, 2)
	spool := t.TempDir()
	name := walfile.SegmentName(1, 2, seg)
	dir := filepath.Join(spool, "prefetch")
	os.MkdirAll(dir, 0o700)
	orphan := filepath.Join(dir, name)
	if err := os.WriteFile(orphan, orig[name], 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	os.Chtimes(orphan, old, old)
	unlock, ok, err := flock.TryLock(filepath.Join(dir, ".lock")) // a prefetcher at work
	if err != nil || !ok {
		t.Fatalf("lock the spool: %v %v", ok, err)
	}
	defer unlock()
	counted, n := gets(st)
	dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
	done := make(chan error, 1)
	go func() {
		done <- fetcher(t, counted, restore.Config{SpoolDir: spool}).Fetch(context.Background(), name, dest)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a wait for the checksum file lasts 30 s
		t.Fatal("the call waited for the orphan's checksum file")
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) || *n != 1 {
		t.Errorf("content equal %v, %d storage reads, want 1", bytes.Equal(got, orig[name]), *n)
	}
}
