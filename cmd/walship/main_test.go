package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage/file"
	"github.com/walship/walship/walfile"
)

func runArgs(env map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestCLIUsage(t *testing.T) {
	cases := []struct {
		args    []string
		code    int
		stdout  string
		stderr  string
		oneLine bool
	}{
		{[]string{"--help"}, 0, "Usage: walship COMMAND", "", false},
		{[]string{"help", "wal-push"}, 0, "Usage: walship wal-push", "", false},
		{[]string{"wal-fetch", "--help"}, 0, "Exit 0 restored", "", false},
		{[]string{"version"}, 0, "walship ", "", false},
		{[]string{"--version"}, 0, "walship ", "", false},
		{nil, 2, "", "Usage: walship COMMAND", false},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, true},
		{[]string{"help", "frobnicate"}, 2, "", `unknown command "frobnicate"`, true},
		{[]string{"check", "--bogus"}, 2, "", "flag provided but not defined: -bogus", true},
		{[]string{"check"}, 2, "", "no storage given: set --storage or WALSHIP_STORAGE", true},
		{[]string{"check", "--log-level", "loud", "--storage", "file:///tmp"}, 2, "", "--log-level", true},
		{[]string{"wal-push"}, 2, "", "want 1 argument(s), got 0", true},
		{[]string{"wal-push", "--parallel", "0", "--storage", "file:///tmp", "x"}, 2, "", "--parallel 0", true},
		{[]string{"wal-push", "--compression", "brotli", "--storage", "file:///tmp", "x"}, 2, "", "unknown compression", true},
		{[]string{"wal-push", "--storage", "ftp://x", "pg_wal/000000010000000000000001"}, 2, "", `unknown scheme "ftp"`, true},
		// %p is relative to the data directory; anything that escapes it is refused (exit 2).
		// Paths and storage that do not exist, so that a regression cannot archive a real file.
		{[]string{"wal-push", "--storage", "file:///nonexistent-walship", "/nonexistent-walship/pg_wal/000000010000000000000001"}, 2, "", "is absolute", true},
		{[]string{"wal-push", "--storage", "file:///nonexistent-walship", "pg_wal/../../000000010000000000000001"}, 2, "", "contains '..'", true},
		{[]string{"wal-push", "--storage", "file:///nonexistent-walship", "pg_wal/000000010000000000000001\x00"}, 2, "", "NUL byte", true},
		{[]string{"wal-push", "--storage", "file:///nonexistent-walship", "pg_wal/" + strings.Repeat("0", 5000)}, 2, "", "too long", true},
		// restore_command: anything but "not found" must not exit 1-125.
		{[]string{"wal-fetch", "x"}, 200, "", "want 2 argument(s)", true},
		{[]string{"wal-fetch", "--storage", "file:///nonexistent-walship", "000000010000000000000001", "/nonexistent-walship/pg_wal/RECOVERYXLOG"}, 200, "", "is absolute", true},
		{[]string{"wal-fetch", "--storage", "file:///nonexistent-walship", "000000010000000000000001", "../pg_wal/RECOVERYXLOG"}, 200, "", "contains '..'", true},
		{[]string{"wal-fetch", "--storage", "file:///nonexistent-walship", "000000010000000000000001", "pg_wal/RECOVERYXLOG\x00"}, 200, "", "NUL byte", true},
		{[]string{"wal-fetch", "--storage", "file:///nonexistent-walship", "000000010000000000000001", "pg_wal/" + strings.Repeat("0", 5000)}, 200, "", "too long", true},
		{[]string{"wal-fetch", "--storage", "file:///nonexistent-walship", "../../etc/passwd", "pg_wal/RECOVERYXLOG"}, 200, "", "not a WAL segment", true},
		{[]string{"wal-fetch", "--nope", "a", "b"}, 200, "", "flag provided but not defined", true},
		{[]string{"wal-fetch", "000000010000000000000001", "pg_wal/RECOVERYXLOG"}, 200, "", "no storage given", true},
	}
	for _, c := range cases {
		code, out, errs := runArgs(nil, c.args...)
		if code != c.code || !strings.Contains(out, c.stdout) || !strings.Contains(errs, c.stderr) {
			t.Errorf("walship %.200q: exit %d, stdout %q, stderr %.300q; want exit %d, stdout ~%q, stderr ~%q",
				c.args, code, out, errs, c.code, c.stdout, c.stderr)
		}
		if c.oneLine && strings.Count(strings.TrimRight(errs, "\n"), "\n") != 0 {
			t.Errorf("walship %q: error is not one line: %q", c.args, errs)
		}
	}
}

func TestCLICheckAndRoundTrip(t *testing.T) {
	archive := t.TempDir()
	env := map[string]string{"WALSHIP_STORAGE": "file://" + archive}
	if code, out, errs := runArgs(env, "check"); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("check: %d %q %q", code, out, errs)
	}
	// PostgreSQL runs both commands in the data directory, with %p relative to it.
	data := t.TempDir()
	waltest.WriteControl(t, data, waltest.SystemID)
	t.Chdir(data)
	os.MkdirAll("pg_wal", 0o700)
	os.WriteFile(filepath.Join("pg_wal", "00000002.history"), []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
	if code, _, errs := runArgs(env, "wal-push", "pg_wal/00000002.history"); code != 0 {
		t.Fatalf("wal-push history: %d %s", code, errs)
	}
	dest := "pg_wal/RECOVERYHISTORY"
	if code, _, errs := runArgs(env, "wal-fetch", "00000002.history", dest); code != 0 {
		t.Fatalf("wal-fetch history: %d %s", code, errs)
	}
	if b, _ := os.ReadFile(dest); !strings.Contains(string(b), "0/3000000") {
		t.Fatalf("restored history: %q", b)
	}
	if code, _, _ := runArgs(env, "wal-fetch", "00000003.history", dest); code != 1 {
		t.Fatalf("absent history: exit %d, want 1", code)
	}
	// An archive directory that disappeared (an unmounted volume) is not "not found".
	gone := map[string]string{"WALSHIP_STORAGE": "file://" + filepath.Join(archive, "unmounted")}
	if code, _, errs := runArgs(gone, "wal-fetch", "--retry-for", "1s", "00000003.history", dest); code != 200 {
		t.Fatalf("missing archive directory: exit %d (%s), want 200", code, errs)
	}
	os.WriteFile("standby.signal", nil, 0o600)
	if code, _, _ := runArgs(gone, "wal-fetch", "--retry-for", "1s", "00000003.history", dest); code != 1 {
		t.Fatalf("missing archive directory in standby mode: exit %d, want 1", code)
	}
	// A %p PostgreSQL could not have passed is a bad argument even on a standby, not "not found".
	if code, _, errs := runArgs(env, "wal-fetch", "00000002.history", filepath.Join(data, dest)); code != 200 {
		t.Fatalf("absolute %%p in standby mode: exit %d (%s), want 200", code, errs)
	}
}

// TestCLIMissTTL: on a standby, a miss is answered from the spool for --miss-ttl (default 30 s),
// so a file archived meanwhile is seen only after it; --miss-ttl 0 asks storage every time, and
// outside standby mode storage is always asked.
func TestCLIMissTTL(t *testing.T) {
	env := map[string]string{"WALSHIP_STORAGE": "file://" + t.TempDir()}
	primary := t.TempDir()
	waltest.WriteControl(t, primary, waltest.SystemID)
	os.MkdirAll(filepath.Join(primary, "pg_wal"), 0o700)
	os.WriteFile(filepath.Join(primary, "pg_wal", "00000002.history"), []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
	standby := t.TempDir()
	t.Chdir(standby)
	os.MkdirAll("pg_wal", 0o700)
	os.WriteFile("standby.signal", nil, 0o600)
	dest := "pg_wal/RECOVERYHISTORY"
	if code, _, errs := runArgs(env, "wal-fetch", "00000002.history", dest); code != 1 {
		t.Fatalf("absent history: exit %d (%s), want 1", code, errs)
	}
	t.Chdir(primary)
	if code, _, errs := runArgs(env, "wal-push", "pg_wal/00000002.history"); code != 0 {
		t.Fatalf("wal-push: %d %s", code, errs)
	}
	t.Chdir(standby)
	if code, _, errs := runArgs(env, "wal-fetch", "00000002.history", dest); code != 1 {
		t.Errorf("standby within the miss TTL: exit %d (%s), want 1 (the recorded miss)", code, errs)
	}
	if code, _, errs := runArgs(env, "wal-fetch", "--miss-ttl", "0", "00000002.history", dest); code != 0 {
		t.Errorf("standby with --miss-ttl 0: exit %d (%s), want 0", code, errs)
	}
	os.Remove("standby.signal")
	os.Remove(dest)
	if code, _, errs := runArgs(env, "wal-fetch", "00000002.history", dest); code != 0 {
		t.Errorf("archive recovery: exit %d (%s), want 0", code, errs)
	}
}

// TestCLIHeaderMismatchExit200: a stored segment whose WAL header says another segment than its
// name stops archive recovery (exit 200, "damaged") and never reaches %p.
func TestCLIHeaderMismatchExit200(t *testing.T) {
	dir := t.TempDir()
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	name := walfile.SegmentName(1, 3, 1<<20)
	var buf bytes.Buffer
	sum, _ := object.Encode(&buf, bytes.NewReader(waltest.Segment(1, 4, 1<<20, 42, 1)), object.DefaultOptions)
	key, _ := layout.WALKey(name)
	if err := st.Put(context.Background(), key, bytes.NewReader(buf.Bytes()), sum.Metadata()); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	os.MkdirAll("pg_wal", 0o700)
	env := map[string]string{"WALSHIP_STORAGE": "file://" + dir}
	code, _, errs := runArgs(env, "wal-fetch", "--prefetch", "0", name, "pg_wal/RECOVERYXLOG")
	if code != 200 || !strings.Contains(errs, "damaged") {
		t.Errorf("mismatched header: exit %d (%s), want 200 naming the damage", code, errs)
	}
	if _, err := os.Stat("pg_wal/RECOVERYXLOG"); !os.IsNotExist(err) {
		t.Errorf("the mismatched segment reached %%p")
	}
}

// TestCLIWalPushLazy: wal-push sets up the storage SDK only when it needs storage. With an AWS
// set-up that fails (a profile that does not exist), a call answered by a marker still exits 0,
// and a call that must upload exits 2 naming the problem, as a bad URL does.
func TestCLIWalPushLazy(t *testing.T) {
	archive := t.TempDir()
	data := t.TempDir()
	t.Chdir(data)
	waltest.WriteControl(t, data, waltest.SystemID)
	os.MkdirAll("pg_wal/archive_status", 0o700)
	seg := waltest.WriteSegment(t, "pg_wal", 1, 1, 1<<20, waltest.SystemID)
	if code, _, errs := runArgs(map[string]string{"WALSHIP_STORAGE": "file://" + archive}, "wal-push", seg); code != 0 {
		t.Fatalf("wal-push: %d %s", code, errs)
	}
	// The spool now vouches for the segment in the file archive; make it vouch for an S3 one.
	const s3URL = "s3://bucket/p?endpoint=http://127.0.0.1:1"
	for _, f := range []string{"walship/identity", "walship/archived/" + filepath.Base(seg)} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(f, bytes.ReplaceAll(b, []byte("file://"+archive), []byte("s3://bucket/p")), 0o600)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "config"))
	t.Setenv("AWS_PROFILE", "walship-no-such-profile")
	env := map[string]string{"WALSHIP_STORAGE": s3URL}
	if code, _, errs := runArgs(env, "wal-push", "--log-level", "debug", seg); code != 0 || !strings.Contains(errs, "marker") {
		t.Errorf("marker hit with a failing SDK set-up: exit %d (%s), want 0 without setting it up", code, errs)
	}
	seg2 := waltest.WriteSegment(t, "pg_wal", 1, 2, 1<<20, waltest.SystemID)
	code, _, errs := runArgs(env, "wal-push", "--parallel", "1", seg2)
	if code != 2 || !strings.Contains(errs, "walship-no-such-profile") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("upload with a failing SDK set-up: exit %d (%s), want 2 and one line naming the profile", code, errs)
	}
}

// TestCLIFetchConfigErrorsOnStandby: on a standby, where a storage failure exits 1 (PostgreSQL
// retries), bad configuration still exits 200 with one line: exit 1 would read as "not in the
// archive" and the standby would wait forever.
func TestCLIFetchConfigErrorsOnStandby(t *testing.T) {
	t.Chdir(t.TempDir())
	os.MkdirAll("pg_wal", 0o700)
	os.WriteFile("standby.signal", nil, 0o600)
	archive := "file://" + t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "config"))
	t.Setenv("AWS_PROFILE", "walship-no-such-profile")
	badKey := filepath.Join(t.TempDir(), "key")
	os.WriteFile(badKey, []byte("not an age identity\n"), 0o600)
	const name, dest = "000000010000000000000001", "pg_wal/RECOVERYXLOG"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--storage", ""}, "no storage given"},
		{[]string{"--storage", "ftp://x/y"}, `unknown scheme "ftp"`},
		{[]string{"--storage", "s3://b/p?endpont=http://x"}, `unknown option "endpont"`},
		{[]string{"--storage", archive, "--age-key-file", badKey}, "--age-key-file"},
		{[]string{"--storage", archive, "--age-key-file", "/nonexistent-walship/key"}, "--age-key-file"},
		{[]string{"--storage", archive, "--prefetch", "999"}, "--prefetch 999"},
		{[]string{"--storage", archive, "--miss-ttl", "-1s"}, "--miss-ttl"},
		{[]string{"--storage", "s3://b/p?endpoint=http://127.0.0.1:1"}, "walship-no-such-profile"},
	}
	for _, c := range cases {
		code, _, errs := runArgs(nil, append(append([]string{"wal-fetch"}, c.args...), name, dest)...)
		if code != 200 || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("standby, wal-fetch %q: exit %d, stderr %q; want 200 and one line containing %q", c.args, code, errs, c.want)
		}
	}
	// An archive that cannot be read is not configuration: the standby retries (exit 1).
	gone := "file://" + filepath.Join(t.TempDir(), "unmounted")
	if code, _, errs := runArgs(nil, "wal-fetch", "--storage", gone, "--retry-for", "1s", name, dest); code != 1 {
		t.Errorf("standby, unreadable archive: exit %d (%s), want 1", code, errs)
	}
}

// TestCLIBarePathStorage: a bare absolute path is the file backend (the default scheme), in the
// flag and the environment alike, and names the same archive as its file:// URL.
func TestCLIBarePathStorage(t *testing.T) {
	dir := t.TempDir()
	if code, out, errs := runArgs(nil, "check", "--storage", dir); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("check --storage %s: exit %d %q %q", dir, code, out, errs)
	}
	data := t.TempDir()
	waltest.WriteControl(t, data, waltest.SystemID)
	t.Chdir(data)
	os.MkdirAll("pg_wal/archive_status", 0o700)
	seg := waltest.WriteSegment(t, "pg_wal", 1, 1, 1<<20, waltest.SystemID)
	if code, _, errs := runArgs(map[string]string{"WALSHIP_STORAGE": dir}, "wal-push", seg); code != 0 {
		t.Fatalf("wal-push with WALSHIP_STORAGE=%s: exit %d %s", dir, code, errs)
	}
	if code, _, errs := runArgs(nil, "wal-fetch", "--storage", "file://"+dir, "--prefetch", "0", filepath.Base(seg), "pg_wal/RECOVERYXLOG"); code != 0 {
		t.Fatalf("wal-fetch from file://%s: exit %d %s", dir, code, errs)
	}
	for _, args := range [][]string{{"check", "--storage", ""}, {"wal-push", "--storage", "", seg}} {
		code, _, errs := runArgs(nil, args...)
		if code != 2 || !strings.Contains(errs, "--storage") || !strings.Contains(errs, "WALSHIP_STORAGE") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("walship %q: exit %d, stderr %q; want 2 and one line naming --storage and WALSHIP_STORAGE", args, code, errs)
		}
	}
}
