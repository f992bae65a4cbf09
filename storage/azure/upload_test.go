package azure_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/walship/walship/storage/azure"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// TestOneRequestPerSegment: a WAL segment frame up to a 64 MiB segment stored uncompressed (plus
// frame) is one Put Blob, streamed from its file without being copied into memory.
func TestOneRequestPerSegment(t *testing.T) {
	srv := testenv.Azurite(t)
	rt := &storagetest.CountingTransport{Base: http.DefaultTransport}
	s, err := azure.New(context.Background(), azure.Config{Container: srv.NewContainer(t), ConnectionString: srv.ConnectionString,
		HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []int{20 << 20, 64<<20 + 4096} {
		data := storagetest.Random(n)
		path := filepath.Join(t.TempDir(), "body")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		before := m.TotalAlloc
		rt.N.Store(0)
		if err := s.Create(ctx, "seg/x"+string(rune('a'+n%26)), f, nil); err != nil {
			t.Fatalf("create %d bytes: %v", n, err)
		}
		runtime.ReadMemStats(&m)
		if alloc := m.TotalAlloc - before; alloc > 4<<20 {
			t.Errorf("create %d bytes from a file: allocated %d MiB, want under 4 MiB (the body must stream)", n, alloc>>20)
		}
		if got := rt.N.Load(); got != 1 {
			t.Errorf("create %d bytes: %d requests, want exactly 1", n, got)
		}
		if got := storagetest.ReadAll(t, s, "seg/x"+string(rune('a'+n%26))); !bytes.Equal(got, data) {
			t.Fatalf("create %d bytes: content differs", n)
		}
	}
}
