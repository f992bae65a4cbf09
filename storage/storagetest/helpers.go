package storagetest

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/walship/walship/storage"
)

// The helpers below serve the backends' own tests of what the conformance suite cannot set up
// in general (a missing bucket, a proxy answering 404, request counts of one upload path).

// NeverNotFound checks that no read of s reports ErrNotExist, and that each error mentions want
// (what to fix): a store that could not be read must never look like an absent object.
func NeverNotFound(t testing.TB, s storage.Store, want string) {
	t.Helper()
	ctx := context.Background()
	check := func(op string, err error) {
		t.Helper()
		if err == nil || errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error mentioning %q that is not ErrNotExist", op, err, want)
		}
	}
	_, _, err := s.Get(ctx, "wal/x")
	check("get", err)
	_, err = storage.GetRange(ctx, s, "wal/x", 0, 10)
	check("range get", err)
	_, err = s.Stat(ctx, "wal/x")
	check("stat", err)
	check("delete", s.Delete(ctx, "wal/x"))
}

// CountingTransport counts the requests that pass through it to Base, and separately those
// Match selects (nil: none).
type CountingTransport struct {
	Base    http.RoundTripper
	Match   func(*http.Request) bool
	N       atomic.Int32
	Matched atomic.Int32
}

func (c *CountingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.N.Add(1)
	if c.Match != nil && c.Match(req) {
		c.Matched.Add(1)
	}
	return c.Base.RoundTrip(req)
}

// BodyFile writes n random bytes to a temporary file and returns it open at the start: a body
// that, unlike a bytes.Reader, is not already in memory.
func BodyFile(t testing.TB, n int) (*os.File, []byte) {
	t.Helper()
	data := Random(n)
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

// Allocated is the bytes allocated so far by this process, for bounding what one call allocates.
func Allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}
