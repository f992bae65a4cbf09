package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// figures are what issue 4 asks each fault test to print: what was injected, what was attempted,
// what was checked, and the two counts that must be zero. Every number is counted by the test,
// none is a constant.
type figures struct {
	faults   int // faults injected (kills, damaged objects, proxy outages and toxics)
	ops      int // walship operations attempted (pushes, fetches)
	verified int // objects read back and compared byte for byte with their source
	lost     int // acknowledged (or archived) data that storage no longer holds intact
	wrong    int // exit 0 whose object is then missing or differs, or a fetch with wrong bytes
	note     string
}

// report prints the figures as one FIGURES line on stdout and appends it to the file named by
// $WALSHIP_FIGURES, which scripts/test prints at the end: `go test ./...` shows nothing of a
// passing test, so stdout alone would be seen only with -v. Lost or wrong data fails the test.
func (f figures) report(t *testing.T) {
	t.Helper()
	line := fmt.Sprintf("FIGURES %s: faults injected %d, operations attempted %d, objects verified %d, data lost %d, wrong successes %d",
		t.Name(), f.faults, f.ops, f.verified, f.lost, f.wrong)
	if f.note != "" {
		line += "; " + f.note
	}
	fmt.Println(line)
	if path := os.Getenv("WALSHIP_FIGURES"); path != "" {
		fh, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Errorf("WALSHIP_FIGURES: %v", err)
		} else {
			fmt.Fprintln(fh, line)
			fh.Close()
		}
	}
	if f.lost != 0 || f.wrong != 0 {
		t.Errorf("data lost %d, wrong successes %d: both must be 0", f.lost, f.wrong)
	}
}

// storedMatches reads name's object from st and returns nil only when it decodes, verifies and
// holds exactly want; with want nil, decoding and verifying is enough. A missing object gives an
// error wrapping storage.ErrNotExist.
func storedMatches(st storage.Store, name string, want []byte) error {
	key, err := layout.WALKey(name)
	if err != nil {
		return err
	}
	rc, _, err := st.Get(context.Background(), key)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rc.Close()
	var got bytes.Buffer
	if _, err := object.Decode(&got, rc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if want != nil && !bytes.Equal(got.Bytes(), want) {
		return fmt.Errorf("%s: stored content (%d bytes) differs from the source (%d bytes)", name, got.Len(), len(want))
	}
	return nil
}

// ackWatcher checks, while PostgreSQL runs, every file it has marked .done in archive_status
// (archive_command exited 0 for it): it must be in storage and decode to the bytes in pg_wal.
// It has to run during the load, because a checkpoint recycles archived segments and drops
// their .done files.
type ackWatcher struct {
	st     storage.Store
	walDir string

	mu        sync.Mutex
	seen      map[string]bool
	exact     int      // stored object equal to pg_wal's copy
	recycled  int      // stored object verified, pg_wal's copy recycled before it could be compared
	wrongAcks []string // acknowledged but missing, damaged or different
}

func newAckWatcher(st storage.Store, walDir string) *ackWatcher {
	return &ackWatcher{st: st, walDir: walDir, seen: map[string]bool{}}
}

// run scans until stop is closed, then returns.
func (w *ackWatcher) run(stop <-chan struct{}) {
	for {
		w.scan()
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// scan checks the .done files not yet seen.
func (w *ackWatcher) scan() {
	done, _ := filepath.Glob(filepath.Join(w.walDir, "archive_status", "*.done"))
	for _, d := range done {
		name := strings.TrimSuffix(filepath.Base(d), ".done")
		w.mu.Lock()
		seen := w.seen[name]
		w.seen[name] = true
		w.mu.Unlock()
		if seen || walfile.Classify(name) == walfile.Invalid {
			continue
		}
		w.check(name, d)
	}
}

func (w *ackWatcher) check(name, doneFile string) {
	local, err := os.ReadFile(filepath.Join(w.walDir, name))
	if err != nil {
		local = nil // recycled already: the stored object can still be decoded and verified
	}
	err = storedMatches(w.st, name, local)
	if err != nil && local != nil && !stillThere(doneFile, filepath.Join(w.walDir, name)) {
		// Recycled while being read: the local bytes may belong to a later segment by now.
		local = nil
		err = storedMatches(w.st, name, nil)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err != nil:
		w.wrongAcks = append(w.wrongAcks, err.Error())
	case local == nil:
		w.recycled++
	default:
		w.exact++
	}
}

func stillThere(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}
