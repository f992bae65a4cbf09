package e2e

import (
	"bytes"
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
	damage(t, st, key, func(b []byte) []byte { b[agePayloadMiddle(t, b)] ^= 0x20; return b })
	// PostgreSQL unlinks %p before it calls restore_command; an earlier file there must survive too.
	for _, before := range []string{"", "untouched"} {
		os.RemoveAll(filepath.Join(data, "pg_wal"))
		os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
		if before != "" {
			os.WriteFile(dest, []byte(before), 0o600)
		}
		code, out := run(t, target{env: restoreEnv}, data, "wal-fetch", "--prefetch", "0", "--retry-for", "1s", first, "pg_wal/RECOVERYXLOG")
		if code != 200 || !strings.Contains(out, "corrupt") {
			t.Errorf("tampered ciphertext, %%p %q before: exit %d, want 200 naming the damage: %s", before, code, out)
		}
		got, err := os.ReadFile(dest)
		switch {
		case before == "" && !os.IsNotExist(err):
			t.Errorf("tampered ciphertext: a file appeared at %%p (%d bytes, err %v)", len(got), err)
		case before != "" && string(got) != before:
			t.Errorf("tampered ciphertext: %%p changed: %d bytes, want %q", len(got), before)
		}
		var left []string
		entries, _ := os.ReadDir(filepath.Join(data, "pg_wal"))
		for _, e := range entries {
			if e.Name() != "RECOVERYXLOG" || before == "" {
				left = append(left, e.Name())
			}
		}
		if len(left) != 0 {
			t.Errorf("tampered ciphertext, %%p %q before: files left in pg_wal: %v", before, left)
		}
	}
	code, out := run(t, target{env: restoreEnv}, data, "verify")
	if code != 1 || !strings.Contains(out, "CORRUPT "+first) || !strings.Contains(out, "1 failed") {
		t.Errorf("verify after tampering: exit %d:\n%s", code, out)
	}
}

// agePayloadMiddle returns the offset of a byte in the middle of the age payload of an encrypted
// frame: past the 8-byte frame header, the age header (which ends with its "---" MAC line) and
// the 16-byte stream nonce, and before the 36-byte frame trailer. A flip there damages only
// ciphertext, which must then fail to authenticate.
func agePayloadMiddle(t *testing.T, frame []byte) int {
	t.Helper()
	const frameHeader, nonce, trailer = 8, 16, 36
	if len(frame) < frameHeader || frame[6]&0x01 == 0 || !bytes.HasPrefix(frame[frameHeader:], []byte("age-encryption.org/v1\n")) {
		t.Fatalf("stored object is not an encrypted frame (%d bytes)", len(frame))
	}
	mac := bytes.Index(frame, []byte("\n--- "))
	if mac < 0 {
		t.Fatal("stored object: age header has no MAC line")
	}
	end := bytes.IndexByte(frame[mac+1:], '\n')
	if end < 0 {
		t.Fatal("stored object: age header's MAC line does not end")
	}
	start, stop := mac+1+end+1+nonce, len(frame)-trailer
	if start >= stop {
		t.Fatalf("stored object: no age payload between %d and %d", start, stop)
	}
	return start + (stop-start)/2
}
