package open

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/storage"
)

func TestOpenErrors(t *testing.T) {
	cases := map[string]string{
		"":                                   "no storage given",
		"/k:secret@host/p":                   "not a URL",
		"relative/path":                      "not a URL",
		"ftp://host/x":                       `unknown scheme "ftp"`,
		"file://host/x":                      "three slashes",
		"file:///x?foo=1":                    `unknown option "foo"`,
		"s3:///prefix":                       "no bucket",
		"s3://b/p?endpont=http://x":          `unknown option "endpont"`,
		"s3://b/p?force_path_style=yep":      "not true or false",
		"s3://b/p?sse=rot13":                 "sse=",
		"s3://b/p?endpoint=127.0.0.1:9":      "must be an http",
		"s3://key:secret@b/p":                "credentials in the URL",
		"a:secret@":                          `unknown scheme "a"`,
		"s3://b/p?endpoint=ftp://k:secret@h": "must be an http",
		"s3://b/p?endpoint=http://k:secret@h&sse=rot13": "sse=",
		"gs:///p":      "no bucket",
		"azblob:///p":  "no container",
		"azblob://c/p": "no Azure account",
	}
	// A lazily built store still checks the URL at once.
	for _, lazy := range []bool{false, true} {
		for url, want := range cases {
			_, err := Open(context.Background(), url, Options{Lazy: lazy})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Open(%q, lazy %v): got %v, want an error containing %q", url, lazy, err, want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Open(%q): error leaks a credential: %v", url, err)
			}
		}
	}
}

func TestOpenBackends(t *testing.T) {
	env := map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;"}
	getenv := func(k string) string { return env[k] }
	cases := map[string]string{
		"file:///var/lib/walship":                                    "file:///var/lib/walship",
		"/var/lib/walship":                                           "file:///var/lib/walship",
		"/var/lib/walship/":                                          "file:///var/lib/walship",
		"/var/lib/wal?ship#1":                                        "file:///var/lib/wal?ship#1",
		"s3://bucket/some/prefix?region=eu-west-1":                   "s3://bucket/some/prefix",
		"s3://bucket?endpoint=http://127.0.0.1:9000&sse=AES256":      "s3://bucket",
		"gs://bucket/p?endpoint=http://127.0.0.1:4443":               "gs://bucket/p",
		"azblob://container/p":                                       "azblob://container/p",
		"azblob://container/p?account=acct&endpoint=http://x:1/acct": "azblob://container/p",
	}
	for _, lazy := range []bool{false, true} {
		for url, want := range cases {
			st, err := Open(context.Background(), url, Options{Getenv: getenv, Lazy: lazy})
			if err != nil {
				t.Errorf("Open(%q, lazy %v): %v", url, lazy, err)
				continue
			}
			// A lazy store names itself before it is built, exactly as the built one does.
			if st.String() != want {
				t.Errorf("Open(%q, lazy %v).String() = %q, want %q", url, lazy, st.String(), want)
			}
			if w, ok := st.(storage.Wrapper); !ok || w.Unwrap() == nil || w.Unwrap().String() != want {
				t.Errorf("Open(%q, lazy %v) is not a decorator over the backend", url, lazy)
			}
		}
	}
}

// TestOpenLazy: with Lazy, the backend's SDK is set up only on the first request; a set-up
// failure is that request's error (ErrSetup, not retried), and optional capabilities of the built
// store stay reachable.
func TestOpenLazy(t *testing.T) {
	ctx := context.Background()
	// The AWS SDK fails to load a profile that does not exist; only building the client reads it.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "config"))
	t.Setenv("AWS_PROFILE", "walship-no-such-profile")
	url := "s3://bucket/p?endpoint=http://127.0.0.1:1"
	if _, err := Open(ctx, url, Options{}); err == nil {
		t.Fatal("eager Open with a missing AWS profile succeeded; the test needs a set-up failure")
	}
	var sleeps int
	st, err := Open(ctx, url, Options{Lazy: true, Retry: storage.RetryPolicy{Sleep: func(context.Context, time.Duration) error {
		sleeps++
		return nil
	}}})
	if err != nil {
		t.Fatalf("lazy Open: %v, want the set-up deferred", err)
	}
	for i := 0; i < 2; i++ {
		_, _, err = st.Get(ctx, "pg/cluster")
		if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "walship-no-such-profile") {
			t.Errorf("first request: got %v, want ErrSetup naming the profile", err)
		}
	}
	if sleeps != 0 {
		t.Errorf("a set-up failure was retried %d times", sleeps)
	}
	// Create-if-absent is found through the lazy store.
	fst, err := Open(ctx, "file://"+t.TempDir(), Options{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReader("x")
	if err := storage.Create(ctx, fst, "k", body, nil); err != nil {
		t.Fatalf("create through a lazy store: %v", err)
	}
	if err := storage.Create(ctx, fst, "k", body, nil); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("second create through a lazy store: got %v, want ErrExist", err)
	}
	if rc, err := storage.GetRange(ctx, fst, "k", 0, 1); err != nil {
		t.Fatalf("ranged read through a lazy store: %v", err)
	} else {
		rc.Close()
	}
}
