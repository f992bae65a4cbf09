package open

import (
	"context"
	"strings"
	"testing"

	"github.com/walship/walship/storage"
)

func TestOpenErrors(t *testing.T) {
	cases := map[string]string{
		"":                                   "no storage given",
		"/var/lib/archive":                   "file:///var/lib/archive",
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
	for url, want := range cases {
		_, err := Open(context.Background(), url, Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q): got %v, want an error containing %q", url, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): error leaks a credential: %v", url, err)
		}
	}
}

func TestOpenBackends(t *testing.T) {
	env := map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;"}
	getenv := func(k string) string { return env[k] }
	cases := map[string]string{
		"file:///var/lib/walship":                                    "file:///var/lib/walship",
		"s3://bucket/some/prefix?region=eu-west-1":                   "s3://bucket/some/prefix",
		"s3://bucket?endpoint=http://127.0.0.1:9000&sse=AES256":      "s3://bucket",
		"gs://bucket/p?endpoint=http://127.0.0.1:4443":               "gs://bucket/p",
		"azblob://container/p":                                       "azblob://container/p",
		"azblob://container/p?account=acct&endpoint=http://x:1/acct": "azblob://container/p",
	}
	for url, want := range cases {
		st, err := Open(context.Background(), url, Options{Getenv: getenv})
		if err != nil {
			t.Errorf("Open(%q): %v", url, err)
			continue
		}
		if st.String() != want {
			t.Errorf("Open(%q).String() = %q, want %q", url, st.String(), want)
		}
		if _, ok := st.(storage.Wrapper); !ok {
			t.Errorf("Open(%q) is not wrapped in the retry decorator", url)
		}
	}
}
