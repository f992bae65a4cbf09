package restore_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/internal/waltest"
	"github.com/walship/walship/restore"
	"github.com/walship/walship/restore/spool"
	"github.com/walship/walship/walfile"
)

// TestSpoolCheckStamp: a spooled segment served in the boot it was written in, unchanged and
// wholly in the page cache, is checked by its stamp alone; after a reboot, with a page dropped
// from the page cache, or served a second time (its link changed it), the whole content is
// checked by its CRC. Each is served byte for byte without a storage request.
func TestSpoolCheckStamp(t *testing.T) {
	cases := []struct {
		name, want string
		before     func(t *testing.T, p string) (undo func())
	}{
		{"fresh", "stamp", nil},
		{"after a reboot", "crc32c", func(t *testing.T, p string) func() { rebooted(t, p); return nil }},
		{"evicted", "crc32c", func(t *testing.T, p string) func() { waltest.Evict(t, p); return nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, orig := archived(t, 1, 2)
			spool := waltest.DiskTempDir(t)
			name := walfile.SegmentName(1, 2, seg)
			if err := restore.Prefetch(context.Background(), st, spool, []string{name}, nil); err != nil {
				t.Fatal(err)
			}
			if c.before != nil {
				if undo := c.before(t, filepath.Join(spool, "prefetch", name)); undo != nil {
					defer undo()
				}
			}
			counted, n := gets(st)
			var log bytes.Buffer
			f := fetcher(t, counted, restore.Config{SpoolDir: spool,
				Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			dest := filepath.Join(waltest.WALDir(t), "RECOVERYXLOG")
			for i, want := range []string{c.want, "crc32c"} { // the second serve: see above
				if err := f.Fetch(context.Background(), name, dest); err != nil {
					t.Fatal(err)
				}
				if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[name]) {
					t.Fatalf("serve %d: restored content differs", i+1)
				}
				if !strings.Contains(log.String(), "check="+want) {
					t.Errorf("serve %d: checked otherwise than by %s:\n%s", i+1, want, log.String())
				}
				log.Reset()
			}
			if *n != 0 {
				t.Errorf("%d storage reads, want 0", *n)
			}
		})
	}
}

// rebooted rewrites the checksum file of the spooled file p as if p had been written in an
// earlier boot: another boot id, the rest unchanged.
func rebooted(t *testing.T, p string) {
	b, err := os.ReadFile(p + spool.SumSuffix)
	if err != nil {
		t.Fatal(err)
	}
	crc, size, st, err := spool.DecodeSum(b)
	if err != nil {
		t.Fatal(err)
	}
	st.Boot = [16]byte{1, 2, 3}
	if err := os.WriteFile(p+spool.SumSuffix, spool.EncodeSum(crc, size, st), 0o600); err != nil {
		t.Fatal(err)
	}
}
