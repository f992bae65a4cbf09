// Package testenv starts real servers for tests — MinIO, fake-gcs-server, Azurite, PostgreSQL and
// MariaDB — on free ports of 127.0.0.1, waits until they answer, and stops them on cleanup.
//
// A server that cannot start fails the test with one line naming what is missing; nothing is
// skipped. scripts/install-test-deps installs the emulators into CacheDir.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CacheDir holds the emulator binaries: $WALSHIP_CACHE, else $HOME/.cache/walship.
func CacheDir() string {
	if d := os.Getenv("WALSHIP_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "walship-cache")
	}
	return filepath.Join(home, ".cache", "walship")
}

// bin returns the path of an installed tool, failing the test when it is missing.
func bin(t testing.TB, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("testenv: %s not found: run scripts/install-test-deps (or scripts/test)", path)
	}
	return path
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a server started for one test.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs cmd in its own process group with output to logPath, and kills the group on cleanup.
func start(t testing.TB, name string, cmd *exec.Cmd, logPath string) *process {
	t.Helper()
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: %s: %v", name, err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls ready until it succeeds, the process exits, or a minute passes.
func (p *process) waitReady(t testing.TB, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ready() {
			return
		}
		if p.exited() {
			t.Fatalf("testenv: %s exited before becoming ready:\n%s", p.name, lastLines(p.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("testenv: %s not ready within 60s:\n%s", p.name, lastLines(p.log, 20))
}

func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// httpReady reports whether GET url answers with the given status (0: any status).
func httpReady(url string, status int) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return status == 0 || resp.StatusCode == status
	}
}

// runOut runs a command and returns its trimmed stdout, failing the test with stderr on error.
func runOut(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: %s: %v\n%s%s", strings.Join(cmd.Args, " "), err, errb.String(), out.String())
	}
	return strings.TrimSpace(out.String())
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9)
}
