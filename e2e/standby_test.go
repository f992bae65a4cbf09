package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/testenv"
)

// TestStandbyRidesOutStorageDown: a real PostgreSQL standby (standby.signal, restore_command =
// walship, no streaming) loses its storage — MinIO behind toxiproxy, the proxy taken down so
// every connection is refused — while the primary keeps archiving directly. The standby must stay
// up in recovery with wal-fetch exiting 1 again and again (its "PostgreSQL will retry" line, never
// exit 200, which would stop the standby), and replay the missed WAL once storage is back.
func TestStandbyRidesOutStorageDown(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	tox := testenv.StartToxiproxy(t)
	listen := tox.Proxy(t, "s3", strings.TrimPrefix(srv.Endpoint, "http://"))
	creds := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_EC2_METADATA_DISABLED=true"}
	direct := fmt.Sprintf("s3://%s/standby?endpoint=%s&region=%s", bucket, srv.Endpoint, srv.Region)
	proxied := fmt.Sprintf("s3://%s/standby?endpoint=http://%s&region=%s", bucket, listen, srv.Region)
	dt := target{name: "direct", url: direct, env: append([]string{"WALSHIP_STORAGE=" + direct}, creds...)}
	pt := target{name: "proxied", url: proxied, env: append([]string{"WALSHIP_STORAGE=" + proxied}, creds...)}

	primary := startPrimary(t, dt)
	primary.Psql(t, "create table t (batch int, n int)")
	backup := testenv.PostgresOwnedDir(t)
	primary.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
	primary.Psql(t, "insert into t select 1, g from generate_series(1, 1000) g")
	switchAndWait(t, primary)

	sdir := testenv.PostgresOwnedDir(t)
	testenv.CopyDataDir(t, backup, sdir)
	os.WriteFile(filepath.Join(sdir, "standby.signal"), nil, 0o600)
	testenv.ChownPostgres(t, filepath.Join(sdir, "standby.signal"))
	standby := testenv.NewPostgresFromDataDir(t, sdir, testenv.PostgresOptions{Env: pt.env, Conf: []string{
		fmt.Sprintf("restore_command = '%s wal-fetch --retry-for 2s --miss-ttl 10s %%f %%p'", walship),
		"archive_mode = off", "hot_standby = on"}})
	standby.Start(t)
	standby.WaitFor(t, "select count(*) from t", "1000", 2*time.Minute)

	mark := len(standby.Log())
	if err := tox.SetEnabled("s3", false); err != nil {
		t.Fatal(err)
	}
	primary.Psql(t, "insert into t select 2, g from generate_series(1, 500) g")
	switchAndWait(t, primary)
	const retrying = "wal-fetch failed; PostgreSQL will retry"
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && strings.Count(standby.Log()[mark:], retrying) < 3 {
		time.Sleep(200 * time.Millisecond)
	}
	during := standby.Log()[mark:]
	if n := strings.Count(during, retrying); n < 3 {
		t.Fatalf("storage down: %d wal-fetch failures with exit 1 in 2 minutes, want at least 3; log:\n%s", n, tail(during, 30))
	}
	if strings.Contains(during, "exit code 200") || strings.Contains(during, "FATAL") {
		t.Fatalf("storage down: the standby stopped instead of retrying:\n%s", tail(during, 30))
	}
	if got := standby.Psql(t, "select pg_is_in_recovery()::text || ' ' || count(*) from t"); got != "true 1000" {
		t.Fatalf("storage down: standby says %q, want still in recovery with the 1000 rows it had", got)
	}

	if err := tox.SetEnabled("s3", true); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	standby.WaitFor(t, "select count(*) from t", "1500", 2*time.Minute)
	if got := standby.Psql(t, "select pg_is_in_recovery()"); got != "t" {
		t.Fatalf("after the outage the standby left recovery: %q", got)
	}
	t.Logf("%d wal-fetch calls failed with exit 1 while storage was down; caught up %s after it came back",
		strings.Count(during, retrying), time.Since(back).Round(time.Second))
}
