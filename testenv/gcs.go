package testenv

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GCSServer is a fake-gcs-server holding its objects in memory.
type GCSServer struct {
	Host string // 127.0.0.1:P, the value for STORAGE_EMULATOR_HOST

	proc *process
}

// FakeGCS starts fake-gcs-server from CacheDir()/bin. -public-host is set to Host because the Go
// client reads objects through the XML API, and fake-gcs routes those paths only when the Host
// header equals -public-host; otherwise every read answers "object not exist".
//
// Nothing here sets STORAGE_EMULATOR_HOST: it is process-wide, and tests running in parallel
// each have their own server.
func FakeGCS(t testing.TB) *GCSServer {
	t.Helper()
	exe := cacheBin(t, "fake-gcs-server")
	dir := t.TempDir()
	g := &GCSServer{}
	g.proc = serve(t, "fake-gcs-server", filepath.Join(dir, "fake-gcs-server.log"), func() (*exec.Cmd, func() bool) {
		port := FreePort(t)
		g.Host = fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(exe, "-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
			"-backend", "memory", "-public-host", g.Host, "-log-level", "warn")
		return cmd, httpReady("http://"+g.Host+"/storage/v1/b", http.StatusOK)
	})
	return g
}

// NewBucket creates a bucket no other test uses through the JSON API and returns its name. A
// plain POST needs no client configured for the emulator.
func (g *GCSServer) NewBucket(t testing.TB) string {
	t.Helper()
	name := uniqueName("walship")
	resp, err := plainHTTP.Post("http://"+g.Host+"/storage/v1/b?project=test", "application/json",
		strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
	if err != nil {
		t.Fatalf("testenv: fake-gcs-server: create bucket %s: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		t.Fatalf("testenv: fake-gcs-server: create bucket %s: %s: %s", name, resp.Status, body)
	}
	return name
}

// Kill stops the server at once, for tests of a store that stops answering.
func (g *GCSServer) Kill(t testing.TB) {
	t.Helper()
	g.proc.kill()
}
