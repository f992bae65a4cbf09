// Package e2e drives the real walship binary the way PostgreSQL does — as archive_command and
// restore_command of clusters started by testenv — against real storage servers.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/open"
	"github.com/walship/walship/testenv"
)

// walship is the binary under test, built once into a directory the postgres user can read.
var walship string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "walship-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	walship = filepath.Join(dir, "walship")
	build := exec.Command("bash", "../scripts/build", walship) // the binary as shipped
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build walship:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// target is an archive location with the environment walship needs to reach it.
type target struct {
	name string
	url  string
	env  []string
}

func (tg target) getenv(k string) string {
	for _, kv := range tg.env {
		if key, v, ok := strings.Cut(kv, "="); ok && key == k {
			return v
		}
	}
	return ""
}

// store opens the target from the test process, to inspect what walship wrote.
func (tg target) store(t *testing.T) storage.Store {
	t.Helper()
	for _, kv := range tg.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	st, err := open.Open(context.Background(), tg.url, open.Options{Getenv: tg.getenv})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// fileTarget is a file:// archive in a directory owned by postgres.
func fileTarget(t *testing.T) target {
	dir := testenv.PostgresOwnedDir(t)
	return target{name: "file", url: "file://" + dir, env: []string{"WALSHIP_STORAGE=file://" + dir}}
}

// s3Target is a bucket on a MinIO started for the test.
func s3Target(t *testing.T) target {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	url := fmt.Sprintf("s3://%s/archive?endpoint=%s&region=%s", bucket, srv.Endpoint, srv.Region)
	return target{name: "s3", url: url, env: []string{
		"WALSHIP_STORAGE=" + url,
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_EC2_METADATA_DISABLED=true",
	}}
}

// run runs walship with the target's environment as the postgres user would, returning the
// exit code and combined output.
func run(t *testing.T, tg target, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(walship, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), tg.env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("run walship %v: %v", args, err)
	}
	return 0, string(out)
}

func archiveConf(tg target) []string {
	return []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push %%p'", walship),
		"wal_level = replica",
		"max_wal_senders = 4",
		"archive_timeout = 0",
	}
}

func restoreConf(extra ...string) []string {
	return append([]string{
		fmt.Sprintf("restore_command = '%s wal-fetch %%f %%p'", walship),
		"archive_mode = off",
	}, extra...)
}

// switchAndWait writes a WAL record, forces a segment switch, and waits until PostgreSQL reports
// the segment that holds it archived; it returns that segment's name.
func switchAndWait(t *testing.T, pg *testenv.Postgres) string {
	t.Helper()
	name := switchSegment(t, pg)
	waitArchived(t, pg, name)
	return name
}

// switchSegment writes a WAL record and forces a segment switch, so PostgreSQL calls
// archive_command for the segment that holds the record; it returns that segment's name. The
// record matters: switching an empty segment is a no-op, and a test would wait for a segment
// that is never completed.
func switchSegment(t *testing.T, pg *testenv.Postgres) string {
	t.Helper()
	name := pg.Psql(t, "select pg_walfile_name(pg_logical_emit_message(false, 'walship-test', 'switch'))")
	pg.Psql(t, "select pg_switch_wal()")
	return name
}

// waitArchived waits (2 minutes at most) until PostgreSQL reports name, or a later segment,
// archived.
func waitArchived(t *testing.T, pg *testenv.Postgres, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		last := pg.Psql(t, "select coalesce(last_archived_wal, '') from pg_stat_archiver")
		if last >= name && len(last) == 24 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("segment %s not archived within 2 minutes; archiver: %s\nlog:\n%s", name,
		pg.Psql(t, "select * from pg_stat_archiver"), tail(pg.Log(), 30))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitPromoted polls until the restored cluster has left recovery.
func waitPromoted(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	pg.WaitFor(t, "select pg_is_in_recovery()", "f", 3*time.Minute)
}
