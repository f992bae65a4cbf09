package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PGBinDir is where Debian installs PostgreSQL 15's programs; none of them is on PATH.
const PGBinDir = "/usr/lib/postgresql/15/bin"

// pgStartTimeout bounds pg_ctl start. It is longer than readyTimeout because a cluster restored
// from a base backup accepts connections only once it has replayed enough WAL to be consistent.
const pgStartTimeout = 3 * time.Minute

// PostgresOptions configure a cluster. The zero value with Init set is an initialised cluster on a
// free port.
type PostgresOptions struct {
	// Init runs initdb. StartPostgres sets it when DataDir is empty.
	Init bool
	// DataDir is an existing data directory owned by postgres (a restored base backup) to use
	// instead of a fresh one. With Init it must be empty.
	DataDir string
	// DataChecksums initialises with --data-checksums, which PostgreSQL 15 leaves off.
	DataChecksums bool
	// InitArgs are further initdb arguments (--wal-segsize=1).
	InitArgs []string
	// Conf lines go after the ones this package writes, so they win.
	Conf []string
	// Env is added to the server's environment; archive_command and restore_command inherit it.
	Env []string
	// Port is the TCP port; 0 picks a free one.
	Port int
	// BinDir holds the PostgreSQL programs; empty means PGBinDir.
	BinDir string
}

// Postgres is a PostgreSQL cluster run as the postgres OS user through pg_ctl. Clients connect over
// TCP on 127.0.0.1:Port or over the Unix socket in SocketDir, without a password.
type Postgres struct {
	BinDir    string
	DataDir   string
	SocketDir string // also holds the server log
	Port      int

	env      []string
	logPath  string
	autoPort bool // Port was picked here, so a new one may be picked if it is taken
}

// StartPostgres initialises a cluster (unless o.DataDir names one), starts it and waits until it
// accepts connections.
func StartPostgres(t testing.TB, o PostgresOptions) *Postgres {
	t.Helper()
	if o.DataDir == "" {
		o.Init = true
	}
	p := NewPostgres(t, o)
	p.Start(t)
	return p
}

// NewPostgres prepares a cluster without starting it: runs initdb if o.Init, then writes the
// port, the socket directory and o.Conf into postgresql.auto.conf. On cleanup the server is stopped
// at once and the directories made here are removed.
func NewPostgres(t testing.TB, o PostgresOptions) *Postgres {
	t.Helper()
	if o.BinDir == "" {
		o.BinDir = PGBinDir
	}
	bin(t, filepath.Join(o.BinDir, "pg_ctl"))
	if !o.Init && o.DataDir == "" {
		t.Fatalf("testenv: NewPostgres needs Init or a DataDir")
	}
	base := ownedDir(t, "postgres", "walship-pg-")
	p := &Postgres{BinDir: o.BinDir, DataDir: o.DataDir, SocketDir: base, Port: o.Port,
		env: o.Env, logPath: filepath.Join(base, "postgres.log"), autoPort: o.Port == 0}
	if p.DataDir == "" {
		p.DataDir = filepath.Join(base, "data")
	}
	if p.autoPort {
		p.Port = FreePort(t)
	}
	if o.Init {
		initdb := bin(t, filepath.Join(o.BinDir, "initdb"))
		// --no-sync: a test cluster that loses power is not worth the seconds of fsync.
		args := []string{initdb, "-D", p.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8",
			"--no-sync", "--no-instructions"}
		if o.DataChecksums {
			args = append(args, "--data-checksums")
		}
		runOut(t, asUser(t, "postgres", append(args, o.InitArgs...)...))
	}
	if _, err := os.Stat(filepath.Join(p.DataDir, "PG_VERSION")); err != nil {
		t.Fatalf("testenv: %s is not a PostgreSQL data directory: %v", p.DataDir, err)
	}
	p.AppendConf(t, append([]string{
		fmt.Sprintf("port = %d", p.Port),
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("unix_socket_directories = '%s'", p.SocketDir),
		"fsync = on", // the archiver's durability is what the tests check
		"logging_collector = off",
		"log_line_prefix = '%m [%p] '",
	}, o.Conf...)...)
	t.Cleanup(func() { p.pgctl(t, "-m", "immediate", "-w", "stop").Run() })
	return p
}

// NewPostgresFromDataDir prepares an existing data directory (a restored base backup) to run on
// its own port and socket directory, without starting it.
func NewPostgresFromDataDir(t testing.TB, dataDir string, o PostgresOptions) *Postgres {
	t.Helper()
	o.DataDir, o.Init = dataDir, false
	return NewPostgres(t, o)
}

// EmptyDataDir is an empty 0700 directory owned by postgres, removed on cleanup: a target for
// pg_basebackup -D or a copy of one.
func EmptyDataDir(t testing.TB) string {
	t.Helper()
	return ownedDir(t, "postgres", "walship-pgdata-")
}

// PostgresOwnedDir is an empty 0700 directory owned by postgres, removed on cleanup, for anything
// the server writes to: a data directory, a local archive, a spool.
func PostgresOwnedDir(t testing.TB) string {
	t.Helper()
	return ownedDir(t, "postgres", "walship-pg-")
}

// ChownPostgres hands a file the test wrote (standby.signal, a config) to the postgres user.
func ChownPostgres(t testing.TB, path string) {
	t.Helper()
	chownTo(t, "postgres", path)
}

// CopyDataDir copies a data directory as the postgres user, keeping modes, into dst (which must
// exist), so that one base backup can be restored several times.
func CopyDataDir(t testing.TB, src, dst string) {
	t.Helper()
	runOut(t, asUser(t, "postgres", "cp", "-a", src+"/.", dst))
}

// AppendConf appends lines to postgresql.auto.conf, which PostgreSQL reads after postgresql.conf,
// so a later line overrides an earlier one. It takes effect on the next start or reload.
func (p *Postgres) AppendConf(t testing.TB, lines ...string) {
	t.Helper()
	path := filepath.Join(p.DataDir, "postgresql.auto.conf")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	_, err = fmt.Fprintln(f, strings.Join(lines, "\n"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("testenv: write %s: %v", path, err)
	}
	ChownPostgres(t, path)
}

// pgctl builds a pg_ctl command run as postgres with o.Env added, so the postmaster it starts and
// every archive_command below it see the variables.
func (p *Postgres) pgctl(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cmd := asUser(t, "postgres", append([]string{filepath.Join(p.BinDir, "pg_ctl"), "-D", p.DataDir, "-l", p.logPath}, args...)...)
	cmd.Env = append(cmd.Environ(), p.env...)
	return cmd
}

// Start starts the server and waits until it accepts connections; for a cluster in recovery,
// until it is consistent (hot standby) or recovery has ended, and fails the test if the server
// stops instead. A port taken since it was picked is replaced by a free one.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	for try := 1; ; try++ {
		mark := logSize(p.logPath)
		out, err := p.pgctl(t, "-w", "-t", strconv.Itoa(int(pgStartTimeout.Seconds())), "start").CombinedOutput()
		if err == nil {
			return
		}
		if p.autoPort && try < 3 && strings.Contains(logSince(p.logPath, mark), "Address already in use") {
			p.Port = FreePort(t)
			p.AppendConf(t, fmt.Sprintf("port = %d", p.Port))
			continue
		}
		t.Fatalf("testenv: pg_ctl start %s: %v\n%s\nlast lines of %s:\n%s", p.DataDir, err,
			strings.TrimSpace(string(out)), p.logPath, lastLines(p.logPath, 20))
	}
}

// StartNoWait starts the server and returns at once, for a recovery that is expected to fail or
// to pause; the test then watches Log or polls with WaitFor.
func (p *Postgres) StartNoWait(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl(t, "-W", "start").CombinedOutput(); err != nil {
		t.Fatalf("testenv: pg_ctl start %s: %v\n%s", p.DataDir, err, out)
	}
}

// Stop shuts the server down cleanly (fast mode: sessions are cancelled, a shutdown checkpoint is
// written, and the last WAL segment is handed to archive_command).
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl(t, "-m", "fast", "-w", "-t", "120", "stop").CombinedOutput(); err != nil {
		t.Fatalf("testenv: pg_ctl stop %s: %v\n%s\nlast lines of %s:\n%s", p.DataDir, err,
			strings.TrimSpace(string(out)), p.logPath, lastLines(p.logPath, 20))
	}
}

// Kill stops the server in immediate mode, as a crash would: the next start runs crash recovery.
// A server that is not running is left as it is.
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	out, err := p.pgctl(t, "-m", "immediate", "-w", "stop").CombinedOutput()
	if err != nil {
		if _, serr := os.Stat(filepath.Join(p.DataDir, "postmaster.pid")); serr == nil {
			t.Fatalf("testenv: pg_ctl stop -m immediate %s: %v\n%s", p.DataDir, err, out)
		}
	}
}

// ConnString is a libpq URL for the server over TCP.
func (p *Postgres) ConnString() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
}

// Psql runs sql as the postgres superuser and returns its unaligned, tuples-only output, trimmed.
// An error fails the test with psql's message.
func (p *Postgres) Psql(t testing.TB, sql string) string {
	t.Helper()
	out, err := p.psql(t, sql)
	if err != nil {
		t.Fatalf("testenv: psql %q: %v", sql, err)
	}
	return out
}

func (p *Postgres) psql(t testing.TB, sql string) (string, error) {
	t.Helper()
	cmd := asUser(t, "postgres", filepath.Join(p.BinDir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
		"-h", p.SocketDir, "-p", strconv.Itoa(p.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// WaitFor polls sql until its output is want, and fails at once if the server stops meanwhile.
// Errors count as "not yet", since the server may be
// starting or still in recovery; the last output and error are in the failure message.
func (p *Postgres) WaitFor(t testing.TB, sql, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var downSince time.Time
	for {
		got, err := p.psql(t, sql)
		if err == nil && got == want {
			return
		}
		// A server that has stopped (a failed recovery) will never answer: say so at once rather
		// than at the deadline. The pid file may lag a moment behind StartNoWait, hence the grace.
		if _, serr := os.Stat(filepath.Join(p.DataDir, "postmaster.pid")); serr == nil {
			downSince = time.Time{}
		} else if downSince.IsZero() {
			downSince = time.Now()
		} else if time.Since(downSince) > 3*time.Second {
			t.Fatalf("testenv: %q: the server is not running (error: %v)\nlast lines of %s:\n%s",
				sql, err, p.logPath, lastLines(p.logPath, 20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %q gave %q (error: %v), want %q within %s\nlast lines of %s:\n%s",
				sql, got, err, want, timeout, p.logPath, lastLines(p.logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RunAs runs one of the PostgreSQL programs (pg_basebackup, pgbench, pg_controldata…) from BinDir
// as the postgres user, with PGHOST, PGPORT and PGUSER pointing at this server, and returns its
// trimmed stdout. A name containing a slash is run as given.
func (p *Postgres) RunAs(t testing.TB, name string, args ...string) string {
	t.Helper()
	if !strings.Contains(name, "/") {
		name = filepath.Join(p.BinDir, name)
	}
	cmd := asUser(t, "postgres", append([]string{name}, args...)...)
	cmd.Env = append(cmd.Environ(), "PGHOST="+p.SocketDir, "PGPORT="+strconv.Itoa(p.Port), "PGUSER=postgres")
	return runOut(t, cmd)
}

// Log returns the server log so far.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// logSize and logSince let Start read only what one start attempt logged.
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return string(b)
	}
	return string(b[off:])
}
