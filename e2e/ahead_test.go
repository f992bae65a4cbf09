package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/internal/flock"
	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
)

// TestPushAheadBinary drives the real binary through a backlog, on a file archive and on MinIO:
// the first wal-push returns once its own file is stored and leaves a detached wal-push-ahead
// that stores every other ready file; that process carries no storage URL on its command line;
// PostgreSQL's calls for the others then succeed; and every stored object decodes to its file.
func TestPushAheadBinary(t *testing.T) {
	for _, tg := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := tg(t)
		t.Run(tg.name, func(t *testing.T) {
			wal := waltest.WALDir(t)
			data := filepath.Dir(wal)
			const segSize, n = 4 << 20, 16
			var paths []string
			for i := uint64(1); i <= n; i++ {
				paths = append(paths, waltest.WriteSegment(t, wal, 1, i, segSize, 4242))
			}
			rel := func(p string) string { return filepath.Join("pg_wal", filepath.Base(p)) }
			if code, out := run(t, tg, data, "wal-push", rel(paths[0])); code != 0 {
				t.Fatalf("first wal-push: exit %d: %s", code, out)
			}
			// Until every file has a marker (written once it is stored) and the pusher is gone.
			spool, _ := filepath.Abs(filepath.Join(data, "walship")) // as the pusher is given it
			seen := 0
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Millisecond) {
				for _, args := range detached("wal-push-ahead", spool) {
					seen++
					if cl := strings.Join(args, " "); strings.Contains(cl, strings.SplitN(tg.url, "?", 2)[0]) {
						t.Errorf("the pusher's command line names the storage: %q", cl)
					}
				}
				marked, _ := filepath.Glob(filepath.Join(spool, "archived", "0*"))
				if len(marked) == n && !flock.Held(filepath.Join(spool, "pushing", ".lock")) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after 60 s, %d of %d files have markers", len(marked), n)
				}
			}
			st := tg.store(t)
			for _, p := range paths {
				key, _ := layout.WALKey(filepath.Base(p))
				rc, _, err := st.Get(context.Background(), key)
				if err != nil {
					t.Fatalf("%s not stored by the pusher: %v", filepath.Base(p), err)
				}
				var got strings.Builder
				_, err = object.Decode(&got, rc)
				rc.Close()
				if want, _ := os.ReadFile(p); err != nil || got.String() != string(want) {
					t.Fatalf("%s: stored copy does not decode to the file (%v)", filepath.Base(p), err)
				}
			}
			for _, p := range paths {
				status := filepath.Join(wal, "archive_status", filepath.Base(p))
				if code, out := run(t, tg, data, "wal-push", rel(p)); code != 0 {
					t.Fatalf("wal-push %s after the pusher: exit %d: %s", filepath.Base(p), code, out)
				}
				os.Rename(status+".ready", status+".done")
			}
			log, _ := os.ReadFile(filepath.Join(data, "walship", "pushing", "push-ahead.log"))
			if strings.Contains(string(log), "level=WARN") || strings.Contains(string(log), "level=ERROR") {
				t.Errorf("the pusher logged a problem:\n%s", log)
			}
			t.Logf("%d segments of %d MiB; the pusher seen at work %d times while polling", n, segSize>>20, seen)
		})
	}
}
