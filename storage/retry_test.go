package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/mem"
)

var errTransient = errors.New("503 slow down")

func noSleep(context.Context, time.Duration) error { return nil }

// failFirst fails the first n calls of op with err.
func failFirst(op string, n int32, err error, calls *atomic.Int32) func(context.Context, string, string) error {
	return func(_ context.Context, o, _ string) error {
		if o != op {
			return nil
		}
		if calls.Add(1) <= n {
			return err
		}
		return nil
	}
}

func TestRetryTransientThenSuccess(t *testing.T) {
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: failFirst("put", 3, errTransient, &calls)}
	s := storage.Retry(f, storage.RetryPolicy{Sleep: noSleep})
	if err := s.Put(context.Background(), "a", strings.NewReader("x"), nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := calls.Load(); got != 4 {
		t.Errorf("calls = %d, want 4", got)
	}
}

func TestRetryNeverRetriesPermanent(t *testing.T) {
	for _, perm := range []error{storage.ErrNotExist, storage.ErrPermission, storage.ErrNoContainer, storage.ErrExist, storage.ErrInvalid} {
		var calls atomic.Int32
		f := &storage.Faulty{Store: mem.New(), Before: failFirst("stat", 100, fmt.Errorf("x: %w", perm), &calls)}
		s := storage.Retry(f, storage.RetryPolicy{Sleep: noSleep})
		_, err := s.Stat(context.Background(), "a")
		if !errors.Is(err, perm) || calls.Load() != 1 {
			t.Errorf("%v: got err %v after %d calls, want it after 1 call", perm, err, calls.Load())
		}
	}
}

func TestRetryStopsOnCancelledCaller(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: func(context.Context, string, string) error {
		calls.Add(1)
		cancel()
		return context.Canceled
	}}
	s := storage.Retry(f, storage.RetryPolicy{Sleep: noSleep})
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, context.Canceled) || calls.Load() != 1 {
		t.Errorf("got %v after %d calls, want Canceled after 1", err, calls.Load())
	}
}

func TestRetryGivesUp(t *testing.T) {
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: failFirst("get", 1000, errTransient, &calls)}
	s := storage.Retry(f, storage.RetryPolicy{Attempts: 5, Sleep: noSleep})
	_, _, err := s.Get(context.Background(), "a")
	if !errors.Is(err, errTransient) || calls.Load() != 5 || !strings.Contains(err.Error(), "5 tries") {
		t.Errorf("got %v after %d calls, want the transient error after 5", err, calls.Load())
	}
	if errors.Is(err, storage.ErrNotExist) {
		t.Errorf("a storage that could not be read was reported as not found")
	}
}

// TestRetryForOutlastsDefaultAttempts: a MaxElapsed (--retry-for) longer than the default
// eight tries keeps retrying until it has passed; the attempt count must not end it early.
func TestRetryForOutlastsDefaultAttempts(t *testing.T) {
	p := storage.RetryPolicy{MaxElapsed: 2 * time.Second, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: failFirst("put", 30, errTransient, &calls)}
	if err := storage.Retry(f, p).Put(context.Background(), "a", strings.NewReader("x"), nil); err != nil {
		t.Fatalf("put after 30 transient failures within --retry-for: %v (after %d tries)", err, calls.Load())
	}
	if got := calls.Load(); got != 31 {
		t.Errorf("tries = %d, want 31", got)
	}

	// An outage longer than MaxElapsed: the caller gets the error once MaxElapsed has passed,
	// not before, and not long after.
	p.MaxElapsed = 300 * time.Millisecond
	calls.Store(0)
	f.Before = failFirst("stat", 1<<30, errTransient, &calls)
	start := time.Now()
	_, err := storage.Retry(f, p).Stat(context.Background(), "a")
	elapsed := time.Since(start)
	if !errors.Is(err, errTransient) {
		t.Fatalf("stat during an outage: got %v, want the transient error", err)
	}
	if elapsed < p.MaxElapsed || elapsed > p.MaxElapsed+time.Second {
		t.Errorf("gave up after %v and %d tries, want after %v", elapsed, calls.Load(), p.MaxElapsed)
	}
	if calls.Load() <= 8 {
		t.Errorf("tries = %d, want more than the default 8", calls.Load())
	}
}

// TestRetryForDefaultBackoff: with the default delays, the derived attempt count lasts at least
// MaxElapsed even if every sleep is the shortest the jitter allows.
func TestRetryForDefaultBackoff(t *testing.T) {
	var slept time.Duration
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: failFirst("stat", 1<<30, errTransient, &calls)}
	s := storage.Retry(f, storage.RetryPolicy{MaxElapsed: time.Hour,
		Sleep: func(_ context.Context, d time.Duration) error { slept += d; return nil }})
	if _, err := s.Stat(context.Background(), "a"); !errors.Is(err, errTransient) {
		t.Fatalf("got %v, want the transient error", err)
	}
	// Backoffs are jittered within [d/2, d] and capped at 10s: at least 5s each once grown.
	if slept < 50*time.Minute || calls.Load() < 360 {
		t.Errorf("%d tries sleeping %v in all for a one-hour budget, want about an hour of sleeps", calls.Load(), slept)
	}
}

func TestRetryBackoffGrows(t *testing.T) {
	var delays []time.Duration
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: failFirst("stat", 1000, errTransient, &calls)}
	s := storage.Retry(f, storage.RetryPolicy{Attempts: 6, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second,
		Sleep: func(_ context.Context, d time.Duration) error { delays = append(delays, d); return nil }})
	s.Stat(context.Background(), "a")
	want := []time.Duration{100, 200, 400, 800, 1000}
	for i, d := range delays {
		hi := want[i] * time.Millisecond
		if d < hi/2 || d > hi {
			t.Errorf("delay %d = %v, want within [%v, %v]", i, d, hi/2, hi)
		}
	}
	if len(delays) != 5 {
		t.Errorf("got %d delays, want 5", len(delays))
	}
}

// TestRetryStall: a try that hangs is cancelled by the idle watchdog and retried.
func TestRetryStall(t *testing.T) {
	var calls atomic.Int32
	f := &storage.Faulty{Store: mem.New(), Before: func(ctx context.Context, op, _ string) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // a server that never answers
			return ctx.Err()
		}
		return nil
	}}
	s := storage.Retry(f, storage.RetryPolicy{IdleTimeout: 50 * time.Millisecond, Sleep: noSleep})
	start := time.Now()
	if err := s.Put(context.Background(), "a", strings.NewReader("x"), nil); err != nil {
		t.Fatalf("put after a stall: %v", err)
	}
	if calls.Load() != 2 || time.Since(start) > 5*time.Second {
		t.Errorf("calls = %d in %v, want 2 promptly", calls.Load(), time.Since(start))
	}
}

// breakAfter returns a body that fails with a connection reset after n bytes.
type breakAfter struct {
	r io.ReadCloser
	n int
}

func (b *breakAfter) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	if len(p) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= n
	return n, err
}
func (b *breakAfter) Close() error { return b.r.Close() }

func TestRetryResumesBrokenBody(t *testing.T) {
	m := mem.New()
	data := bytes.Repeat([]byte("0123456789"), 10000)
	m.Put(context.Background(), "big", bytes.NewReader(data), nil)
	var breaks atomic.Int32
	f := &storage.Faulty{Store: m, Body: func(op, key string, r io.ReadCloser) io.ReadCloser {
		if breaks.Add(1) <= 3 {
			return &breakAfter{r: r, n: 7000}
		}
		return r
	}}
	s := storage.Retry(f, storage.RetryPolicy{Sleep: noSleep})
	rc, info, err := s.Get(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) || info.Size != int64(len(data)) {
		t.Fatalf("read after 3 resets: %d bytes, err %v; want %d identical bytes", len(got), err, len(data))
	}
	// A ranged read resumes within its range.
	rc, err = storage.GetRange(context.Background(), s, "big", 5, 20000)
	if err != nil {
		t.Fatal(err)
	}
	breaks.Store(0)
	got, err = io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data[5:20005]) {
		t.Fatalf("ranged read after resets: %d bytes, err %v", len(got), err)
	}
}

func TestRetryBodyGivesUp(t *testing.T) {
	m := mem.New()
	m.Put(context.Background(), "big", bytes.NewReader(make([]byte, 100000)), nil)
	f := &storage.Faulty{Store: m, Body: func(op, key string, r io.ReadCloser) io.ReadCloser {
		return &breakAfter{r: r, n: 10}
	}}
	s := storage.Retry(f, storage.RetryPolicy{Attempts: 4, Sleep: noSleep})
	rc, _, err := s.Get(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("endless resets: read succeeded")
	}
}

// flakyList fails once after delivering some keys, as a listing whose second page errors.
type flakyList struct {
	*mem.Store
	failed bool
}

func (f *flakyList) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	n := 0
	return f.Store.List(ctx, prefix, func(i storage.Info) error {
		if n++; n == 4 && !f.failed {
			f.failed = true
			return errTransient
		}
		return fn(i)
	})
}

func TestRetryListNoDuplicates(t *testing.T) {
	m := mem.New()
	for i := range 10 {
		m.Put(context.Background(), fmt.Sprintf("k/%02d", i), strings.NewReader("x"), nil)
	}
	s := storage.Retry(&flakyList{Store: m}, storage.RetryPolicy{Sleep: noSleep})
	var keys []string
	if err := s.List(context.Background(), "k/", func(i storage.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 10 || keys[3] != "k/03" {
		t.Fatalf("keys after a failed page: %v", keys)
	}
	stop := errors.New("enough")
	err := s.List(context.Background(), "k/", func(storage.Info) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("callback error: got %v, want it returned unchanged", err)
	}
}

func TestRetryKeepsCapabilities(t *testing.T) {
	s := storage.Retry(mem.New(), storage.RetryPolicy{})
	ctx := context.Background()
	if err := storage.Create(ctx, s, "a", strings.NewReader("1"), nil); err != nil {
		t.Fatal(err)
	}
	if err := storage.Create(ctx, s, "a", strings.NewReader("2"), nil); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("create through Retry: got %v, want ErrExist", err)
	}
}

func TestPrefix(t *testing.T) {
	for _, c := range []struct {
		raw, key, name, url string
	}{
		{"", "pg/wal/x", "pg/wal/x", "s3://b"},
		{"/a/b/", "pg/wal/x", "a/b/pg/wal/x", "s3://b/a/b"},
	} {
		p := storage.NewPrefix(c.raw)
		if got := p.Name(c.key); got != c.name {
			t.Errorf("%q.Name(%q) = %q, want %q", c.raw, c.key, got, c.name)
		}
		if got, ok := p.Key(c.name); !ok || got != c.key {
			t.Errorf("%q.Key(%q) = %q, %v", c.raw, c.name, got, ok)
		}
		if got := p.URL("s3", "b"); got != c.url {
			t.Errorf("URL = %q, want %q", got, c.url)
		}
	}
	p := storage.NewPrefix("a")
	for _, name := range []string{"ab/x", "a/", "other", "a/dir/"} {
		if k, ok := p.Key(name); ok {
			t.Errorf("Key(%q) = %q, want not ok", name, k)
		}
	}
	if got := p.ListName(""); got != "a/" {
		t.Errorf("ListName(\"\") = %q, want a/", got)
	}
}

// TestCreateResetOnExistingKey: a server that answers a create on an existing key by resetting
// the connection (MinIO does, before reading the body) must yield ErrExist, not endless retries.
func TestCreateResetOnExistingKey(t *testing.T) {
	m := mem.New()
	m.Put(context.Background(), "k", strings.NewReader("old"), nil)
	var calls atomic.Int32
	f := &storage.Faulty{Store: m, Before: func(_ context.Context, op, _ string) error {
		if op == "create" {
			calls.Add(1)
			return errors.New("write tcp 127.0.0.1:1->127.0.0.1:2: write: connection reset by peer")
		}
		return nil
	}}
	s := storage.Retry(f, storage.RetryPolicy{Sleep: noSleep})
	err := storage.Create(context.Background(), s, "k", strings.NewReader("new"), nil)
	if !errors.Is(err, storage.ErrExist) || calls.Load() != 1 {
		t.Fatalf("got %v after %d tries, want ErrExist after 1", err, calls.Load())
	}
	// On an absent key the reset is transient and retried.
	calls.Store(0)
	if err := storage.Create(context.Background(), s, "absent", strings.NewReader("x"), nil); err == nil || calls.Load() != 8 {
		t.Fatalf("absent key: got %v after %d tries, want the reset after 8", err, calls.Load())
	}
}

func TestCheckMetadata(t *testing.T) {
	for _, k := range []string{"", "Bad-Key", "1abc", "a_b", "sha-256"} {
		if err := storage.CheckMetadata(map[string]string{k: "v"}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("metadata key %q accepted", k)
		}
	}
	if err := storage.CheckMetadata(map[string]string{"sha256": "ab", "rawsize": "1", "sysid": "7"}); err != nil {
		t.Errorf("walship's own keys refused: %v", err)
	}
	if err := storage.CheckMetadata(map[string]string{"v": "line\nbreak"}); err == nil {
		t.Errorf("control character in a value accepted")
	}
}
