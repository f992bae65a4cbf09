package fastfetch

import (
	"path"
	"testing"
)

// TestParse: fastfetch takes the calls PostgreSQL's archive recovery makes, read as the full
// command's flag set reads them, and leaves every other one to the full command.
func TestParse(t *testing.T) {
	const seg = "000000010000000000000003"
	env := map[string]string{"WALSHIP_STORAGE": "file:///archive"}
	getenv := func(extra map[string]string) func(string) string {
		return func(k string) string {
			if v, ok := extra[k]; ok {
				return v
			}
			return env[k]
		}
	}
	for _, c := range []struct {
		args  []string
		env   map[string]string
		spool string // "" when the call is left to the full command
	}{
		{[]string{"wal-fetch", seg, Dest}, nil, "walship"},
		{[]string{"wal-fetch", "--spool-dir", "/s", seg, Dest}, nil, "/s"},
		{[]string{"wal-fetch", "-spool-dir=/s", "--log-level=WARN", "--storage", "s3://b/p", seg, Dest}, nil, "/s"},
		{[]string{"wal-fetch", seg, Dest}, map[string]string{"WALSHIP_SPOOL_DIR": "/e", "WALSHIP_PREFETCH": "128"}, "/e"},
		{[]string{"wal-fetch", seg, Dest}, map[string]string{"WALSHIP_PREFETCH": "not a number"}, "walship"}, // read as 8
		{[]string{"wal-fetch", "--storage", "", seg, Dest}, nil, ""},
		{[]string{"wal-fetch", seg, Dest}, map[string]string{"WALSHIP_STORAGE": ""}, ""},
		{[]string{"wal-fetch", seg, Dest}, map[string]string{"WALSHIP_LOG_LEVEL": "debug"}, ""},
		{[]string{"wal-fetch", "--log-level", "", seg, Dest}, nil, ""},
		{[]string{"wal-fetch", "--log-level", "info+2", seg, Dest}, nil, ""},
		{[]string{"wal-fetch", seg, Dest}, map[string]string{"WALSHIP_PREFETCH": "0"}, ""},
		{[]string{"wal-fetch", seg, Dest}, map[string]string{"WALSHIP_PREFETCH": "129"}, ""},
		{[]string{"wal-fetch", "--prefetch", "8", seg, Dest}, nil, ""},
		{[]string{"wal-fetch", "--age-key-file", "k", seg, Dest}, nil, ""},
		{[]string{"wal-fetch", "-h"}, nil, ""},
		{[]string{"wal-fetch", "--", seg, Dest}, nil, ""},
		{[]string{"wal-fetch", "--spool-dir"}, nil, ""},
		{[]string{"wal-fetch", seg, Dest, "extra"}, nil, ""},
		{[]string{"wal-fetch", seg, "pg_wal/" + seg}, nil, ""},
		{[]string{"wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY"}, nil, ""},
		{[]string{"wal-fetch", seg + ".partial", Dest}, nil, ""},
		{[]string{"wal-push", "pg_wal/" + seg}, nil, ""},
		{nil, nil, ""},
	} {
		got, ok := parse(c.args, getenv(c.env))
		want := c.spool
		if want == "walship" {
			want = path.Join(DataDir(Dest), "walship")
		}
		switch {
		case want == "" && ok:
			t.Errorf("%q %v: served, want it left to the full command", c.args, c.env)
		case want != "" && (!ok || got != call{name: seg, dest: Dest, spool: want}):
			t.Errorf("%q %v: %+v, %v; want spool %s", c.args, c.env, got, ok, want)
		}
	}
}
