package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMissIsQuiet: most restore_command calls ask for files that are not there (the next segment,
// the next timeline's .history), so a miss exits 1 with at most one line, at info level or below,
// saying "not in the archive" and never an error or a warning (HAZARDS.md 9; WAL-G #1328 logged
// them as errors). On a standby the second call is answered by the recorded miss, and is as quiet.
// The prefetch bound is configuration: --prefetch 129 exits 200 where 128 is accepted.
func TestMissIsQuiet(t *testing.T) {
	for _, mk := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) {
			tg.env = append(slices.Clone(tg.env), "WALSHIP_LOG_LEVEL=info")
			for _, mode := range []string{"archive recovery", "standby"} {
				data := t.TempDir()
				os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
				if mode == "standby" {
					os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
				}
				fetch := func(name string, args ...string) (int, string) {
					return run(t, tg, data, append(append([]string{"wal-fetch", "--retry-for", "2s"}, args...), name, "pg_wal/RECOVERYXLOG")...)
				}
				for _, name := range []string{"000000010000000000000042", "00000002.history"} {
					for _, args := range [][]string{nil, nil, {"--prefetch", "128"}} { // twice: the second may be a recorded miss
						code, out := fetch(name, args...)
						if code != 1 {
							t.Errorf("%s, %s %q: exit %d, want 1 (not in the archive): %s", mode, name, args, code, out)
						}
						if err := quietMiss(out); err != "" {
							t.Errorf("%s, %s %q: %s:\n%s", mode, name, args, err, out)
						}
						if _, err := os.Stat(filepath.Join(data, "pg_wal", "RECOVERYXLOG")); !os.IsNotExist(err) {
							t.Errorf("%s, %s: a miss left a file at %%p", mode, name)
						}
					}
					code, out := fetch(name, "--prefetch", "129")
					if code != 200 || !strings.Contains(out, "--prefetch 129") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
						t.Errorf("%s, %s --prefetch 129: exit %d, %q; want 200 and one line naming --prefetch 129", mode, name, code, out)
					}
				}
				if left, _ := os.ReadDir(filepath.Join(data, "pg_wal")); len(left) != 0 {
					t.Errorf("%s: misses left files in pg_wal: %v", mode, left)
				}
			}
		})
	}
}

// quietMiss returns why out is not the output of a quiet miss, or "" if it is: at most one line,
// at info level or below, saying "not in the archive", with no error or warning in it.
func quietMiss(out string) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	if strings.Contains(out, "\n") {
		return "more than one line"
	}
	if !strings.Contains(out, "not in the archive") {
		return `the line does not say "not in the archive"`
	}
	if !strings.Contains(out, "level=INFO") && !strings.Contains(out, "level=DEBUG") {
		return "not at info level or below"
	}
	for _, bad := range []string{"error", "ERROR", "level=ERROR", "WARN"} {
		if strings.Contains(out, bad) {
			return "it contains " + bad
		}
	}
	return ""
}
