package open

import (
	"context"
	"strings"
	"testing"
)

// FuzzOpen parses arbitrary storage URLs: no panic, no network, and no error that echoes a
// password given in the URL.
func FuzzOpen(f *testing.F) {
	for _, s := range []string{"file:///var/lib/x", "s3://b/p?endpoint=http://127.0.0.1:9000&region=x", "gs://b/p",
		"azblob://c/p?account=a", "s3://user:hunter2@b/p", "ftp://x", "%zz", "file://host/x", "s3://b/p?sse=rot13",
		"a:#hunter2@", "a:/hunter2@x", "s3://b/hunter2@p#hunter2@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_, err := Open(context.Background(), raw, Options{Getenv: func(string) string { return "" }})
		if err != nil && strings.Contains(raw, "hunter2@") && strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error leaks the password: %v", err)
		}
	})
}
