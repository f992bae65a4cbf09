package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/gcs"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// listPage is the conformance suite's list page size: small, so 1050 keys take 11 pages.
const listPage = 100

func TestConformanceFakeGCS(t *testing.T) {
	srv := testenv.FakeGCS(t)
	newStore := func(t *testing.T, hc *http.Client) storage.Store {
		s, err := gcs.New(context.Background(), gcs.Config{Bucket: srv.NewBucket(t), Prefix: "suite",
			Endpoint: "http://" + srv.Host, HTTPClient: hc, PageSize: listPage})
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

// TestResumableCorruptionCaught: above ChunkSize the upload is resumable, which fake-gcs-server
// does not verify; the post-upload CRC32C comparison must still refuse and remove the object.
func TestResumableCorruptionCaught(t *testing.T) {
	srv := testenv.FakeGCS(t)
	rt := &storagetest.CorruptingTransport{Base: http.DefaultTransport, MinBody: 4096}
	s, err := gcs.New(context.Background(), gcs.Config{Bucket: srv.NewBucket(t), Endpoint: "http://" + srv.Host,
		HTTPClient: &http.Client{Transport: rt}, ChunkSize: 256 << 10, ResumableThreshold: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = storage.Create(ctx, s, "big", bytes.NewReader(storagetest.Random(1<<20)), nil)
	if !errors.Is(err, storage.ErrIntegrity) {
		t.Fatalf("resumable upload corrupted in transit: got %v, want ErrIntegrity", err)
	}
	if _, err := s.Stat(ctx, "big"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("corrupt resumable upload left an object: %v", err)
	}
}

func TestMissingBucket(t *testing.T) {
	srv := testenv.FakeGCS(t)
	s, err := gcs.New(context.Background(), gcs.Config{Bucket: "no-such-bucket", Endpoint: "http://" + srv.Host})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "x"); !errors.Is(err, storage.ErrNoContainer) || errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get in missing bucket: got %v, want ErrNoContainer only", err)
	}
	if _, err := s.Stat(ctx, "x"); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("stat in missing bucket: got %v, want ErrNoContainer", err)
	}
	if err := s.Put(ctx, "x", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("put in missing bucket: got %v, want ErrNoContainer", err)
	}
}
