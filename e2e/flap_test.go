package e2e

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/testenv"
)

// TestArchiveWhileStorageFlaps: pgbench writes for 90 s with archive_command = walship while the
// path to MinIO (through toxiproxy) is down a third of the time, resets connections, times them
// out, stalls and throttles. Afterwards every segment is in storage and verifies, and a
// point-in-time restore to the end of the archive is exact.
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

	stop := make(chan struct{})
	var wg sync.WaitGroup
	faults := map[string]int{}
	wg.Add(1)
	go func() {
		defer wg.Done()
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
		for i := 0; ; i++ {
			select {
			case <-stop:
				tox.SetEnabled("s3", true)
				return
			case <-time.After(2 * time.Second):
			}
			switch i % 3 {
			case 0: // down
				tox.SetEnabled("s3", false)
				faults["down"]++
			case 1: // up, with a toxic
				tox.SetEnabled("s3", true)
				x := toxics[rng.IntN(len(toxics))]
				stream := []string{"upstream", "downstream"}[rng.IntN(2)]
				if err := tox.AddToxic("s3", "fault", x.typ, stream, x.attrs); err == nil {
					faults[x.typ+"/"+stream]++
				}
			case 2: // healthy
				tox.RemoveToxic("s3", "fault")
			}
		}
	}()
	pg.RunAs(t, "pgbench", "-n", "-c", "2", "-j", "2", "-T", "90", "postgres")
	close(stop)
	wg.Wait()
	tox.RemoveToxic("s3", "fault")

	rows := pg.Psql(t, "select count(*) from pgbench_history")
	balance := pg.Psql(t, "select sum(abalance) from pgbench_accounts")
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) && len(lastReady(pg)) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	last := switchAndWait(t, pg)
	stats := pg.Psql(t, "select archived_count || ' archived, ' || failed_count || ' archive_command failures' from pg_stat_archiver")
	n := verifyArchived(t, dt, pg)
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
	t.Logf("faults injected %v; PostgreSQL: %s (up to %s); segments in pg_wal verified against storage %d; %s; restore exact: %s rows; data lost 0, wrong successes 0",
		faults, stats, last, n, strings.TrimSpace(lastLine(out)), rows)
}

func lastReady(pg *testenv.Postgres) []string {
	m, _ := filepath.Glob(filepath.Join(pg.DataDir, "pg_wal", "archive_status", "*.ready"))
	return m
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
