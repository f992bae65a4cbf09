// Package testenv starts real servers for tests: MinIO, fake-gcs-server and Azurite for the storage
// backends, PostgreSQL 15 and MariaDB 10.11 for the archivers. Each one listens on free ports of
// 127.0.0.1, keeps its data in a fresh directory, is polled until it answers, and is stopped and
// removed by t.Cleanup, so a test needs no TestMain and no shared state.
//
// A server that cannot start fails the test with one line naming what is missing and how to get it.
// Nothing is ever skipped: a skipped integration test is one that silently never runs.
// scripts/install-test-deps installs the emulators into CacheDir and the database servers with apt.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// readyTimeout bounds how long a server may take to answer. The slowest measured on a 2-core
// machine is Azurite at about a second; a minute leaves room for a loaded CI runner.
const readyTimeout = 60 * time.Second

// CacheDir is where scripts/install-test-deps puts the emulators: $WALSHIP_CACHE, else
// $HOME/.cache/walship. Building them takes minutes, so they are kept between runs.
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

// cacheBin returns CacheDir()/bin/name, failing the test with the fix when it is not there.
func cacheBin(t testing.TB, name string) string {
	t.Helper()
	return bin(t, filepath.Join(CacheDir(), "bin", name))
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Someone else can take it
// before the server binds it; the servers started here retry on new ports when that happens.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// bin returns path if it is an executable file, and otherwise fails the test with the fix, so a
// missing server reads as a setup step rather than as a test failure to debug.
func bin(t testing.TB, path string) string {
	t.Helper()
	if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("testenv: %s not found in %s: run scripts/install-test-deps", filepath.Base(path), filepath.Dir(path))
	}
	return path
}

// process is one server process started by this package, leader of its own process group so
// that no child of it (node's workers, a shell) outlives it.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has been waited for
}

// start runs cmd in a new process group with stdout and stderr appended to logPath, and kills the
// group on cleanup.
func start(t testing.TB, name string, cmd *exec.Cmd, logPath string) *process {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the whole group and waits up to timeout for the leader to exit, then kills
// the group. It reports whether the process exited on sig alone.
func (p *process) stop(sig syscall.Signal, timeout time.Duration) bool {
	if p.exited() {
		return true
	}
	syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return false
}

// kill is the cleanup of every process: nothing is worth saving once the test is over.
func (p *process) kill() { p.stop(syscall.SIGKILL, 10*time.Second) }

// errExited says the server died before answering; the reason is in its log.
var errExited = errors.New("exited before becoming ready")

// poll calls ready until it reports true, the process exits, or readyTimeout passes.
func (p *process) poll(ready func() bool) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if p.exited() {
			return errExited
		}
		if ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %s", readyTimeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitReady polls ready and fails the test, with the end of the server's log, if the server
// exits or does not answer in time.
func (p *process) waitReady(t testing.TB, ready func() bool) {
	t.Helper()
	if err := p.poll(ready); err != nil {
		p.kill()
		t.Fatalf("testenv: %s %v; last lines of %s:\n%s", p.name, err, p.logPath, lastLines(p.logPath, 20))
	}
}

// serve starts a server and waits until it answers. attempt picks fresh ports, records them in
// the caller's struct and returns the command and its readiness check; it is called again (at
// most three times in all) when the server exits because its port was taken after FreePort.
func serve(t testing.TB, name, logPath string, attempt func() (*exec.Cmd, func() bool)) *process {
	t.Helper()
	for try := 1; ; try++ {
		cmd, ready := attempt()
		p := start(t, name, cmd, logPath)
		err := p.poll(ready)
		if err == nil {
			return p
		}
		p.kill()
		if try < 3 && errors.Is(err, errExited) && portTaken(logPath) {
			os.Truncate(logPath, 0)
			continue
		}
		t.Fatalf("testenv: %s %v; last lines of %s:\n%s", name, err, logPath, lastLines(logPath, 20))
	}
}

// portTaken reports whether a server's log says its address was in use. The wording differs:
// fake-gcs-server and mariadbd print "address already in use", node "EADDRINUSE", MinIO
// "Specified port is already in use".
func portTaken(logPath string) bool {
	b, _ := os.ReadFile(logPath)
	s := strings.ToLower(string(b))
	return strings.Contains(s, "already in use") || strings.Contains(s, "eaddrinuse")
}

// lastLines returns the end of a log for a failure message.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// plainHTTP is for readiness checks and bucket creation: no proxy from the environment, no kept
// connections to a server that is about to be killed, and a bound on a server that accepts but
// never answers.
var plainHTTP = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	Timeout:   10 * time.Second,
}

// httpReady returns a readiness check that GETs url and accepts status, or any answer when
// status is 0.
func httpReady(url string, status int) func() bool { return httpStatus(plainHTTP, url, status) }

// httpStatus returns a readiness check that GETs url with client and accepts status, or any
// answer when status is 0.
func httpStatus(client *http.Client, url string, status int) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return status == 0 || resp.StatusCode == status
	}
}

// uniqueName returns a name valid as an S3 bucket, a GCS bucket and an Azure container (lowercase
// letters, digits and hyphens, 3 to 63 characters), unique within this test process.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nameSeq.Add(1))
}

var nameSeq atomic.Int64

// runOut runs cmd and returns its trimmed stdout, failing the test with stderr on error. Only
// stdout is returned so that warnings on stderr never pollute a value a test compares.
func runOut(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: %s: %v\n%s%s", strings.Join(cmd.Args, " "), err, stderr.String(), stdout.String())
	}
	return strings.TrimSpace(stdout.String())
}

// asUser builds a command that runs as the OS user name when the tests run as root, because
// PostgreSQL and MariaDB refuse to run as root; otherwise it runs as the current user. The switch is
// made by the kernel (SysProcAttr.Credential) rather than by runuser, which kills its child two
// seconds after being signalled and so would turn a clean shutdown into a crash. The command
// starts in "/", since the test's working directory may be a checkout that user cannot enter.
func asUser(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "/"
	if os.Geteuid() == 0 {
		u := lookupUser(t, name)
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Env = append(os.Environ(), "HOME="+u.HomeDir, "USER="+name, "LOGNAME="+name)
	}
	return cmd
}

// lookupUser finds an OS user that the server packages create.
func lookupUser(t testing.TB, name string) *user.User {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("testenv: OS user %s not found: run scripts/install-test-deps", name)
	}
	return u
}

// chownTo hands path to the OS user owner when running as root (a no-op otherwise, where the
// servers run as the current user anyway).
func chownTo(t testing.TB, owner, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u := lookupUser(t, owner)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatalf("testenv: chown %s to %s: %v", path, owner, err)
	}
}

// ownedDir makes a fresh 0700 directory owned by the OS user owner and removes it on cleanup.
// As root it lives directly in /tmp: t.TempDir is root's and 0700, so the server's user could not
// reach anything inside it, and $TMPDIR may be just as private.
func ownedDir(t testing.TB, owner, prefix string) string {
	t.Helper()
	parent := ""
	if os.Geteuid() == 0 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	chownTo(t, owner, dir)
	return dir
}
