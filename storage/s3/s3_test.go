package s3_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/s3"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// listPage is the conformance suite's list page size: small, so 1050 keys take 11 pages.
const listPage = 100

func TestConformanceMinIO(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	n := 0
	newStore := func(t *testing.T, hc *http.Client) storage.Store {
		n++
		s, err := s3.New(context.Background(), s3.Config{
			Bucket: bucket, Prefix: "suite/" + string(rune('a'+n%26)) + t.Name(), Region: srv.Region,
			Endpoint: srv.Endpoint, PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
			HTTPClient: hc, PartSize: 8 << 20, PageSize: listPage,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	storagetest.Run(t, storagetest.Options{
		New:      func(t *testing.T) storage.Store { return newStore(t, &http.Client{}) },
		PageSize: listPage,
		NewHTTP: func(t *testing.T, rt http.RoundTripper) storage.Store {
			return newStore(t, &http.Client{Transport: rt})
		},
	})
}

func TestErrorsMinIO(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()
	open := func(bucket, secret string) *s3.Store {
		s, err := s3.New(ctx, s3.Config{Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
			AccessKey: srv.AccessKey, SecretKey: secret, HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	missing := open("no-such-bucket", srv.SecretKey)
	if _, _, err := missing.Get(ctx, "x"); !errors.Is(err, storage.ErrNoContainer) || errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get in missing bucket: got %v, want ErrNoContainer only", err)
	}
	if _, err := missing.Stat(ctx, "x"); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("stat in missing bucket: got %v, want ErrNoContainer", err)
	}
	if err := missing.Put(ctx, "x", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("put in missing bucket: got %v, want ErrNoContainer", err)
	}
	wrong := open(bucket, "wrong-secret")
	if _, _, err := wrong.Get(ctx, "x"); !errors.Is(err, storage.ErrPermission) {
		t.Errorf("get with wrong secret: got %v, want ErrPermission", err)
	}
	if err := wrong.Put(ctx, "x", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrPermission) {
		t.Errorf("put with wrong secret: got %v, want ErrPermission", err)
	}
	if _, err := wrong.Stat(ctx, "x"); !errors.Is(err, storage.ErrPermission) {
		t.Errorf("stat with wrong secret: got %v, want ErrPermission", err)
	}
}

// TestMultipartCreate checks that create-if-absent holds on the multipart path, where the
// condition travels with CompleteMultipartUpload.
func TestMultipartCreateMinIO(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()
	s, err := s3.New(ctx, s3.Config{Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, HTTPClient: &http.Client{}, PartSize: 5 << 20,
		MultipartThreshold: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	first, second := storagetest.Random(12<<20), storagetest.Random(12<<20)
	if err := s.Create(ctx, "mp/x", bytes.NewReader(first), map[string]string{"sha256": "one"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "mp/x", bytes.NewReader(second), nil); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("second multipart create: got %v, want ErrExist", err)
	}
	if got := storagetest.ReadAll(t, s, "mp/x"); !bytes.Equal(got, first) {
		t.Fatal("multipart create overwrote the first object")
	}
	info, _ := s.Stat(ctx, "mp/x")
	if info.Metadata["sha256"] != "one" {
		t.Fatalf("multipart metadata: %v", info.Metadata)
	}
}

// TestCreateExistingLargeMinIO: MinIO answers a conditional PUT on an existing key before reading
// a large body and closes the connection; through the retry decorator this must still come back
// as ErrExist (a re-push after a crash), not as endless connection resets.
func TestCreateExistingLargeMinIO(t *testing.T) {
	srv := testenv.MinIO(t)
	ctx := context.Background()
	raw, err := s3.New(ctx, s3.Config{Bucket: srv.NewBucket(t), Region: srv.Region, Endpoint: srv.Endpoint, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	s := storage.Retry(raw, storage.RetryPolicy{Attempts: 3})
	body := storagetest.Random(12 << 20)
	if err := storage.Create(ctx, s, "wal/x", bytes.NewReader(body), nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := storage.Create(ctx, s, "wal/x", bytes.NewReader(body), nil); !errors.Is(err, storage.ErrExist) {
			t.Fatalf("repeat %d of a large create: got %v, want ErrExist", i, err)
		}
	}
}
