package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/internal/waltest"
)

// TestFastFetch: once the prefetcher runs ahead, a wal-fetch call as PostgreSQL's archive
// recovery makes it is served from the spool while the packages initialise, before any storage
// SDK's (package fastfetch); the calls it must leave to the full command (a timeline history in
// pg_wal, debug logging, a flag it does not read) get the same bytes from the full command. The
// package initialisation each call ran is read from GODEBUG=inittrace=1.
func TestFastFetch(t *testing.T) {
	tg := fileTarget(t)
	data := t.TempDir()
	waltest.WALDirIn(t, data)
	data = filepath.Join(data, "data")
	const segSize = 16 << 20
	want := map[string][]byte{}
	var names []string
	for segno := uint64(2); segno <= 8; segno++ {
		p := waltest.WriteSegment(t, filepath.Join(data, "pg_wal"), 1, segno, segSize, waltest.SystemID)
		rel := filepath.Join("pg_wal", filepath.Base(p))
		if code, out := run(t, tg, data, "wal-push", rel); code != 0 {
			t.Fatalf("wal-push %s: exit %d: %s", rel, code, out)
		}
		b, _ := os.ReadFile(p)
		want[filepath.Base(p)] = b
		names = append(names, filepath.Base(p))
		os.Remove(p)
	}
	os.RemoveAll(filepath.Join(data, "pg_wal", "archive_status"))
	spool := filepath.Join(data, "walship") // wal-fetch's default
	t.Cleanup(func() {
		for _, pid := range prefetchers(spool) {
			if p, err := strconv.Atoi(pid); err == nil {
				syscall.Kill(p, syscall.SIGKILL)
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					if _, err := os.Stat("/proc/" + pid); err != nil {
						break
					}
				}
			}
		}
	})
	traced := append(tg.env, "GODEBUG=inittrace=1", "WALSHIP_LOG_LEVEL=info")
	fetch := func(name string, env []string, args ...string) (fast bool, out string) {
		t.Helper()
		code, out := run(t, target{env: env}, data, append(append([]string{"wal-fetch"}, args...), name, "pg_wal/RECOVERYXLOG")...)
		if code != 0 {
			t.Fatalf("wal-fetch %s %q: exit %d: %s", name, args, code, out)
		}
		got, err := os.ReadFile(filepath.Join(data, "pg_wal", "RECOVERYXLOG"))
		if err != nil || !bytes.Equal(got, want[name]) {
			t.Fatalf("wal-fetch %s %q: restored content differs from what was archived (%v)", name, args, err)
		}
		if !strings.Contains(out, "init github.com/walship/walship/restore/spool ") {
			t.Fatalf("wal-fetch %s: no package initialisation traced:\n%s", name, out)
		}
		return !strings.Contains(out, "init cloud.google.com/go/storage "), out
	}
	spooled := func(name string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(spool, "prefetch", name+".sum")); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the prefetcher did not spool %s in 30 s", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// The first call of a recovery finds no prefetcher and starts one: the full command.
	if fast, _ := fetch(names[0], traced); fast {
		t.Errorf("%s: served before the storage SDKs initialised, with no prefetcher running", names[0])
	}
	spooled(names[1])
	fast, out := fetch(names[1], traced)
	if !fast {
		t.Errorf("%s: the full command served a spooled segment with a prefetcher running:\n%s", names[1], out)
	}
	// Served early, too: a package fastfetch needs that sorts late (log/slog, path/filepath) would
	// have it wait for every ready package sorting before, the heavy ones of protobuf and of the
	// AWS SDK (regular expressions) among them.
	for _, heavy := range []string{"google.golang.org/protobuf/types/descriptorpb", "github.com/aws/aws-sdk-go-v2/service/s3/internal/endpoints"} {
		if strings.Contains(out, "init "+heavy+" ") {
			t.Errorf("%s: served after %s initialised:\n%s", names[1], heavy, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(spool, "prefetch", ".position")); string(b) != names[1] {
		t.Errorf("the prefetcher was told replay is at %q, want %s", b, names[1])
	}

	// Calls fastfetch leaves to the full command, each for a spooled segment.
	history := filepath.Join(data, "pg_wal", "00000002.history")
	for i, c := range []struct {
		why  string
		env  []string
		args []string
		prep func()
	}{
		{"a timeline history in pg_wal", traced, nil, func() {
			os.WriteFile(history, []byte("1\t0/FFFFFFFF\tno recovery target specified\n"), 0o600)
		}},
		{"debug logging", traced, []string{"--log-level", "debug"}, func() { os.Remove(history) }},
		{"a flag fastfetch does not read", traced, []string{"--prefetch=8"}, nil},
		{"prefetching off", append(traced, "WALSHIP_PREFETCH=0"), nil, nil},
	} {
		name := names[2+i]
		if c.prep != nil {
			c.prep()
		}
		spooled(name)
		if fast, out := fetch(name, c.env, c.args...); fast {
			t.Errorf("%s (%s): served before the storage SDKs initialised:\n%s", name, c.why, out)
		}
	}
}
