package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// MariaDB programs as Debian installs them.
const (
	mariadbd         = "/usr/sbin/mariadbd"
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
	mariadbClient    = "/usr/bin/mariadb"
	mariadbAdmin     = "/usr/bin/mariadb-admin"
)

// MariaDBOptions configure a server.
type MariaDBOptions struct {
	// Args are further mariadbd options, given after the defaults so they win.
	Args []string
}

// MariaDB is a MariaDB server run as the mysql OS user, with row-based binary logging to
// DataDir/binlog.NNNNNN. root connects without a password over Socket or TCP.
type MariaDB struct {
	DataDir   string
	SocketDir string // also holds the server log
	Socket    string
	Port      int

	args    []string
	logPath string
	tmpDir  string
	proc    *process
}

// StartMariaDB initialises a data directory, starts mariadbd on a free port and waits until it
// answers. On cleanup the server is killed and its directory removed.
func StartMariaDB(t testing.TB, o MariaDBOptions) *MariaDB {
	t.Helper()
	for _, p := range []string{mariadbd, mariadbInstallDB, mariadbClient, mariadbAdmin} {
		bin(t, p)
	}
	dir := ownedDir(t, "mysql", "walship-mariadb-")
	m := &MariaDB{DataDir: filepath.Join(dir, "data"), SocketDir: dir, Socket: filepath.Join(dir, "mariadb.sock"),
		args: o.Args, logPath: filepath.Join(dir, "mariadb.log")}
	// Temporary tables go to the instance's own directory: in the shared /tmp, a bootstrap's
	// "#sql-temptable-*" files were seen removed under it while other tests' servers started
	// ("Could not remove temporary table ... Unknown table 'mysql.tmp_user_sys'").
	m.tmpDir = filepath.Join(dir, "tmp")
	if err := os.Mkdir(m.tmpDir, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	chownTo(t, "mysql", m.tmpDir)
	// --no-defaults everywhere: /etc/mysql would otherwise point every program at the system
	// instance's socket and data directory.
	runOut(t, asUser(t, "mysql", mariadbInstallDB, "--no-defaults", "--datadir="+m.DataDir,
		"--tmpdir="+m.tmpDir, "--auth-root-authentication-method=normal", "--skip-test-db"))
	m.Start(t)
	return m
}

// Start starts mariadbd on the data directory, after Stop or Kill too, and waits until it answers
// a ping. It keeps Port unless that port has been taken meanwhile.
func (m *MariaDB) Start(t testing.TB) {
	t.Helper()
	if m.proc != nil && !m.proc.exited() {
		t.Fatalf("testenv: mariadbd is already running")
	}
	first := true
	m.proc = serve(t, "mariadbd", m.logPath, func() (*exec.Cmd, func() bool) {
		if !first || m.Port == 0 {
			m.Port = FreePort(t)
		}
		first = false
		args := append([]string{mariadbd, "--no-defaults",
			"--datadir=" + m.DataDir, "--tmpdir=" + m.tmpDir, "--socket=" + m.Socket, "--port=" + strconv.Itoa(m.Port),
			"--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(m.SocketDir, "mariadb.pid"),
			"--skip-name-resolve", "--log-bin=" + filepath.Join(m.DataDir, "binlog"),
			"--server-id=1", "--binlog-format=ROW"}, m.args...)
		return asUser(t, "mysql", args...), m.ping
	})
}

// ping reports whether the server answers on its socket.
func (m *MariaDB) ping() bool {
	return exec.Command(mariadbAdmin, "--no-defaults", "--socket="+m.Socket, "-uroot",
		"--connect-timeout=1", "ping").Run() == nil
}

// SQL runs statements as root and returns the tab-separated rows without column names, trimmed.
// An error fails the test with the client's message.
func (m *MariaDB) SQL(t testing.TB, sql string) string {
	t.Helper()
	return runOut(t, exec.Command(mariadbClient, "--no-defaults", "--socket="+m.Socket, "-uroot", "-N", "-B", "-e", sql))
}

// DSN is a go-sql-driver/mysql address for root over TCP.
func (m *MariaDB) DSN() string { return fmt.Sprintf("root@tcp(127.0.0.1:%d)/", m.Port) }

// Stop shuts the server down cleanly (SIGTERM), so the binary log is closed properly.
func (m *MariaDB) Stop(t testing.TB) {
	t.Helper()
	if !m.proc.stop(syscall.SIGTERM, time.Minute) {
		t.Fatalf("testenv: mariadbd did not stop within a minute of SIGTERM; last lines of %s:\n%s",
			m.logPath, lastLines(m.logPath, 20))
	}
}

// Kill stops the server at once, as a crash would: the last binary log is left unclosed.
func (m *MariaDB) Kill(t testing.TB) {
	t.Helper()
	m.proc.kill()
}
