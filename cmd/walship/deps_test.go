package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestReleaseDeps: the binary as scripts/build makes it leaves out GCS's gRPC DirectPath. A
// dependency upgrade has silently ignored the opt-out tag before (googleapis/google-cloud-go#14376),
// which would cost every wal-push and wal-fetch call its init time and RSS again.
func TestReleaseDeps(t *testing.T) {
	tags, err := os.ReadFile("../../scripts/build-tags")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-deps", "-tags", strings.TrimSpace(string(tags)), ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "google.golang.org/grpc/xds") || strings.HasPrefix(pkg, "github.com/envoyproxy/") {
			t.Errorf("%s is linked into the release binary: the build tags in scripts/build-tags no longer keep gRPC DirectPath out", pkg)
		}
	}
}
