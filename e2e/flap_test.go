package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/testenv"
	"github.com/walship/walship/walfile"
)

// TestArchiveWhileStorageFlaps: pgbench writes for 90 s with archive_command = walship while the
// path to MinIO (through toxiproxy) is down a third of the time, resets connections, times them
// out, stalls and throttles. While it runs, every file PostgreSQL marks archived must already be
// in storage and decode to its bytes in pg_wal; afterwards every segment since the base backup is
// in storage and verifies, and a point-in-time restore to the end of the archive is exact.
func TestArchiveWhileStorageFlaps(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	tox := testenv.StartToxiproxy(t)
	listen := tox.Proxy(t, "s3", strings.TrimPrefix(srv.Endpoint, "http://"))
	creds := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_EC2_METADATA_DISABLED=true"}
	flaky := fmt.Sprintf("s3://%s/flap?endpoint=http://%s", bucket, listen)
	direct := fmt.Sprintf("s3://%s/flap?endpoint=%s", bucket, srv.Endpoint)
	tg := target{name: "flaky", url: flaky, env: append([]string{"WALSHIP_STORAGE=" + flaky}, creds...)}
	dt := target{name: "direct", url: direct, env: append([]string{"WALSHIP_STORAGE=" + direct}, creds...)}

	pg := startPrimary(t, tg)
	pg.RunAs(t, "pgbench", "-i", "-q", "-s", "5", "postgres")
	backup := testenv.PostgresOwnedDir(t)
	pg.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")

	// One fault that is always felt, whatever the host's speed: with the proxy down, force a
	// segment switch and wait for that wal-push to retry or fail. The random flapping below may
	// or may not meet a push, depending on how fast pgbench fills segments here.
	feltDown := forcePushWhileDown(t, pg, tox, "s3")

	// The watcher reads storage directly, not through the flapping proxy.
	watch := newAckWatcher(dt.store(t), filepath.Join(pg.DataDir, "pg_wal"))
	stop, watchStop := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var faults map[string]int
	var faultErr error
	wg.Add(2)
	go func() { defer wg.Done(); faults, faultErr = flap(tox, "s3", stop) }()
	go func() { defer wg.Done(); watch.run(watchStop) }()
	pg.RunAs(t, "pgbench", "-n", "-c", "2", "-j", "2", "-T", "90", "postgres")
	close(stop)
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) && len(lastReady(pg)) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	rows := pg.Psql(t, "select count(*) from pgbench_history")
	balance := pg.Psql(t, "select sum(abalance) from pgbench_accounts")
	last := switchAndWait(t, pg)
	close(watchStop)
	wg.Wait()
	watch.scan()
	if faultErr != nil {
		t.Fatalf("fault injection: %v", faultErr)
	}
	archived, failed := archiverCounts(t, pg)
	// walship retries inside one call, so PostgreSQL may never see a failure: the retries it
	// logged (archive_command's stderr goes to the server log) show the faults were felt.
	retries := strings.Count(pg.Log(), "storage retry")
	if failed+retries == 0 {
		t.Errorf("the faults had no effect: no archive_command failure and no storage retry in %d calls", archived)
	}
	if _, _, err := walfile.ParseSegment(feltDown, 16<<20); err != nil || feltDown > last {
		t.Errorf("the segment pushed while the proxy was down (%q) is not a segment up to %s", feltDown, last)
	}
	missing := missingSince(t, dt.store(t), backup, last)
	code, out := run(t, dt, t.TempDir(), "verify")
	if code != 0 {
		t.Fatalf("verify after the flapping: %s", out)
	}
	restored := restoreFrom(t, dt, backup, "recovery_target_action = 'promote'")
	waitPromoted(t, restored)
	if got := restored.Psql(t, "select count(*) from pgbench_history"); got != rows {
		t.Fatalf("restore after the flapping: %s pgbench_history rows, want %s", got, rows)
	}
	if got := restored.Psql(t, "select sum(abalance) from pgbench_accounts"); got != balance {
		t.Fatalf("restore after the flapping: balance %s, want %s", got, balance)
	}
	for _, w := range watch.wrongAcks {
		t.Errorf("acknowledged by walship, but: %s", w)
	}
	for _, m := range missing {
		t.Errorf("segment %s (after the base backup, up to %s) is not in storage", m, last)
	}
	n := 0
	for _, v := range faults {
		n += v
	}
	figures{faults: n, ops: archived + failed, verified: watch.exact, lost: len(missing), wrong: len(watch.wrongAcks),
		note: fmt.Sprintf("faults %v; %d storage requests retried by walship, %d wal-push calls failed; %d acknowledged files verified only (recycled before comparing); %s; restore exact (%s rows, up to %s)",
			faults, retries, failed, watch.recycled, strings.TrimSpace(lastLine(out)), rows, last)}.report(t)
}

// forcePushWhileDown disables the proxy, switches to a new segment so that PostgreSQL calls
// wal-push for the one just closed, and waits until that push is seen to meet the outage: a
// "storage retry" in the server log or a failed archive_command. It then re-enables the proxy,
// waits for the segment to be archived, and returns its name. Nothing else writes meanwhile.
func forcePushWhileDown(t *testing.T, pg *testenv.Postgres, tox *testenv.Toxiproxy, proxy string) string {
	t.Helper()
	_, failedBefore := archiverCounts(t, pg)
	retriesBefore := strings.Count(pg.Log(), "storage retry")
	if err := tox.SetEnabled(proxy, false); err != nil {
		t.Fatalf("toxiproxy: disable %s: %v", proxy, err)
	}
	name := switchSegment(t, pg)
	deadline := time.Now().Add(2 * time.Minute)
	felt := false
	for !felt && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		_, failed := archiverCounts(t, pg)
		felt = failed > failedBefore || strings.Count(pg.Log(), "storage retry") > retriesBefore
	}
	if err := tox.SetEnabled(proxy, true); err != nil {
		t.Fatalf("toxiproxy: enable %s: %v", proxy, err)
	}
	if !felt {
		t.Fatalf("with the proxy down for 2 minutes, the push of %s neither retried nor failed; archiver: %s\nlog:\n%s",
			name, pg.Psql(t, "select * from pg_stat_archiver"), tail(pg.Log(), 30))
	}
	waitArchived(t, pg, name)
	return name
}

// flap cycles the proxy every 2 s until stop is closed: down, then up with one random toxic,
// then healthy. It returns what it injected, or the first toxiproxy error.
func flap(tox *testenv.Toxiproxy, proxy string, stop <-chan struct{}) (map[string]int, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	toxics := []struct {
		typ   string
		attrs map[string]int
	}{
		{"reset_peer", map[string]int{"timeout": 200}},
		{"timeout", map[string]int{"timeout": 1000}},
		{"latency", map[string]int{"latency": 1500, "jitter": 500}},
		{"bandwidth", map[string]int{"rate": 256}},
		{"limit_data", map[string]int{"bytes": 300000}},
	}
	faults := map[string]int{}
	toxic := false
	for i := 0; ; i++ {
		select {
		case <-stop:
			if toxic {
				if err := tox.RemoveToxic(proxy, "fault"); err != nil {
					return faults, err
				}
			}
			return faults, tox.SetEnabled(proxy, true)
		case <-time.After(2 * time.Second):
		}
		var err error
		switch i % 3 {
		case 0:
			if err = tox.SetEnabled(proxy, false); err == nil {
				faults["down"]++
			}
		case 1:
			if err = tox.SetEnabled(proxy, true); err != nil {
				break
			}
			x := toxics[rng.IntN(len(toxics))]
			stream := []string{"upstream", "downstream"}[rng.IntN(2)]
			if err = tox.AddToxic(proxy, "fault", x.typ, stream, x.attrs); err == nil {
				toxic = true
				faults[x.typ+"/"+stream]++
			}
		case 2:
			if err = tox.RemoveToxic(proxy, "fault"); err == nil {
				toxic = false
			}
		}
		if err != nil {
			return faults, err
		}
	}
}

// archiverCounts returns pg_stat_archiver's archived and failed counts: the wal-push calls that
// exited 0 and those that did not.
func archiverCounts(t *testing.T, pg *testenv.Postgres) (archived, failed int) {
	t.Helper()
	s := pg.Psql(t, "select archived_count || ' ' || failed_count from pg_stat_archiver")
	if _, err := fmt.Sscan(s, &archived, &failed); err != nil {
		t.Fatalf("pg_stat_archiver: %q: %v", s, err)
	}
	return archived, failed
}

// missingSince lists the segments from the base backup's start up to last that are not in
// storage: a restore from that backup needs every one of them.
func missingSince(t *testing.T, st storage.Store, backup, last string) []string {
	t.Helper()
	label, err := os.ReadFile(filepath.Join(backup, "backup_label"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`START WAL LOCATION: .* \(file ([0-9A-F]{24})\)`).FindSubmatch(label)
	if m == nil {
		t.Fatalf("no start segment in backup_label:\n%s", label)
	}
	const segSize = 16 << 20
	tli, from, err := walfile.ParseSegment(string(m[1]), segSize)
	if err != nil {
		t.Fatal(err)
	}
	_, to, err := walfile.ParseSegment(last, segSize)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for segno := from; segno <= to; segno++ {
		name := walfile.SegmentName(tli, segno, segSize)
		key, _ := layout.WALKey(name)
		if _, err := st.Stat(context.Background(), key); err != nil {
			missing = append(missing, name)
		}
	}
	return missing
}

func lastReady(pg *testenv.Postgres) []string {
	m, _ := filepath.Glob(filepath.Join(pg.DataDir, "pg_wal", "archive_status", "*.ready"))
	return m
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
