package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/storage"
)

// TestKillDuringPush kills wal-push with SIGKILL at random moments, many times, once pushing one
// file alone and once with ready neighbours (so --parallel pushes several and writes markers).
// After each kill: what was acknowledged (exit 0 for the requested file, a marker for the others)
// is stored and verifies, nothing damaged sits under a final name, and rerunning the pushes the
// way PostgreSQL would completes the work, with every file fetched back byte for byte.
func TestKillDuringPush(t *testing.T) {
	for _, mk := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) {
			pg, names := archivedCluster(t, tg, 4)
			src := map[string][]byte{}
			for _, n := range names {
				b, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", n))
				if err != nil {
					t.Fatal(err)
				}
				src[n] = b
			}
			t.Run("alone", func(t *testing.T) { killRounds(t, tg, names[:1], src, 25) })
			t.Run("with ready neighbours", func(t *testing.T) { killRounds(t, tg, names, src, 12) })
		})
	}
}

// killRounds runs the kill-and-rerun cycle rounds times for a pg_wal holding files (all marked
// ready), each round into a fresh archive, and reports the figures.
func killRounds(t *testing.T, tg target, files []string, src map[string][]byte, rounds int) {
	// Calibrate: kills are spread over 0-120% of a complete push, so they land before, during
	// and after the uploads.
	start := time.Now()
	if code, out := run(t, tg, walDirWith(t, files, src), pushArgs(freshURL(t, tg, "calibrate"), files[0])...); code != 0 {
		t.Fatalf("calibration push: %s", out)
	}
	full := time.Since(start)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	var fig figures
	var killed, exited, marked int
	for i := 0; i < rounds; i++ {
		url := freshURL(t, tg, fmt.Sprintf("kill%d", i))
		data := walDirWith(t, files, src)
		code, err := killPush(tg, data, url, files[0], time.Duration(rng.Int64N(int64(full)*12/10)))
		if err != nil {
			t.Fatal(err)
		}
		fig.faults++
		fig.ops++
		switch {
		case code < 0:
			killed++
		case code == 0:
			exited++
		default:
			t.Errorf("round %d: wal-push exited %d on its own before the kill", i, code)
		}
		st := (target{url: url, env: tg.env}).store(t)
		acked := markers(t, data)
		marked += len(acked)
		if code == 0 {
			acked = append(acked, files[0])
		}
		checkAfterKill(t, st, files, src, acked, &fig)
		rerun(t, tg, data, url, files, src, code == 0, &fig)
	}
	fig.note = fmt.Sprintf("%d file(s) per push, kills over 0-%s (a full push takes %s): %d landed mid-run, %d after exit 0; %d markers left by the killed pushes",
		len(files), (full * 12 / 10).Round(time.Millisecond), full.Round(time.Millisecond), killed, exited, marked)
	fig.report(t)
}

// killPush starts wal-push, sends SIGKILL after delay, and returns the exit code, or -1 when
// the kill ended it.
func killPush(tg target, data, url, file string, delay time.Duration) (int, error) {
	cmd := exec.Command(walship, pushArgs(url, file)...)
	cmd.Dir = data
	cmd.Env = append(os.Environ(), tg.env...)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	time.Sleep(delay)
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled():
		return -1, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	}
	return 0, err
}

// checkAfterKill: every acknowledged file is stored and verifies; any other file is either
// absent or stored intact, never truncated or damaged under its final name.
func checkAfterKill(t *testing.T, st storage.Store, files []string, src map[string][]byte, acked []string, fig *figures) {
	t.Helper()
	isAcked := map[string]bool{}
	for _, a := range acked {
		isAcked[a] = true
	}
	for _, f := range files {
		err := storedMatches(st, f, src[f])
		switch {
		case err == nil:
			fig.verified++
		case errors.Is(err, storage.ErrNotExist) && !isAcked[f]:
			// Not acknowledged, not stored: the rerun must push it.
		case f == files[0] && isAcked[f]:
			fig.wrong++
			t.Errorf("wal-push exited 0, but: %v", err)
		default:
			fig.lost++
			t.Errorf("after kill -9 (acknowledged by a marker: %v): %v", isAcked[f], err)
		}
	}
}

// rerun pushes every file in order the way PostgreSQL does after a crash (a file whose push
// exited 0 is marked done and not asked for again), then fetches each back into a fresh data
// directory and compares it with the source.
func rerun(t *testing.T, tg target, data, url string, files []string, src map[string][]byte, firstDone bool, fig *figures) {
	t.Helper()
	for i, f := range files {
		if i > 0 || !firstDone {
			code, out := run(t, tg, data, pushArgs(url, f)...)
			fig.ops++
			if code != 0 {
				t.Fatalf("the push of %s after the kill failed: %s", f, out)
			}
		}
		status := filepath.Join(data, "pg_wal", "archive_status", f)
		if err := os.Rename(status+".ready", status+".done"); err != nil {
			t.Fatal(err)
		}
	}
	st := (target{url: url, env: tg.env}).store(t)
	fetch := t.TempDir()
	os.MkdirAll(filepath.Join(fetch, "pg_wal"), 0o700)
	for _, f := range files {
		if err := storedMatches(st, f, src[f]); err != nil {
			fig.wrong++
			t.Errorf("after a successful rerun: %v", err)
		}
		code, out := run(t, tg, fetch, "wal-fetch", "--storage", url, "--prefetch", "0", f, "pg_wal/RECOVERYXLOG")
		fig.ops++
		got, _ := os.ReadFile(filepath.Join(fetch, "pg_wal", "RECOVERYXLOG"))
		switch {
		case code != 0:
			fig.lost++
			t.Errorf("fetch %s after the rerun: exit %d: %s", f, code, out)
		case string(got) != string(src[f]):
			fig.wrong++
			t.Errorf("fetch %s after the rerun: exit 0 with bytes that differ from the source", f)
		default:
			fig.verified++
		}
	}
}

func pushArgs(url, file string) []string {
	return []string{"wal-push", "--parallel", "4", "--storage", url, "pg_wal/" + file}
}

// walDirWith is a data directory whose pg_wal holds files, each marked ready as PostgreSQL
// leaves them for archive_command.
func walDirWith(t *testing.T, files []string, src map[string][]byte) string {
	t.Helper()
	data := t.TempDir()
	status := filepath.Join(data, "pg_wal", "archive_status")
	if err := os.MkdirAll(status, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(data, "pg_wal", f), src[f], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(status, f+".ready"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// freshURL is an empty archive next to tg's: another directory, or another prefix in the bucket.
func freshURL(t *testing.T, tg target, label string) string {
	if tg.name == "file" {
		dir := filepath.Join(t.TempDir(), label)
		os.MkdirAll(dir, 0o700)
		return "file://" + dir
	}
	return strings.Replace(tg.url, "/archive?", "/"+label+"?", 1)
}

// markers lists the files wal-push recorded as archived ahead of PostgreSQL's request, in the
// default spool (DATADIR/walship).
func markers(t *testing.T, data string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(data, "walship", "archived"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}
