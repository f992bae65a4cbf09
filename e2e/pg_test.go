package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/testenv"
	"github.com/walship/walship/walfile"
)

func startPrimary(t *testing.T, tg target) *testenv.Postgres {
	return testenv.StartPostgres(t, testenv.PostgresOptions{Conf: archiveConf(tg), Env: tg.env})
}

// verifyArchived checks that every segment still in pg_wal and marked done is in storage and
// decodes to the same bytes.
func verifyArchived(t *testing.T, tg target, pg *testenv.Postgres) int {
	t.Helper()
	st := tg.store(t)
	done, _ := filepath.Glob(filepath.Join(pg.DataDir, "pg_wal", "archive_status", "*.done"))
	n := 0
	for _, d := range done {
		name := strings.TrimSuffix(filepath.Base(d), ".done")
		if walfile.Classify(name) != walfile.Segment {
			continue
		}
		local, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", name))
		if err != nil {
			continue // recycled since
		}
		key, _ := layout.WALKey(name)
		rc, _, err := st.Get(context.Background(), key)
		if err != nil {
			t.Fatalf("%s marked done by PostgreSQL but not in %s: %v", name, tg.name, err)
		}
		var got bytes.Buffer
		_, err = object.Decode(&got, rc)
		rc.Close()
		if err != nil || !bytes.Equal(got.Bytes(), local) {
			t.Fatalf("%s in %s does not verify against pg_wal: %v", name, tg.name, err)
		}
		n++
	}
	return n
}

// TestArchiveAndPITR: a primary archives through walship under pgbench; a cluster restored from a
// base backup with wal-fetch reaches a target time with exact row counts.
func TestArchiveAndPITR(t *testing.T) {
	for _, mk := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) {
			pg := startPrimary(t, tg)
			pg.RunAs(t, "pgbench", "-i", "-q", "-s", "2", "postgres")
			backup := testenv.PostgresOwnedDir(t)
			pg.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
			pg.RunAs(t, "pgbench", "-n", "-c", "2", "-t", "300", "postgres")
			pg.Psql(t, "create table t (batch int, v text)")
			pg.Psql(t, "insert into t select 1, md5(g::text) from generate_series(1, 1000) g")
			switchAndWait(t, pg)
			pg.Psql(t, "insert into t select 2, md5(g::text) from generate_series(1, 500) g")
			target := pg.Psql(t, "select clock_timestamp()")
			pg.Psql(t, "insert into t select 3, md5(g::text) from generate_series(1, 700) g")
			switchAndWait(t, pg)
			pg.Psql(t, "insert into t select 4, md5(g::text) from generate_series(1, 300) g")
			switchAndWait(t, pg)
			if n := verifyArchived(t, tg, pg); n < 3 {
				t.Fatalf("only %d archived segments verified", n)
			}
			if f := pg.Psql(t, "select failed_count from pg_stat_archiver"); f != "0" {
				t.Errorf("archiver failures: %s\n%s", f, tail(pg.Log(), 20))
			}
			accounts := pg.Psql(t, "select sum(abalance) from pgbench_accounts")

			restored := restoreFrom(t, tg, backup, fmt.Sprintf("recovery_target_time = '%s'", target), "recovery_target_action = 'promote'")
			waitPromoted(t, restored)
			if got := restored.Psql(t, "select string_agg(batch || ':' || n, ',' order by batch) from (select batch, count(*) n from t group by batch) s"); got != "1:1000,2:500" {
				t.Fatalf("PITR to %s: batches %q, want 1:1000,2:500", target, got)
			}
			if got := restored.Psql(t, "select sum(abalance) from pgbench_accounts"); got != accounts {
				t.Fatalf("PITR: pgbench balance %s, want %s", got, accounts)
			}
		})
	}
}

// restoreFrom copies a base backup into a new data directory and starts it in archive recovery
// with walship as restore_command.
func restoreFrom(t *testing.T, tg target, backup string, conf ...string) *testenv.Postgres {
	t.Helper()
	dir := testenv.PostgresOwnedDir(t)
	testenv.CopyDataDir(t, backup, dir)
	os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
	testenv.ChownPostgres(t, filepath.Join(dir, "recovery.signal"))
	pg := testenv.NewPostgresFromDataDir(t, dir, testenv.PostgresOptions{Conf: restoreConf(conf...), Env: tg.env})
	pg.Start(t)
	return pg
}

// TestFailover, on file:// and on MinIO: a standby fed by wal-fetch (and streaming, as in
// production) is promoted; the new timeline's history and the old timeline's partial segment are
// archived; the old primary then archives late segments of its old timeline; a second restore to
// a time after the promotion follows the new timeline, and none of those late segments is ever
// served: walship's log shows each either never asked for or refused, and asked directly with the
// new timeline's history in pg_wal, wal-fetch refuses each with exit 1.
func TestFailover(t *testing.T) {
	for _, mk := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) { failover(t, tg) })
	}
}

func failover(t *testing.T, tg target) {
	primary := startPrimary(t, tg)
	primary.Psql(t, "create table t (who text, n int)")
	backup := testenv.PostgresOwnedDir(t)
	primary.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
	primary.Psql(t, "insert into t select 'before', g from generate_series(1, 1000) g")
	switchAndWait(t, primary)

	sdir := testenv.PostgresOwnedDir(t)
	testenv.CopyDataDir(t, backup, sdir)
	os.WriteFile(filepath.Join(sdir, "standby.signal"), nil, 0o600)
	testenv.ChownPostgres(t, filepath.Join(sdir, "standby.signal"))
	standby := testenv.NewPostgresFromDataDir(t, sdir, testenv.PostgresOptions{Env: tg.env, Conf: append(archiveConf(tg),
		fmt.Sprintf("restore_command = '%s wal-fetch %%f %%p'", walship), "hot_standby = on",
		fmt.Sprintf("primary_conninfo = 'host=%s port=%d user=postgres'", primary.SocketDir, primary.Port))})
	standby.Start(t)
	standby.WaitFor(t, "select count(*) from t", "1000", 2*time.Minute)
	// The standby replays the switched segment from the archive and only then connects for
	// streaming. Stopped before it does, the primary's last segment never reaches the standby,
	// whose recovery then ends on a segment boundary and leaves no .partial to archive. Once
	// streaming, the standby receives everything up to the primary's shutdown checkpoint.
	primary.WaitFor(t, "select count(*) from pg_stat_replication where state = 'streaming'", "1", 2*time.Minute)

	primary.Stop(t)
	standby.Psql(t, "select pg_promote()")
	waitPromoted(t, standby)
	standby.Psql(t, "insert into t select 'after', g from generate_series(1, 500) g")
	target := standby.Psql(t, "select clock_timestamp()")
	standby.Psql(t, "insert into t select 'late', g from generate_series(1, 10) g")
	switchAndWait(t, standby)

	st := tg.store(t)
	ctx := context.Background()
	if _, err := st.Stat(ctx, "pg/history/00000002.history"); err != nil {
		t.Fatalf("00000002.history not archived after promotion: %v", err)
	}
	var partials []string
	st.List(ctx, "pg/wal/00000001", func(i storage.Info) error {
		if strings.HasSuffix(i.Key, ".partial") {
			partials = append(partials, i.Key)
		}
		return nil
	})
	if len(partials) != 1 {
		t.Fatalf("want the old timeline's .partial archived, found %v\npg_wal: %v\narchive_status: %v\nlog:\n%s", partials,
			dirNames(filepath.Join(sdir, "pg_wal")), dirNames(filepath.Join(sdir, "pg_wal", "archive_status")), tail(standby.Log(), 40))
	}

	// The old primary comes back on timeline 1 and archives diverging WAL.
	before := timeline1Segments(t, st)
	primary.Start(t)
	primary.Psql(t, "insert into t select 'zombie', g from generate_series(1, 2000) g")
	switchAndWait(t, primary)
	switchAndWait(t, primary)
	primary.Stop(t)
	history, err := os.ReadFile(filepath.Join(sdir, "pg_wal", "00000002.history"))
	if err != nil {
		t.Fatal(err)
	}
	zombies := lateSegments(t, history, before, timeline1Segments(t, st))
	if len(zombies) == 0 {
		t.Fatal("the old primary archived no segment starting after the switch point; the test proves nothing")
	}

	debug := tg
	debug.env = append(slices.Clone(tg.env), "WALSHIP_LOG_LEVEL=debug")
	restored := restoreFrom(t, debug, backup, "recovery_target_timeline = 'latest'",
		fmt.Sprintf("recovery_target_time = '%s'", target), "recovery_target_action = 'promote'")
	waitPromoted(t, restored)
	got := restored.Psql(t, "select string_agg(who || ':' || n, ',' order by who) from (select who, count(*) n from t group by who) s")
	if got != "after:500,before:1000" {
		t.Fatalf("restore across the failover: %q, want after:500,before:1000 (no zombie rows)", got)
	}
	log := restored.Log()
	if !strings.Contains(log, "msg=restored") {
		t.Fatalf("no debug line of walship in the restored cluster's log; cannot tell what it served:\n%s", tail(log, 20))
	}
	refused := 0
	for _, z := range zombies {
		if regexp.MustCompile(`msg="?restored[^\n]* file=` + z).MatchString(log) {
			t.Errorf("the old primary's late segment %s was served to the restore", z)
		}
		if regexp.MustCompile(`msg="refused[^\n]* file=` + z).MatchString(log) {
			refused++
		}
	}
	// Asked for each late segment, with the new timeline's history restored into pg_wal as
	// PostgreSQL does, wal-fetch answers exit 1 (not there) and says why.
	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	os.WriteFile(filepath.Join(data, "pg_wal", "00000002.history"), history, 0o600)
	for _, z := range zombies {
		code, out := run(t, tg, data, "wal-fetch", "--prefetch", "0", z, "pg_wal/RECOVERYXLOG")
		if code != 1 || !strings.Contains(out, "old timeline") {
			t.Errorf("wal-fetch %s with 00000002.history in pg_wal: exit %d, %q; want 1 and a refusal", z, code, out)
		}
		if _, err := os.Stat(filepath.Join(data, "pg_wal", "RECOVERYXLOG")); err == nil {
			t.Fatalf("wal-fetch wrote the old primary's late segment %s to %%p", z)
		}
	}
	t.Logf("%s: %d late old-timeline segments %v; the restore asked for %d (refused), none served", tg.name, len(zombies), zombies, refused)
}

// timeline1Segments lists the timeline 1 segments in the archive.
func timeline1Segments(t *testing.T, st storage.Store) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := st.List(context.Background(), "pg/wal/00000001", func(i storage.Info) error {
		if name, ok := layout.WALName(i.Key); ok && walfile.Classify(name) == walfile.Segment {
			out[name] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lateSegments returns the segments in after but not before that start at or after the point
// where history says timeline 1 ended: the ones an old primary wrote after the failover.
func lateSegments(t *testing.T, history []byte, before, after map[string]bool) []string {
	t.Helper()
	entries, err := walfile.ParseHistory(history)
	if err != nil || len(entries) == 0 || entries[0].Timeline != 1 {
		t.Fatalf("00000002.history: %v %q", err, history)
	}
	var late []string
	for name := range after {
		_, segno, err := walfile.ParseSegment(name, 16<<20)
		if err == nil && !before[name] && walfile.LSN(segno*16<<20) >= entries[0].SwitchLSN {
			late = append(late, name)
		}
	}
	sort.Strings(late)
	return late
}

// TestDuplicateAndForeignPush drives wal-push directly on real segments, on file:// and MinIO:
// the same content again succeeds, different content fails naming both checksums, and a second
// cluster's segments and timeline history (checked with its real pg_control) are refused.
func TestDuplicateAndForeignPush(t *testing.T) {
	for _, mk := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) { duplicateAndForeign(t, tg) })
	}
}

func duplicateAndForeign(t *testing.T, tg target) {
	pg := startPrimary(t, tg)
	name := switchAndWait(t, pg)
	seg := filepath.Join(pg.DataDir, "pg_wal", name)
	work := t.TempDir()
	copyPath := filepath.Join(work, "pg_wal", name)
	os.MkdirAll(filepath.Dir(copyPath), 0o700)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(copyPath, data, 0o600)
	if code, out := run(t, tg, work, "wal-push", "pg_wal/"+name); code != 0 {
		t.Fatalf("identical re-push: exit %d: %s", code, out)
	} else if !strings.Contains(out, "identical") {
		t.Errorf("identical re-push should say so: %q", out)
	}
	data[20000] ^= 0xff
	os.WriteFile(copyPath, data, 0o600)
	code, out := run(t, tg, work, "wal-push", "--spool-dir", t.TempDir(), "pg_wal/"+name)
	if code != 1 || !strings.Contains(out, "archived xxh3") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Fatalf("different content: exit %d, output %q; want 1 and one line naming both checksums", code, out)
	}

	// A second cluster (another system identifier) pointed at the same archive is refused.
	other := testenv.StartPostgres(t, testenv.PostgresOptions{Conf: archiveConf(tg), Env: tg.env})
	other.Psql(t, "select pg_switch_wal()")
	other.Psql(t, "create table x(i int)")
	other.Psql(t, "select pg_switch_wal()")
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && !strings.Contains(other.Log(), "belongs to system") {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(other.Log(), "belongs to system") {
		t.Fatalf("foreign cluster's push not refused clearly; log:\n%s", tail(other.Log(), 20))
	}
	if f := other.Psql(t, "select failed_count > 0 and archived_count = 0 from pg_stat_archiver"); f != "t" {
		t.Fatalf("foreign cluster: archiver stats %s", other.Psql(t, "select * from pg_stat_archiver"))
	}
	// A timeline history has no WAL header: its system is read from the data directory's real
	// pg_control. The other cluster's is refused, the archive's own accepted.
	for _, c := range []struct {
		pg   *testenv.Postgres
		code int
	}{{other, 1}, {pg, 0}} {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "global"), 0o700)
		os.MkdirAll(filepath.Join(dir, "pg_wal"), 0o700)
		control, err := os.ReadFile(filepath.Join(c.pg.DataDir, "global", "pg_control"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "global", "pg_control"), control, 0o600)
		os.WriteFile(filepath.Join(dir, "pg_wal", "00000009.history"), []byte("8\t0/9000000\tno recovery target specified\n"), 0o600)
		code, out := run(t, tg, dir, "wal-push", "pg_wal/00000009.history")
		if code != c.code || (c.code == 1 && !strings.Contains(out, "belongs to system")) {
			t.Errorf("history pushed with %s's pg_control: exit %d, %q; want %d", c.pg.DataDir, code, out, c.code)
		}
	}
}

// TestFetchExitCodes checks the codes PostgreSQL sees for found, absent, corrupt and storage down,
// in standby and in archive-recovery mode.
func TestFetchExitCodes(t *testing.T) {
	tg := fileTarget(t)
	pg := startPrimary(t, tg)
	name := switchAndWait(t, pg)
	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	fetch := func(tg target, name string, args ...string) (int, string) {
		return run(t, tg, data, append(append([]string{"wal-fetch", "--prefetch", "0", "--retry-for", "2s"}, args...), name, "pg_wal/RECOVERYXLOG")...)
	}
	if code, out := fetch(tg, name); code != 0 {
		t.Fatalf("fetch archived segment: exit %d %s", code, out)
	}
	if code, _ := fetch(tg, "0000000100000000000000FF"); code != 1 {
		t.Errorf("absent segment: exit %d, want 1", code)
	}
	if code, _ := fetch(tg, "00000009.history"); code != 1 {
		t.Errorf("absent history: exit %d, want 1", code)
	}
	down := target{name: "down", url: "s3://bucket/x?endpoint=http://127.0.0.1:1", env: []string{
		"WALSHIP_STORAGE=s3://bucket/x?endpoint=http://127.0.0.1:1", "AWS_ACCESS_KEY_ID=a", "AWS_SECRET_ACCESS_KEY=b", "AWS_EC2_METADATA_DISABLED=true"}}
	os.Remove(filepath.Join(data, "pg_wal", "RECOVERYXLOG"))
	if code, out := fetch(down, name); code != 200 {
		t.Errorf("storage down in archive recovery: exit %d, want 200: %s", code, out)
	}
	os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
	if code, out := fetch(down, name); code != 1 {
		t.Errorf("storage down in standby mode: exit %d, want 1: %s", code, out)
	}
	os.Remove(filepath.Join(data, "standby.signal"))
	// Corrupt the stored object in place.
	key, _ := layout.WALKey(name)
	path := filepath.Join(strings.TrimPrefix(tg.url, "file://"), key)
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0x10
	os.WriteFile(path, b, 0o640)
	code, out := fetch(tg, name)
	if code != 200 || !strings.Contains(out, "corrupt") {
		t.Errorf("corrupt object: exit %d, want 200 naming the corruption: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(data, "pg_wal", "RECOVERYXLOG")); !os.IsNotExist(err) {
		t.Errorf("corrupt object was written to %%p")
	}
	if code, _ := run(t, tg, data, "wal-fetch", "--bogus", name, "pg_wal/RECOVERYXLOG"); code != 200 {
		t.Errorf("wal-fetch usage error: exit %d, want 200 (must not read as not-found)", code)
	}
}

// TestRecoveryStopsWhenStorageDown: PostgreSQL in archive recovery with an unreachable archive
// must stop, not promote with WAL missing.
func TestRecoveryStopsWhenStorageDown(t *testing.T) {
	tg := fileTarget(t)
	pg := startPrimary(t, tg)
	backup := testenv.PostgresOwnedDir(t)
	pg.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
	pg.Psql(t, "create table t as select g from generate_series(1, 100) g")
	switchAndWait(t, pg)
	down := target{name: "down", url: "s3://bucket/x?endpoint=http://127.0.0.1:1", env: []string{
		"WALSHIP_STORAGE=s3://bucket/x?endpoint=http://127.0.0.1:1", "AWS_ACCESS_KEY_ID=a", "AWS_SECRET_ACCESS_KEY=b",
		"AWS_EC2_METADATA_DISABLED=true"}}
	dir := testenv.PostgresOwnedDir(t)
	testenv.CopyDataDir(t, backup, dir)
	os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
	testenv.ChownPostgres(t, filepath.Join(dir, "recovery.signal"))
	conf := restoreConf()
	conf[0] = fmt.Sprintf("restore_command = '%s wal-fetch --retry-for 1s %%f %%p'", walship)
	r := testenv.NewPostgresFromDataDir(t, dir, testenv.PostgresOptions{Conf: conf, Env: down.env})
	r.StartNoWait(t)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && !strings.Contains(r.Log(), "was terminated by exit code 200") && !strings.Contains(r.Log(), "exit code 200") {
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(r.Log(), "exit code 200") {
		t.Fatalf("recovery did not stop on an unreachable archive; log:\n%s", tail(r.Log(), 30))
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err != nil {
		t.Fatalf("recovery.signal is gone: the cluster promoted with WAL missing")
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", "00000002.history")); err == nil {
		t.Fatalf("a new timeline was created: the cluster promoted with WAL missing")
	}
	if !strings.Contains(r.Log(), "FATAL") {
		t.Fatalf("recovery did not stop with a FATAL error:\n%s", tail(r.Log(), 20))
	}
}

// TestSmallSegments: a cluster with 1 MiB WAL segments archives and restores; nothing assumes
// 16 MiB.
func TestSmallSegments(t *testing.T) {
	tg := fileTarget(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Conf: archiveConf(tg), Env: tg.env, InitArgs: []string{"--wal-segsize=1"}})
	if got := pg.Psql(t, "show wal_segment_size"); got != "1MB" {
		t.Fatalf("wal_segment_size %s", got)
	}
	backup := testenv.PostgresOwnedDir(t)
	pg.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
	pg.Psql(t, "create table t as select g, md5(g::text) m from generate_series(1, 20000) g")
	switchAndWait(t, pg)
	if n := verifyArchived(t, tg, pg); n < 2 {
		t.Fatalf("only %d segments verified", n)
	}
	restored := restoreFrom(t, tg, backup, "recovery_target_action = 'promote'")
	waitPromoted(t, restored)
	if got := restored.Psql(t, "select count(*) from t"); got != "20000" {
		t.Fatalf("restored %s rows, want 20000", got)
	}
}

// dirNames lists the names in dir, for a failure message.
func dirNames(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
