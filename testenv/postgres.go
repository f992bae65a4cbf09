package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PGBinDir is where PostgreSQL 15's server binaries live on Debian.
const PGBinDir = "/usr/lib/postgresql/15/bin"

// PostgresOptions configure a cluster.
type PostgresOptions struct {
	// Conf lines are appended to postgresql.auto.conf (later lines win).
	Conf []string
	// Env is added to the server's environment; archive and restore commands inherit it.
	Env []string
	// InitArgs are extra initdb arguments.
	InitArgs []string
}

// Postgres is a PostgreSQL cluster run as the postgres OS user.
type Postgres struct {
	DataDir   string
	SocketDir string
	Port      int
	env       []string
	logPath   string
}

// osUser wraps a command so it runs as the named OS user when the tests run as root (PostgreSQL
// and MariaDB refuse to run as root); otherwise as the current user. It starts in "/", since the
// test's own directory may be one that user cannot enter (a 0700 checkout).
func osUser(name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", name, "--"}, args...)...)
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.Dir = "/"
	return cmd
}

func lookupIDs(t testing.TB, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("testenv: OS user %s missing: install the server package (scripts/install-test-deps)", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// ownedDir makes a fresh directory under /tmp owned by an OS user (t.TempDir is root-only).
func ownedDir(t testing.TB, owner, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		uid, gid := lookupIDs(t, owner)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o700)
	return dir
}

// PostgresOwnedDir is an empty directory the postgres user owns (a data directory, an archive).
func PostgresOwnedDir(t testing.TB) string { return ownedDir(t, "postgres", "walship-pg-") }

// ChownPostgres hands a file made by the test to the postgres user.
func ChownPostgres(t testing.TB, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	uid, gid := lookupIDs(t, "postgres")
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// CopyDataDir copies a data directory (a base backup) as the postgres user.
func CopyDataDir(t testing.TB, src, dst string) {
	t.Helper()
	runOut(t, osUser("postgres", "cp", "-a", src+"/.", dst))
}

// StartPostgres initialises a new cluster and starts it.
func StartPostgres(t testing.TB, o PostgresOptions) *Postgres {
	t.Helper()
	dir := PostgresOwnedDir(t)
	data := filepath.Join(dir, "data")
	args := append([]string{filepath.Join(bin(t, filepath.Join(PGBinDir, "initdb"))), "-D", data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"}, o.InitArgs...)
	runOut(t, osUser("postgres", args...))
	p := NewPostgresFromDataDir(t, data, o)
	p.Start(t)
	return p
}

// NewPostgresFromDataDir configures an existing data directory (a copy of a base backup) with a
// free port and its own socket directory. It does not start it.
func NewPostgresFromDataDir(t testing.TB, dataDir string, o PostgresOptions) *Postgres {
	t.Helper()
	p := &Postgres{DataDir: dataDir, SocketDir: PostgresOwnedDir(t), Port: FreePort(t), env: o.Env}
	p.logPath = filepath.Join(p.SocketDir, "postgres.log")
	p.AppendConf(t, append([]string{
		fmt.Sprintf("port = %d", p.Port),
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("unix_socket_directories = '%s'", p.SocketDir),
		"fsync = on",
		"logging_collector = off",
		"log_min_messages = warning",
		"log_line_prefix = '%m [%p] '",
	}, o.Conf...)...)
	t.Cleanup(func() { p.pgctl("-m", "immediate", "-w", "stop").Run() })
	return p
}

// AppendConf appends lines to postgresql.auto.conf, which overrides postgresql.conf.
func (p *Postgres) AppendConf(t testing.TB, lines ...string) {
	t.Helper()
	path := filepath.Join(p.DataDir, "postgresql.auto.conf")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, strings.Join(lines, "\n"))
	ChownPostgres(t, path)
}

func (p *Postgres) pgctl(args ...string) *exec.Cmd {
	full := append([]string{"env"}, p.env...)
	full = append(full, filepath.Join(PGBinDir, "pg_ctl"), "-D", p.DataDir, "-l", p.logPath)
	return osUser("postgres", append(full, args...)...)
}

// Start starts the server and waits until it accepts connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("-w", "-t", "180", "start").CombinedOutput(); err != nil {
		t.Fatalf("testenv: pg_ctl start %s: %v\n%s\n%s", p.DataDir, err, out, lastLines(p.logPath, 30))
	}
}

// StartNoWait starts the server without waiting (a recovery expected to fail).
func (p *Postgres) StartNoWait(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("-W", "start").CombinedOutput(); err != nil {
		t.Fatalf("testenv: pg_ctl start: %v\n%s", err, out)
	}
}

// Stop shuts the server down cleanly (fast mode).
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("-m", "fast", "-w", "-t", "120", "stop").CombinedOutput(); err != nil {
		t.Fatalf("testenv: pg_ctl stop: %v\n%s", err, out)
	}
}

// Kill stops the server immediately, as a crash would.
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	p.pgctl("-m", "immediate", "-w", "stop").Run()
}

// Psql runs one statement and returns its unaligned, tuples-only output.
func (p *Postgres) Psql(t testing.TB, sql string) string {
	t.Helper()
	out, err := p.psql(sql)
	if err != nil {
		t.Fatalf("testenv: psql %q: %v\n%s", sql, err, lastLines(p.logPath, 20))
	}
	return out
}

func (p *Postgres) psql(sql string) (string, error) {
	cmd := osUser("postgres", filepath.Join(PGBinDir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
		"-h", p.SocketDir, "-p", strconv.Itoa(p.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// WaitFor polls sql until it returns want; errors (a server still starting) count as not yet.
func (p *Postgres) WaitFor(t testing.TB, sql, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got string
	var err error
	for time.Now().Before(deadline) {
		if got, err = p.psql(sql); err == nil && got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("testenv: %q returned %q (err %v), want %q within %s\n%s", sql, got, err, want, timeout, lastLines(p.logPath, 30))
}

// RunAs runs a PostgreSQL client program (pgbench, pg_basebackup…) as postgres against this
// server and returns its output.
func (p *Postgres) RunAs(t testing.TB, name string, args ...string) string {
	t.Helper()
	full := []string{"env", "PGHOST=" + p.SocketDir, "PGPORT=" + strconv.Itoa(p.Port), "PGUSER=postgres",
		filepath.Join(PGBinDir, name)}
	return runOut(t, osUser("postgres", append(full, args...)...))
}

// Log returns the server log.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}
