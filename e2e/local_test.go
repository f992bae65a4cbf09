package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/walship/walship/testenv"
)

// TestLocalFaults: a full or read-only pg_wal during fetch, an unreadable file during push, and a
// spool deleted under a running prefetcher each give a clear error (or recover, with the exact
// bytes), and leave no half-written file.
func TestLocalFaults(t *testing.T) {
	tg := fileTarget(t)
	pg, names := archivedCluster(t, tg, 5)

	t.Run("disk full during fetch", func(t *testing.T) {
		data := t.TempDir()
		wal := filepath.Join(data, "pg_wal")
		os.MkdirAll(wal, 0o700)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", wal).CombinedOutput(); err != nil {
			t.Fatalf("mounting a 2 MiB tmpfs for the disk-full case needs root: %v %s", err, out)
		}
		defer exec.Command("umount", wal).Run()
		code, out := run(t, tg, data, "wal-fetch", "--prefetch", "0", "--retry-for", "1s", names[0], "pg_wal/RECOVERYXLOG")
		if code != 200 || !strings.Contains(out, "no space left on device") {
			t.Errorf("disk full: exit %d, want 200 naming the cause: %s", code, out)
		}
		if left, _ := os.ReadDir(wal); len(left) != 0 {
			t.Errorf("disk full: files left in pg_wal: %v", left)
		}
	})

	t.Run("read-only pg_wal during fetch", func(t *testing.T) {
		data := testenv.PostgresOwnedDir(t)
		os.Chmod(data, 0o755)
		wal := filepath.Join(data, "pg_wal")
		os.MkdirAll(wal, 0o500)
		testenv.ChownPostgres(t, wal)
		cmd := exec.Command("runuser", "-u", "postgres", "--", "env", "WALSHIP_STORAGE="+tg.url, walship,
			"wal-fetch", "--prefetch", "0", "--retry-for", "1s", "--spool-dir", filepath.Join(data, "spool"), names[0], "pg_wal/RECOVERYXLOG")
		cmd.Dir = data
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 200 || !strings.Contains(string(out), "permission denied") {
			t.Errorf("read-only pg_wal: exit %d, want 200 naming the cause: %s", cmd.ProcessState.ExitCode(), out)
		}
	})

	t.Run("unreadable file during push", func(t *testing.T) {
		data := testenv.PostgresOwnedDir(t)
		os.Chmod(data, 0o755)
		wal := filepath.Join(data, "pg_wal")
		os.MkdirAll(wal, 0o755)
		testenv.ChownPostgres(t, wal)
		b, _ := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", names[1]))
		p := filepath.Join(wal, names[1])
		os.WriteFile(p, b, 0o000)
		cmd := exec.Command("runuser", "-u", "postgres", "--", "env", "WALSHIP_STORAGE="+tg.url, walship, "wal-push", "pg_wal/"+names[1])
		cmd.Dir = data
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "permission denied") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("unreadable file: exit %d, want 1 and one line naming the cause: %s", cmd.ProcessState.ExitCode(), out)
		}
	})

	t.Run("spool deleted under a running prefetcher", func(t *testing.T) {
		data, slow := slowArchive(t, pg, names)
		spool := filepath.Join(data, "walship")
		caught := 0
		for i, n := range names {
			if code, out := run(t, slow, data, "wal-fetch", "--prefetch", "4", n, "pg_wal/RECOVERYXLOG"); code != 0 {
				t.Fatalf("fetch %d after the spool was deleted: %s", i, out)
			}
			got, _ := os.ReadFile(filepath.Join(data, "pg_wal", "RECOVERYXLOG"))
			if want, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", n)); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("fetch %d: restored bytes differ from the source (%v)", i, err)
			}
			// wal-fetch returns once it has started the prefetcher, whose requests take 300 ms.
			if len(prefetchers(spool)) > 0 {
				caught++
			}
			os.RemoveAll(spool)
		}
		// Not every call starts one: the spool is refilled once half of it has been served, and a
		// deleted spool may already have been refilled by a prefetcher that was starting.
		if caught < 2 {
			t.Errorf("a prefetcher was running at %d of %d deletions of the spool, want at least 2", caught, len(names))
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(prefetchers(spool)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if p := prefetchers(spool); len(p) > 0 {
			t.Fatalf("prefetchers %v still running 30 s after the spool was deleted", p)
		}
		left, _ := filepath.Glob(filepath.Join(data, "pg_wal", ".*"))
		tmp, _ := filepath.Glob(filepath.Join(spool, "prefetch", ".*-*"))
		if len(left)+len(tmp) != 0 {
			t.Errorf("half-written files left: %v %v", left, tmp)
		}
	})
}

// slowArchive pushes names from pg's pg_wal into a MinIO bucket and returns a data directory to
// fetch into with a target that reaches the bucket through toxiproxy with 300 ms of latency, so
// a prefetcher is still at work when wal-fetch returns (against a local archive it is done first).
func slowArchive(t *testing.T, pg *testenv.Postgres, names []string) (string, target) {
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	tox := testenv.StartToxiproxy(t)
	listen := tox.Proxy(t, "s3", strings.TrimPrefix(srv.Endpoint, "http://"))
	creds := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_EC2_METADATA_DISABLED=true"}
	direct := fmt.Sprintf("s3://%s/spool?endpoint=%s&region=%s", bucket, srv.Endpoint, srv.Region)
	slow := fmt.Sprintf("s3://%s/spool?endpoint=http://%s&region=%s", bucket, listen, srv.Region)
	push := t.TempDir()
	os.MkdirAll(filepath.Join(push, "pg_wal"), 0o700)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(push, "pg_wal", n), b, 0o600)
		if code, out := run(t, target{env: creds}, push, "wal-push", "--storage", direct, "pg_wal/"+n); code != 0 {
			t.Fatalf("push %s: %s", n, out)
		}
	}
	if err := tox.AddToxic("s3", "slow", "latency", "downstream", map[string]int{"latency": 300}); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	return data, target{url: slow, env: append([]string{"WALSHIP_STORAGE=" + slow}, creds...)}
}

// prefetchers returns the pids of wal-prefetch processes working on spool (wal-fetch starts
// them detached, so the test finds them in /proc).
func prefetchers(spool string) []string {
	var pids []string
	for pid := range detached("wal-prefetch", spool) {
		pids = append(pids, pid)
	}
	return pids
}

// detached returns, by pid, the command lines of running walship processes of subcommand sub
// working on spool.
func detached(sub, spool string) map[string][]string {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	found := map[string][]string{}
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && args[1] == sub && slices.Contains(args, spool) {
			found[filepath.Base(filepath.Dir(c))] = args
		}
	}
	return found
}

// TestNoSecretsInOutput runs walship through successes and failures with S3 and Azure
// credentials and an age key file in its environment — archiving encrypted objects, restoring a
// cluster from them with wal-fetch (prefetcher included), wrong and malformed keys — and greps
// everything it and PostgreSQL printed for the secrets.
func TestNoSecretsInOutput(t *testing.T) {
	s3tg := s3Target(t)
	ageKey, _ := age.GenerateX25519Identity()
	s3tg.env = append(s3tg.env, "WALSHIP_AGE_KEY_FILE="+keyFile(t, ageKey), "WALSHIP_LOG_LEVEL=debug")
	az := testenv.Azurite(t)
	container := az.NewContainer(t)
	aztg := target{name: "azure", url: "azblob://" + container + "/p", env: []string{
		"WALSHIP_STORAGE=azblob://" + container + "/p", "AZURE_STORAGE_CONNECTION_STRING=" + az.ConnectionString, "WALSHIP_LOG_LEVEL=debug"}}
	// A key file with one character changed (a letter's case: bech32 forbids mixed case), so it
	// fails to parse while still holding nearly all of the real key: the error must not quote it.
	malformed := ageKey.String()[:30] + flipCase(ageKey.String()[30:31]) + ageKey.String()[31:]
	secrets := []string{s3tg.getenv("AWS_SECRET_ACCESS_KEY"), az.Key, ageKey.String(),
		strings.TrimPrefix(ageKey.String(), "AGE-SECRET-KEY-1"), malformed}
	var all strings.Builder

	pg := startPrimary(t, s3tg)
	backup := testenv.PostgresOwnedDir(t)
	pg.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
	pg.Psql(t, "create table t as select g from generate_series(1, 20000) g")
	names := []string{switchAndWait(t, pg)}
	restored := restoreFrom(t, s3tg, backup, "recovery_target_action = 'promote'")
	waitPromoted(t, restored)
	if got := restored.Psql(t, "select count(*) from t"); got != "20000" {
		t.Fatalf("encrypted restore: %s rows, want 20000", got)
	}
	prefetchLog, _ := os.ReadFile(filepath.Join(restored.DataDir, "walship", "prefetch", "prefetch.log"))
	pushLog, _ := os.ReadFile(filepath.Join(pg.DataDir, "walship", "pushing", "push-ahead.log"))
	all.WriteString(pg.Log() + restored.Log() + string(prefetchLog) + string(pushLog))

	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	wrongSecret := target{env: append(append([]string{}, s3tg.env...), "AWS_SECRET_ACCESS_KEY=wrong-"+secrets[0])}
	other, _ := age.GenerateX25519Identity()
	wrongKey := target{env: append(append([]string{}, s3tg.env...), "WALSHIP_AGE_KEY_FILE="+keyFile(t, other))}
	badKeyFile := filepath.Join(t.TempDir(), "bad.age")
	os.WriteFile(badKeyFile, []byte(malformed+"\n"), 0o600)
	badKey := target{env: append(append([]string{}, s3tg.env...), "WALSHIP_AGE_KEY_FILE="+badKeyFile)}
	for _, c := range []struct {
		tg   target
		args []string
	}{
		{s3tg, []string{"--log-level", "debug", "wal-fetch", names[0], "pg_wal/RECOVERYXLOG"}},
		{s3tg, []string{"wal-fetch", "--log-level", "debug", "--prefetch", "0", names[0], "pg_wal/RECOVERYXLOG"}},
		{s3tg, []string{"verify", "--log-level", "debug"}},
		{wrongKey, []string{"wal-fetch", "--prefetch", "0", names[0], "pg_wal/RECOVERYXLOG"}},
		{badKey, []string{"wal-fetch", "--prefetch", "0", names[0], "pg_wal/RECOVERYXLOG"}},
		{badKey, []string{"verify"}},
		{s3tg, []string{"check", "--storage", strings.Replace(s3tg.url, "s3://", "s3://nosuchbucket-", 1)}},
		{wrongSecret, []string{"check", "--storage", s3tg.url}},
		{wrongSecret, []string{"wal-fetch", "--retry-for", "1s", "--prefetch", "0", names[0], "pg_wal/RECOVERYXLOG"}},
		{aztg, []string{"check", "--log-level", "debug"}},
		{aztg, []string{"check", "--storage", "azblob://nosuchcontainer/p"}},
		{target{env: []string{"AZURE_STORAGE_CONNECTION_STRING=" + strings.Replace(az.ConnectionString, az.Key, "d3Jvbmc=", 1) + "x"}},
			[]string{"check", "--storage", "azblob://" + container + "/p"}},
	} {
		_, out := run(t, c.tg, data, c.args...)
		all.WriteString(out)
	}
	upper := strings.ToUpper(all.String())
	for i, s := range secrets {
		if strings.Contains(upper, strings.ToUpper(s)) {
			t.Fatalf("secret %d of %d appeared in walship's output or PostgreSQL's log", i+1, len(secrets))
		}
	}
	t.Logf("%d bytes of output and logs checked for %d secrets: none found", all.Len(), len(secrets))
}

// flipCase changes the case of an ASCII letter and turns anything else into another character.
func flipCase(s string) string {
	if u := strings.ToUpper(s); u != s {
		return u
	}
	if l := strings.ToLower(s); l != s {
		return l
	}
	return "Q"
}

// TestTLS: against an HTTPS store with a private CA, certificate verification is on by default
// (a clear x509 error, nothing stored) and ca_file= makes it work with verification still on.
func TestTLS(t *testing.T) {
	srv, ca := testenv.MinIOTLS(t)
	bucket := srv.NewBucket(t)
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CA_BUNDLE="}
	base := "s3://" + bucket + "/tls?endpoint=" + srv.Endpoint
	dir := t.TempDir()
	code, out := run(t, target{env: env}, dir, "check", "--storage", base)
	if code != 1 || !strings.Contains(out, "certificate") {
		t.Fatalf("self-signed server without ca_file: exit %d, want 1 with a certificate error: %s", code, out)
	}
	if code, out := run(t, target{env: env}, dir, "check", "--storage", base+"&ca_file="+ca); code != 0 {
		t.Fatalf("with ca_file: exit %d: %s", code, out)
	}
	other := filepath.Join(dir, "other.crt")
	os.WriteFile(other, []byte("not a certificate"), 0o644)
	if code, out := run(t, target{env: env}, dir, "check", "--storage", base+"&ca_file="+other); code != 2 || !strings.Contains(out, "no PEM certificate") {
		t.Fatalf("ca_file without a certificate: exit %d: %s", code, out)
	}
}
