package s3_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/s3"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// TestOneRequestPerSegment: a WAL segment frame is one PutObject up to a 64 MiB segment stored
// uncompressed (plus frame), for Put and Create alike, and streams from its file without being
// copied into memory. Above the threshold the upload goes multipart.
func TestOneRequestPerSegment(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	rt := &storagetest.CountingTransport{Base: http.DefaultTransport}
	mk := func(threshold int64) *s3.Store {
		s, err := s3.New(context.Background(), s3.Config{Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, HTTPClient: &http.Client{Transport: rt},
			MultipartThreshold: threshold, PartSize: 5 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()
	s := mk(0)
	for _, n := range []int{20 << 20, 64<<20 + 4096} {
		for _, op := range []string{"put", "create"} {
			f, data := storagetest.BodyFile(t, n)
			key := op + "/" + filepath.Base(t.Name()) + string(rune('a'+n%26))
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
	// Above the threshold: multipart (create, parts, complete), and still exact.
	big := mk(16 << 20)
	f, data := storagetest.BodyFile(t, 20<<20)
	rt.N.Store(0)
	if err := storage.Create(ctx, big, "multipart", f, nil); err != nil {
		t.Fatal(err)
	}
	if got := rt.N.Load(); got != 6 {
		t.Errorf("20 MiB above a 16 MiB threshold in 5 MiB parts: %d requests, want 6", got)
	}
	if got := storagetest.ReadAll(t, big, "multipart"); !bytes.Equal(got, data) {
		t.Fatal("multipart content differs")
	}
}
