package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/testenv"
)

func keyFile(t *testing.T, ids ...*age.X25519Identity) string {
	dir := testenv.PostgresOwnedDir(t)
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, "walship.age")
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintln(&b, id.String())
	}
	os.WriteFile(p, []byte(b.String()), 0o600)
	testenv.ChownPostgres(t, p)
	return p
}

// TestEncryption: a primary archives with only the public key; a restore with the key file
// reaches the exact rows; a wrong or missing key and tampered ciphertext are refused before
// anything reaches %p; after a key rotation old and new objects are both readable.
func TestEncryption(t *testing.T) {
	oldKey, _ := age.GenerateX25519Identity()
	newKey, _ := age.GenerateX25519Identity()
	wrongKey, _ := age.GenerateX25519Identity()
	tg := fileTarget(t)
	tg.env = append(tg.env, "WALSHIP_AGE_RECIPIENTS="+oldKey.Recipient().String())
	pg := startPrimary(t, tg)
	backup := testenv.PostgresOwnedDir(t)
	pg.RunAs(t, "pg_basebackup", "-D", backup, "--wal-method=none", "--checkpoint=fast", "--no-sync")
	pg.Psql(t, "create table secret as select g, 'confidential-'||g as v from generate_series(1, 5000) g")
	first := switchAndWait(t, pg)

	// Rotation: new objects go to the new key; the key file holds both.
	pg.Stop(t)
	rotated := strings.Replace(strings.Join(tg.env, "\n"), oldKey.Recipient().String(), newKey.Recipient().String(), 1)
	tg.env = strings.Split(rotated, "\n")
	pg2 := testenv.NewPostgresFromDataDir(t, pg.DataDir, testenv.PostgresOptions{Conf: archiveConf(tg), Env: tg.env})
	pg2.Start(t)
	pg2.Psql(t, "insert into secret select g, 'after-rotation' from generate_series(1, 100) g")
	switchAndWait(t, pg2)

	both := keyFile(t, newKey, oldKey)
	restoreEnv := append(tg.env, "WALSHIP_AGE_KEY_FILE="+both)
	restored := restoreFrom(t, target{env: restoreEnv}, backup, "recovery_target_action = 'promote'")
	waitPromoted(t, restored)
	if got := restored.Psql(t, "select count(*) from secret"); got != "5100" {
		t.Fatalf("restore across a key rotation: %s rows, want 5100", got)
	}

	data := t.TempDir()
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	dest := filepath.Join(data, "pg_wal", "RECOVERYXLOG")
	fetch := func(env []string) (int, string) {
		os.WriteFile(dest, []byte("untouched"), 0o600)
		return run(t, target{env: env}, data, "wal-fetch", "--prefetch", "0", "--retry-for", "1s", first, "pg_wal/RECOVERYXLOG")
	}
	for name, env := range map[string][]string{
		"wrong key": append(tg.env, "WALSHIP_AGE_KEY_FILE="+keyFile(t, wrongKey)),
		"no key":    tg.env,
	} {
		code, out := fetch(env)
		got, _ := os.ReadFile(dest)
		if code != 200 || string(got) != "untouched" || !strings.Contains(out, "cannot decrypt") {
			t.Errorf("%s: exit %d, %%p changed=%v: %s", name, code, string(got) != "untouched", out)
		}
		if m, _ := filepath.Glob(filepath.Join(data, "pg_wal", ".*")); len(m) != 0 {
			t.Errorf("%s: temp files left: %v", name, m)
		}
	}
	st := tg.store(t)
	key, _ := layout.WALKey(first)
	damage(t, st, key, func(b []byte) []byte { b[len(b)/2] ^= 0x20; return b })
	if code, out := fetch(restoreEnv); code != 200 || !strings.Contains(out, "corrupt") {
		t.Errorf("tampered ciphertext: exit %d: %s", code, out)
	}
	code, out := run(t, target{env: restoreEnv}, data, "verify")
	if code != 1 || !strings.Contains(out, "CORRUPT "+first) || !strings.Contains(out, "1 failed") {
		t.Errorf("verify after tampering: exit %d:\n%s", code, out)
	}
}
