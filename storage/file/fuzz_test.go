package file_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/walship/walship/storage/file"
)

// FuzzEnvelope reads an object file whatever its bytes (a damaged disk, another program's file
// under the archive directory): Stat and Get fail or agree with each other on the body's size,
// and never panic.
func FuzzEnvelope(f *testing.F) {
	dir := f.TempDir()
	st, err := file.New(dir)
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Put(ctx, "seed", bytes.NewReader([]byte("body")), map[string]string{"sha256": "ab", "rawsize": "4"}); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(filepath.Join(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("WSF1\x00\x00\x00\x00"))
	f.Add([]byte("WSF1\xff\xff\xff\xff{}"))
	f.Add([]byte("WSF1\x00\x00\x00\x04null"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "k"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		info, err := st.Stat(ctx, "k")
		rc, ginfo, gerr := st.Get(ctx, "k")
		if (err == nil) != (gerr == nil) {
			t.Fatalf("Stat error %v, Get error %v", err, gerr)
		}
		if gerr != nil {
			return
		}
		defer rc.Close()
		body, err := io.ReadAll(rc)
		if err != nil || int64(len(body)) != info.Size || ginfo.Size != info.Size {
			t.Fatalf("body %d bytes (%v), Stat says %d, Get says %d", len(body), err, info.Size, ginfo.Size)
		}
	})
}
