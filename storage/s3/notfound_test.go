package s3_test

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
	"github.com/walship/walship/storage/s3"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// TestBare404IsNotNotFound: something that is not S3 (a proxy, a gateway, a wrong endpoint)
// answering 404 says nothing about the object, whatever body it sends.
func TestBare404IsNotNotFound(t *testing.T) {
	for _, body := range []string{"", "404 page not found\n", "<html><body><h1>404 Not Found</h1></body></html>"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(body))
		}))
		s, err := s3.New(context.Background(), s3.Config{Bucket: "b", Region: "us-east-1", Endpoint: srv.URL, PathStyle: true,
			AccessKey: "k", SecretKey: "s", HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		storagetest.NeverNotFound(t, s, "endpoint=")
		srv.Close()
	}
}

// TestGateway404OnKnownBucket: a gateway in front of a working bucket answers 404 to object GETs.
// Even once the bucket is known to exist (a put went through), that 404 is not "not found".
func TestGateway404OnKnownBucket(t *testing.T) {
	minio := testenv.MinIO(t)
	bucket := minio.NewBucket(t)
	target, _ := url.Parse(minio.Endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && !r.URL.Query().Has("list-type") {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer gw.Close()
	s, err := s3.New(context.Background(), s3.Config{Bucket: bucket, Region: minio.Region, Endpoint: gw.URL, PathStyle: true,
		AccessKey: minio.AccessKey, SecretKey: minio.SecretKey, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "wal/present", bytes.NewReader([]byte("x")), nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"wal/present", "wal/absent"} {
		if _, _, err := s.Get(ctx, key); err == nil || errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), "proxy") {
			t.Errorf("get %s through a gateway answering 404: got %v, want an error naming the proxy, not ErrNotExist", key, err)
		}
	}
	// HEAD still reaches S3: a missing key in a bucket that exists is not found.
	if _, err := s.Stat(ctx, "wal/absent"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat of an absent key: got %v, want ErrNotExist", err)
	}
}

// TestMissingBucketNotNotFound: every read in a bucket that does not exist fails with
// ErrNoContainer, never ErrNotExist, including HEAD, whose 404 has no body.
func TestMissingBucketNotNotFound(t *testing.T) {
	minio := testenv.MinIO(t)
	s, err := s3.New(context.Background(), s3.Config{Bucket: "no-such-bucket", Region: minio.Region, Endpoint: minio.Endpoint,
		PathStyle: true, AccessKey: minio.AccessKey, SecretKey: minio.SecretKey, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	storagetest.NeverNotFound(t, s, "no-such-bucket")
	if _, err := s.Stat(context.Background(), "x"); !errors.Is(err, storage.ErrNoContainer) || !strings.Contains(err.Error(), "create it") {
		t.Errorf("stat in a missing bucket: got %v, want ErrNoContainer saying to create it", err)
	}
}

// TestHeadNotFoundConfirmedOnce: a HEAD 404 costs one extra request (the bucket check) the first
// time in a Store, and none after that.
func TestHeadNotFoundConfirmedOnce(t *testing.T) {
	minio := testenv.MinIO(t)
	rt := &storagetest.CountingTransport{Base: http.DefaultTransport, Match: func(req *http.Request) bool {
		// ListObjectsV2 and HeadBucket: the requests that confirm the bucket
		return req.URL.Query().Has("list-type") || strings.Count(strings.Trim(req.URL.Path, "/"), "/") == 0
	}}
	s, err := s3.New(context.Background(), s3.Config{Bucket: minio.NewBucket(t), Prefix: "p", Region: minio.Region,
		Endpoint: minio.Endpoint, PathStyle: true, AccessKey: minio.AccessKey, SecretKey: minio.SecretKey,
		HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int32{2, 1, 1} {
		rt.N.Store(0)
		if _, err := s.Stat(context.Background(), "wal/absent"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("stat %d of an absent key: got %v, want ErrNotExist", i, err)
		}
		if got := rt.N.Load(); got != want {
			t.Errorf("stat %d of an absent key: %d requests, want %d", i, got, want)
		}
	}
	if got := rt.Matched.Load(); got != 1 {
		t.Errorf("bucket checks: %d, want 1", got)
	}
}
