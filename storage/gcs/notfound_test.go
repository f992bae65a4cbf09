package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/gcs"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// TestMissingBucketNotNotFound: fake-gcs-server answers a missing bucket and a missing object
// with the same 404 body; every read must still come back as ErrNoContainer naming the bucket.
func TestMissingBucketNotNotFound(t *testing.T) {
	srv := testenv.FakeGCS(t)
	s, err := gcs.New(context.Background(), gcs.Config{Bucket: "no-such-bucket", Endpoint: "http://" + srv.Host})
	if err != nil {
		t.Fatal(err)
	}
	storagetest.NeverNotFound(t, s, "bucket no-such-bucket")
}

// TestBare404IsNotNotFound: a 404 without GCS's JSON error (a proxy, a gateway, a wrong
// endpoint) says nothing about the object.
func TestBare404IsNotNotFound(t *testing.T) {
	for _, body := range []string{"", "404 page not found\n", "<html><body><h1>404 Not Found</h1></body></html>"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(body))
		}))
		s, err := gcs.New(context.Background(), gcs.Config{Bucket: "b", Endpoint: srv.URL, HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		storagetest.NeverNotFound(t, s, "endpoint=")
		srv.Close()
	}
}

// TestGateway404OnDownloads: a gateway in front of a working bucket passes metadata requests but
// answers 404 to downloads. A download's 404 carries no JSON error, so it is checked against the
// object's metadata: present means the 404 is not the object's; absent is ErrNotExist.
func TestGateway404OnDownloads(t *testing.T) {
	srv := testenv.FakeGCS(t)
	target, _ := url.Parse("http://" + srv.Host)
	proxy := httputil.NewSingleHostReverseProxy(target)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("alt") == "media" {
			http.Error(w, "Not Found", http.StatusNotFound)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer gw.Close()
	s, err := gcs.New(context.Background(), gcs.Config{Bucket: srv.NewBucket(t), Endpoint: gw.URL, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "wal/present", bytes.NewReader([]byte("x")), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "wal/present"); err == nil || errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), "proxy") {
		t.Errorf("get through a gateway answering 404 to downloads: got %v, want an error naming the proxy, not ErrNotExist", err)
	}
	if _, err := storage.GetRange(ctx, s, "wal/present", 0, 1); err == nil || errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), "proxy") {
		t.Errorf("range get through a gateway answering 404 to downloads: got %v, want an error naming the proxy, not ErrNotExist", err)
	}
	if _, _, err := s.Get(ctx, "wal/absent"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get of an absent object: got %v, want ErrNotExist", err)
	}
	if _, err := storage.GetRange(ctx, s, "wal/absent", 0, 1); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("range get of an absent object: got %v, want ErrNotExist", err)
	}
}
