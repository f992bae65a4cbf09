// Package storagetest is the conformance suite every storage backend runs: the file and mem
// backends always, the cloud backends against real servers started by testenv.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/storage"
)

// Options tunes the suite for one backend.
type Options struct {
	// New returns an empty store; each call must give a fresh namespace (a new prefix or bucket).
	New func(t *testing.T) storage.Store
	// NewHTTP, for backends that speak HTTP, returns a store like New's whose requests all go
	// through rt. The suite uses it to corrupt upload bodies after the SDK computed its checksums
	// (see CorruptingTransport), requiring the upload to fail and no object to appear, and to
	// count the requests of a paged listing.
	NewHTTP func(t *testing.T, rt http.RoundTripper) storage.Store
	// PageSize is the page size the stores of New and NewHTTP list with (their config's page
	// size knob). With NewHTTP it is required: the paging test then proves that a listing of
	// ListKeys keys took ListKeys/PageSize requests, rounded up, and still saw every key once.
	PageSize int
	// ListKeys is the number of keys the paging test lists (1050 by default).
	ListKeys int
	// LargeSize is the size of the large round-trip object (64 MiB by default).
	LargeSize int
}

// Run runs the conformance suite.
func Run(t *testing.T, o Options) {
	if o.ListKeys == 0 {
		o.ListKeys = 1050
	}
	if o.LargeSize == 0 {
		o.LargeSize = 64 << 20
	}
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, o) })
	t.Run("Metadata", func(t *testing.T) { testMetadata(t, o) })
	t.Run("NotExist", func(t *testing.T) { testNotExist(t, o) })
	t.Run("Create", func(t *testing.T) { testCreate(t, o) })
	t.Run("ConcurrentCreate", func(t *testing.T) { testConcurrentCreate(t, o) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrentWriters(t, o) })
	t.Run("List", func(t *testing.T) { testList(t, o) })
	t.Run("ListPaging", func(t *testing.T) { testListPaging(t, o) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, o) })
	t.Run("GetRange", func(t *testing.T) { testGetRange(t, o) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, o) })
	if o.NewHTTP != nil {
		t.Run("CorruptInTransit", func(t *testing.T) { testCorrupt(t, o) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Random returns n random bytes.
func Random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// ReadAll gets key and returns its bytes, failing the test on error.
func ReadAll(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, _, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func testRoundTrip(t *testing.T, o Options) {
	s := o.New(t)
	for _, n := range []int{0, 1, 1000, o.LargeSize} {
		key := fmt.Sprintf("rt/obj-%d", n)
		data := Random(n)
		if err := s.Put(ctx(t), key, bytes.NewReader(data), nil); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
		got := ReadAll(t, s, key)
		if sha256.Sum256(got) != sha256.Sum256(data) || len(got) != n {
			t.Fatalf("get %s: got %d bytes, want %d identical bytes", key, len(got), n)
		}
		info, err := s.Stat(ctx(t), key)
		if err != nil {
			t.Fatalf("stat %s: %v", key, err)
		}
		if info.Size != int64(n) || info.Key != key {
			t.Fatalf("stat %s: got key %q size %d, want size %d", key, info.Key, info.Size, n)
		}
		if info.ModTime.IsZero() {
			t.Errorf("stat %s: zero ModTime", key)
		}
	}
}

func testMetadata(t *testing.T, o Options) {
	s := o.New(t)
	meta := map[string]string{"sha256": strings.Repeat("ab", 32), "rawsize": "16777216"}
	if err := s.Put(ctx(t), "meta/a", bytes.NewReader([]byte("x")), meta); err != nil {
		t.Fatal(err)
	}
	if err := storage.Create(ctx(t), s, "meta/b", bytes.NewReader([]byte("y")), meta); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"meta/a", "meta/b"} {
		info, err := s.Stat(ctx(t), key)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range meta {
			if got := info.Metadata[k]; got != v {
				t.Errorf("stat %s: metadata %s = %q, want %q (all: %v)", key, k, got, v, info.Metadata)
			}
		}
		rc, ginfo, err := s.Get(ctx(t), key)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if ginfo.Metadata["sha256"] != meta["sha256"] {
			t.Errorf("get %s: metadata = %v, want %v", key, ginfo.Metadata, meta)
		}
	}
	if err := s.Put(ctx(t), "meta/bad", bytes.NewReader(nil), map[string]string{"Bad-Key": "v"}); err == nil {
		t.Errorf("put with metadata key Bad-Key: got nil error, want refusal")
	}
}

func testNotExist(t *testing.T, o Options) {
	s := o.New(t)
	if _, _, err := s.Get(ctx(t), "missing/x"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get missing: got %v, want ErrNotExist", err)
	}
	if _, err := s.Stat(ctx(t), "missing/x"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat missing: got %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx(t), "missing/x"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("delete missing: got %v, want ErrNotExist", err)
	}
	if _, err := storage.GetRange(ctx(t), s, "missing/x", 0, 10); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("range get missing: got %v, want ErrNotExist", err)
	}
}

func testCreate(t *testing.T, o Options) {
	s := o.New(t)
	first, second := Random(5000), Random(5000)
	if err := storage.Create(ctx(t), s, "c/one", bytes.NewReader(first), map[string]string{"n": "1"}); err != nil {
		t.Fatalf("first create: %v", err)
	}
	err := storage.Create(ctx(t), s, "c/one", bytes.NewReader(second), map[string]string{"n": "2"})
	if !errors.Is(err, storage.ErrExist) {
		t.Fatalf("second create: got %v, want ErrExist", err)
	}
	if got := ReadAll(t, s, "c/one"); !bytes.Equal(got, first) {
		t.Fatalf("after refused create: content changed")
	}
	info, err := s.Stat(ctx(t), "c/one")
	if err != nil || info.Metadata["n"] != "1" {
		t.Fatalf("after refused create: metadata %v, err %v; want n=1", info.Metadata, err)
	}
	// An empty object counts as present too.
	if err := storage.Create(ctx(t), s, "c/empty", bytes.NewReader(nil), nil); err != nil {
		t.Fatal(err)
	}
	if err := storage.Create(ctx(t), s, "c/empty", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("create over empty object: got %v, want ErrExist", err)
	}
}

func testConcurrentCreate(t *testing.T, o Options) {
	s := o.New(t)
	const writers, rounds = 8, 5
	for r := 0; r < rounds; r++ {
		key := fmt.Sprintf("race/%d", r)
		bodies := make([][]byte, writers)
		var wins, losses atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			bodies[w] = Random(10000 + w)
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				err := storage.Create(ctx(t), s, key, bytes.NewReader(bodies[w]), nil)
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, storage.ErrExist):
					losses.Add(1)
				default:
					errs <- err
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: unexpected error: %v", r, err)
		}
		if wins.Load() != 1 || losses.Load() != writers-1 {
			t.Fatalf("round %d: %d winners and %d losers, want 1 and %d", r, wins.Load(), losses.Load(), writers-1)
		}
		got := ReadAll(t, s, key)
		found := false
		for _, b := range bodies {
			found = found || bytes.Equal(b, got)
		}
		if !found {
			t.Fatalf("round %d: stored object is none of the bodies written (%d bytes)", r, len(got))
		}
	}
}

func testConcurrentWriters(t *testing.T, o Options) {
	s := o.New(t)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	data := make([][]byte, n)
	for i := range n {
		data[i] = Random(20000 + i)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- s.Put(ctx(t), fmt.Sprintf("cw/%03d", i), bytes.NewReader(data[i]), nil)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if got := ReadAll(t, s, fmt.Sprintf("cw/%03d", i)); !bytes.Equal(got, data[i]) {
			t.Fatalf("cw/%03d: content differs", i)
		}
	}
}

func listKeys(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(ctx(t), prefix, func(i storage.Info) error {
		keys = append(keys, i.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return keys
}

func testList(t *testing.T, o Options) {
	s := o.New(t)
	want := []string{"l/a/1", "l/a/2", "l/ab", "l/b/x/y", "other"}
	for _, k := range want {
		if err := s.Put(ctx(t), k, bytes.NewReader([]byte(k)), nil); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"l/", want[:4]},
		{"l/a", []string{"l/a/1", "l/a/2", "l/ab"}},
		{"l/a/", []string{"l/a/1", "l/a/2"}},
		{"l/b/", []string{"l/b/x/y"}},
		{"", want},
		{"none/", nil},
	}
	for _, c := range cases {
		got := listKeys(t, s, c.prefix)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("list %q: got %v, want %v", c.prefix, got, c.want)
		}
	}
	var sizes []int64
	s.List(ctx(t), "l/a/", func(i storage.Info) error { sizes = append(sizes, i.Size); return nil })
	if len(sizes) != 2 || sizes[0] != 5 {
		t.Errorf("list sizes: got %v, want [5 5]", sizes)
	}
	stop := errors.New("stop")
	n := 0
	err := s.List(ctx(t), "l/", func(storage.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("list with callback error: got %v after %d calls, want stop after 1", err, n)
	}
}

func testListPaging(t *testing.T, o Options) {
	s := o.New(t)
	var rt *countingTransport
	if o.NewHTTP != nil {
		if o.PageSize <= 0 || o.PageSize >= o.ListKeys {
			t.Fatalf("PageSize %d: set a page size below ListKeys (%d) so paging is proven", o.PageSize, o.ListKeys)
		}
		rt = &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
		s = o.NewHTTP(t, rt)
	}
	want := make([]string, o.ListKeys)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, o.ListKeys)
	for i := range want {
		want[i] = fmt.Sprintf("page/%05d", i)
		wg.Add(1)
		sem <- struct{}{}
		go func(k string) {
			defer func() { <-sem; wg.Done() }()
			errs <- s.Put(ctx(t), k, bytes.NewReader([]byte("p")), nil)
		}(want[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if rt != nil {
		rt.n.Store(0)
	}
	got := listKeys(t, s, "page/")
	if rt != nil {
		if pages, want := int(rt.n.Load()), (o.ListKeys+o.PageSize-1)/o.PageSize; pages != want {
			t.Errorf("list of %d keys with page size %d: %d requests, want %d", o.ListKeys, o.PageSize, pages, want)
		}
	}
	if !sort.StringsAreSorted(got) {
		t.Errorf("list not sorted")
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("list of %d keys: got %d keys, want all %d exactly once", len(want), len(got), len(want))
	}
}

func testDelete(t *testing.T, o Options) {
	s := o.New(t)
	if err := s.Put(ctx(t), "d/x", bytes.NewReader([]byte("x")), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx(t), "d/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx(t), "d/x"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("stat after delete: got %v, want ErrNotExist", err)
	}
	if keys := listKeys(t, s, "d/"); len(keys) != 0 {
		t.Fatalf("list after delete: %v", keys)
	}
	if err := storage.Create(ctx(t), s, "d/x", bytes.NewReader([]byte("y")), nil); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func testGetRange(t *testing.T, o Options) {
	s := o.New(t)
	data := Random(100)
	if err := s.Put(ctx(t), "r/x", bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ off, n int64 }{{0, 10}, {10, 10}, {95, -1}, {90, 200}, {0, -1}}
	for _, c := range cases {
		rc, err := storage.GetRange(ctx(t), s, "r/x", c.off, c.n)
		if err != nil {
			t.Fatalf("range %d+%d: %v", c.off, c.n, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		end := int64(len(data))
		if c.n >= 0 && c.off+c.n < end {
			end = c.off + c.n
		}
		if !bytes.Equal(got, data[c.off:end]) {
			t.Errorf("range %d+%d: got %d bytes, want %d", c.off, c.n, len(got), end-c.off)
		}
	}
}

func testOverwrite(t *testing.T, o Options) {
	s := o.New(t)
	for _, body := range []string{"first", "second"} {
		if err := s.Put(ctx(t), "ow/x", strings.NewReader(body), map[string]string{"v": body}); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(ReadAll(t, s, "ow/x")); got != "second" {
		t.Fatalf("after overwrite: got %q, want second", got)
	}
}

func testCorrupt(t *testing.T, o Options) {
	rt := &CorruptingTransport{Base: http.DefaultTransport.(*http.Transport).Clone(), MinBody: 4096}
	s := o.NewHTTP(t, rt)
	data := Random(64 << 10)
	for _, op := range []string{"put", "create"} {
		key := "corrupt/" + op
		var err error
		if op == "put" {
			err = s.Put(ctx(t), key, bytes.NewReader(data), nil)
		} else {
			err = storage.Create(ctx(t), s, key, bytes.NewReader(data), nil)
		}
		if err == nil {
			t.Errorf("%s with a body corrupted in transit: got nil error, want a checksum failure", op)
		}
		if rt.Flipped.Load() == 0 {
			t.Fatalf("%s: the transport corrupted nothing; the test proves nothing", op)
		}
		if _, serr := s.Stat(ctx(t), key); !errors.Is(serr, storage.ErrNotExist) {
			t.Errorf("%s: corrupted upload left an object behind (stat: %v)", op, serr)
		}
		if !errors.Is(err, storage.ErrIntegrity) {
			t.Errorf("%s: error %v does not wrap storage.ErrIntegrity", op, err)
		}
	}
}

// countingTransport counts the requests that pass through it.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int32
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(req)
}

// CorruptingTransport flips the middle byte of every request body of at least MinBody bytes (and
// byte MinBody of a body of unknown length), after the SDK has computed its checksums and
// signatures: a stand-in for corruption on the wire.
type CorruptingTransport struct {
	Base    http.RoundTripper
	MinBody int64
	Flipped atomic.Int32
}

// RoundTrip implements http.RoundTripper.
func (c *CorruptingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	at := int64(-1)
	switch {
	case req.Body == nil || req.Body == http.NoBody:
	case req.ContentLength >= c.MinBody:
		at = req.ContentLength / 2
	case req.ContentLength <= 0: // unknown length (0 with a body means unknown for a client)
		at = c.MinBody
	}
	if at >= 0 {
		req = req.Clone(req.Context())
		req.Body = &flipReader{r: req.Body, at: at, flipped: &c.Flipped}
		req.GetBody = nil
	}
	return c.Base.RoundTrip(req)
}

type flipReader struct {
	r       io.ReadCloser
	at      int64
	off     int64
	flipped *atomic.Int32
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0x01
		f.flipped.Add(1)
	}
	f.off += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.r.Close() }
