package archive_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/mem"
)

// keyedStore counts creates per key and can fail the create of one key.
type keyedStore struct {
	storage.Store
	mu      sync.Mutex
	creates map[string]int
	fail    string
}

func (k *keyedStore) Unwrap() storage.Store { return k.Store }
func (k *keyedStore) Create(ctx context.Context, key string, b io.ReadSeeker, m map[string]string) error {
	k.mu.Lock()
	k.creates[key]++
	fail := k.fail != "" && strings.HasSuffix(key, k.fail)
	k.mu.Unlock()
	if fail {
		return errors.New("injected failure")
	}
	return storage.Create(ctx, k.Store, key, b, m)
}

// aheadPusher returns a Pusher whose StartAhead runs PushAhead (with its own Pusher, as the
// detached process has) in a goroutine; wait waits for the pushers started so far.
func aheadPusher(t *testing.T, st storage.Store, spool, wal string, errs chan<- error) (p *archive.Pusher, wait func()) {
	var wg sync.WaitGroup
	start := func() error {
		bg, err := archive.New(archive.Config{Store: st, StoreURL: st.String(), Codec: object.DefaultOptions, SpoolDir: spool, Parallel: 4})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bg.PushAhead(context.Background(), wal); err != nil && errs != nil {
				errs <- err
			}
		}()
		return nil
	}
	p, err := archive.New(archive.Config{Store: st, StoreURL: st.String(), Codec: object.DefaultOptions, SpoolDir: spool,
		Parallel: 4, StartAhead: start})
	if err != nil {
		t.Fatal(err)
	}
	return p, wg.Wait
}

// TestPushAheadInBackground: in a backlog, the first call starts the background pusher and
// returns once its own file is stored; the pusher stores every other ready file exactly once
// (the call and the pusher never push the same file), and PostgreSQL's later calls are answered
// by its markers without a request.
func TestPushAheadInBackground(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	base := mem.New()
	st := &keyedStore{Store: base, creates: map[string]int{}}
	spool := t.TempDir()
	var paths []string
	for i := uint64(1); i <= 10; i++ {
		paths = append(paths, waltest.WriteSegment(t, wal, 1, i, seg, 42))
	}
	p, wait := aheadPusher(t, st, spool, wal, nil)
	if err := p.Push(ctx, paths[0]); err != nil {
		t.Fatal(err)
	}
	key0, _ := layout.WALKey(filepath.Base(paths[0]))
	if _, err := base.Stat(ctx, key0); err != nil {
		t.Fatalf("the call returned before its own file was stored: %v", err)
	}
	// PostgreSQL's next calls, racing the pusher: each waits for a file the pusher is pushing.
	for _, path := range paths[1:] {
		status := filepath.Join(wal, "archive_status", filepath.Base(path))
		if err := p.Push(ctx, path); err != nil {
			t.Fatal(err)
		}
		os.Rename(status+".ready", status+".done")
	}
	wait()
	for _, path := range paths {
		key, _ := layout.WALKey(filepath.Base(path))
		if n := st.creates[key]; n != 1 {
			t.Errorf("%s: %d creates, want 1", filepath.Base(path), n)
		}
		if got, want := fetchRaw(t, base, filepath.Base(path)), mustRead(t, path); string(got) != string(want) {
			t.Errorf("%s: stored content differs", filepath.Base(path))
		}
	}
	// A call for a file the pusher stored finds its marker: no request at all.
	counted := newCounting(base)
	last := paths[len(paths)-1]
	os.WriteFile(filepath.Join(wal, "archive_status", filepath.Base(last)+".ready"), nil, 0o600)
	if err := newPusher(t, counted, spool, 4).Push(ctx, last); err != nil || counted.total() != 0 {
		t.Errorf("call for a pushed-ahead file: err %v, %d requests, want none", err, counted.total())
	}
}

// TestPushAheadStopsAtFailure: a file the pusher cannot store stops it (storage that fails one
// create likely fails the next), leaves no marker, and PostgreSQL's own call reports the error.
func TestPushAheadStopsAtFailure(t *testing.T) {
	ctx := context.Background()
	wal := waltest.WALDir(t)
	st := &keyedStore{Store: mem.New(), creates: map[string]int{}}
	spool := t.TempDir()
	var paths []string
	for i := uint64(1); i <= 6; i++ {
		paths = append(paths, waltest.WriteSegment(t, wal, 1, i, seg, 42))
	}
	st.fail = filepath.Base(paths[2])
	errs := make(chan error, 4)
	p, wait := aheadPusher(t, st, spool, wal, errs)
	if err := p.Push(ctx, paths[0]); err != nil {
		t.Fatal(err)
	}
	wait()
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), filepath.Base(paths[2])) {
			t.Errorf("pusher error %q does not name the failed file", err)
		}
	default:
		t.Fatal("the pusher reported no failure")
	}
	if _, err := os.Stat(filepath.Join(spool, "archived", filepath.Base(paths[2]))); err == nil {
		t.Fatal("a marker was written for a file that was not stored")
	}
	if err := newPusher(t, st, spool, 1).Push(ctx, paths[2]); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("PostgreSQL's call for the failed file: got %v, want the storage error", err)
	}
}

// TestPushAheadRefusesStandby: the pusher checks standby.signal as a call does.
func TestPushAheadRefusesStandby(t *testing.T) {
	wal := waltest.WALDir(t)
	st := mem.New()
	waltest.WriteSegment(t, wal, 1, 1, seg, 42)
	os.WriteFile(filepath.Join(wal, "..", "standby.signal"), nil, 0o600)
	p := newPusher(t, st, t.TempDir(), 4)
	if err := p.PushAhead(context.Background(), wal); err == nil || !strings.Contains(err.Error(), "standby") {
		t.Fatalf("got %v, want a refusal naming the standby", err)
	}
	if err := st.List(context.Background(), "", func(storage.Info) error { return errors.New("something was stored") }); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
