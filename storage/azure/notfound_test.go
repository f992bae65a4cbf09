package azure_test

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
	"github.com/walship/walship/storage/azure"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// TestMissingContainerNotNotFound: every read in a container that does not exist fails with
// ErrNoContainer naming it, never ErrNotExist, including HEAD (Stat), whose 404 has no body.
func TestMissingContainerNotNotFound(t *testing.T) {
	srv := testenv.Azurite(t)
	s, err := azure.New(context.Background(), azure.Config{Container: "nosuchcontainer", ConnectionString: srv.ConnectionString})
	if err != nil {
		t.Fatal(err)
	}
	storagetest.NeverNotFound(t, s, "container nosuchcontainer")
	if _, err := s.Stat(context.Background(), "x"); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("stat in a missing container: got %v, want ErrNoContainer", err)
	}
}

// TestBare404IsNotNotFound: a 404 without Azure's error code (a proxy, a gateway, a wrong
// endpoint) says nothing about the blob.
func TestBare404IsNotNotFound(t *testing.T) {
	for _, body := range []string{"", "404 page not found\n", "<html><body><h1>404 Not Found</h1></body></html>"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(body))
		}))
		s, err := azure.New(context.Background(), azure.Config{Container: "c", Account: "devstoreaccount1",
			Key: "a2V5", Endpoint: srv.URL + "/devstoreaccount1", HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		storagetest.NeverNotFound(t, s, "endpoint=")
		srv.Close()
	}
}

// TestGateway404OnKnownContainer: a gateway in front of a working container answers 404 to blob
// downloads; that is an error, not "not found", for present and absent blobs alike.
func TestGateway404OnKnownContainer(t *testing.T) {
	azurite := testenv.Azurite(t)
	target, _ := url.Parse(azurite.Endpoint)
	target.Path = ""
	proxy := httputil.NewSingleHostReverseProxy(target)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && !r.URL.Query().Has("comp") {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer gw.Close()
	s, err := azure.New(context.Background(), azure.Config{Container: azurite.NewContainer(t), Account: azurite.Account,
		Key: azurite.Key, Endpoint: gw.URL + "/" + azurite.Account, HTTPClient: &http.Client{}})
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
	if _, err := s.Stat(ctx, "wal/absent"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat of an absent blob: got %v, want ErrNotExist", err)
	}
}
