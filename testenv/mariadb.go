package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// MariaDBOptions configure a server.
type MariaDBOptions struct {
	// Args are extra mariadbd arguments.
	Args []string
}

// MariaDB is a MariaDB server run as the mysql OS user, with binary logging on.
type MariaDB struct {
	DataDir   string
	SocketDir string
	Port      int
	proc      *process
}

// StartMariaDB initialises a data directory and starts mariadbd on a free port.
func StartMariaDB(t testing.TB, o MariaDBOptions) *MariaDB {
	t.Helper()
	daemon := bin(t, "/usr/sbin/mariadbd")
	dir := ownedDir(t, "mysql", "walship-mariadb-")
	m := &MariaDB{DataDir: filepath.Join(dir, "data"), SocketDir: dir, Port: FreePort(t)}
	runOut(t, osUser("mysql", "mariadb-install-db", "--no-defaults", "--datadir="+m.DataDir,
		"--auth-root-authentication-method=normal", "--skip-test-db"))
	args := append([]string{daemon, "--no-defaults", "--datadir=" + m.DataDir, "--socket=" + m.socket(),
		"--port=" + strconv.Itoa(m.Port), "--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(dir, "mariadb.pid"),
		"--log-bin=" + filepath.Join(m.DataDir, "binlog"), "--server-id=1", "--binlog-format=ROW",
		"--log-error=" + filepath.Join(dir, "error.log")}, o.Args...)
	m.proc = start(t, "mariadbd", osUser("mysql", args...), filepath.Join(t.TempDir(), "mariadb.out"))
	m.proc.log = filepath.Join(dir, "error.log")
	m.proc.waitReady(t, func() bool {
		return exec.Command("mariadb-admin", "--no-defaults", "--socket="+m.socket(), "-uroot", "ping").Run() == nil
	})
	return m
}

func (m *MariaDB) socket() string { return filepath.Join(m.SocketDir, "mariadb.sock") }

// SQL runs statements and returns tab-separated output without column names.
func (m *MariaDB) SQL(t testing.TB, sql string) string {
	t.Helper()
	return runOut(t, exec.Command("mariadb", "--no-defaults", "--socket="+m.socket(), "-uroot", "-N", "-B", "-e", sql))
}

// DSN returns a go-sql-driver style address for the server over TCP.
func (m *MariaDB) DSN() string { return fmt.Sprintf("root@tcp(127.0.0.1:%d)/", m.Port) }

// Kill stops the server at once, as a crash would.
func (m *MariaDB) Kill() { m.proc.kill() }
