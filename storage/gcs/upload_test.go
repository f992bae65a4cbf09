package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/gcs"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// TestOneRequestPerSegment: a WAL segment frame is one upload request up to a 64 MiB segment
// stored uncompressed (plus frame), streamed from its file without being copied into memory, and
// the server still verifies its CRC32C. Above the threshold the upload is resumable.
func TestOneRequestPerSegment(t *testing.T) {
	srv := testenv.FakeGCS(t)
	bucket := srv.NewBucket(t)
	rt := &storagetest.CountingTransport{Base: http.DefaultTransport}
	mk := func(threshold int64, rt http.RoundTripper) *gcs.Store {
		s, err := gcs.New(context.Background(), gcs.Config{Bucket: bucket, Endpoint: "http://" + srv.Host,
			HTTPClient: &http.Client{Transport: rt}, ResumableThreshold: threshold, ChunkSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()
	s := mk(0, rt)
	for _, n := range []int{20 << 20, 64<<20 + 4096} {
		for _, op := range []string{"put", "create"} {
			f, data := storagetest.BodyFile(t, n)
			key := op + "/" + string(rune('a'+n%26))
			rt.N.Store(0)
			before := storagetest.Allocated()
			var err error
			if op == "put" {
				err = s.Put(ctx, key, f, nil)
			} else {
				err = s.Create(ctx, key, f, nil)
			}
			if err != nil {
				t.Fatalf("%s %d bytes: %v", op, n, err)
			}
			if alloc := storagetest.Allocated() - before; alloc > 4<<20 {
				t.Errorf("%s %d bytes from a file: allocated %d MiB, want under 4 MiB (the body must stream)", op, n, alloc>>20)
			}
			if got := rt.N.Load(); got != 1 {
				t.Errorf("%s %d bytes: %d requests, want exactly 1", op, n, got)
			}
			if got := storagetest.ReadAll(t, s, key); !bytes.Equal(got, data) {
				t.Fatalf("%s %d bytes: content differs", op, n)
			}
		}
	}

	// The server itself refuses a 20 MiB single request damaged in transit (the CRC32C travels
	// with it): the error is its 400, not the client's after-the-fact comparison.
	bad := mk(0, &storagetest.CorruptingTransport{Base: http.DefaultTransport, MinBody: 4096})
	f, _ := storagetest.BodyFile(t, 20<<20)
	err := bad.Create(ctx, "corrupt", f, nil)
	if !errors.Is(err, storage.ErrIntegrity) || strings.Contains(err.Error(), "object removed") {
		t.Errorf("20 MiB create corrupted in transit: got %v, want the server's checksum refusal", err)
	}
	if _, err := s.Stat(ctx, "corrupt"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("corrupted single request left an object: %v", err)
	}

	// Above the threshold: resumable (start, then 8 MiB chunks), and still exact.
	big := mk(16<<20, rt)
	f, data := storagetest.BodyFile(t, 20<<20)
	rt.N.Store(0)
	if err := big.Create(ctx, "resumable", f, nil); err != nil {
		t.Fatal(err)
	}
	if got := rt.N.Load(); got != 4 {
		t.Errorf("20 MiB above a 16 MiB threshold in 8 MiB chunks: %d requests, want 4", got)
	}
	if got := storagetest.ReadAll(t, big, "resumable"); !bytes.Equal(got, data) {
		t.Fatal("resumable content differs")
	}
}
