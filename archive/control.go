package archive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// checkSystem checks a .history or .backup file, which has no WAL page header, against the
// archive's identity: its system is the one in DATADIR/global/pg_control, DATADIR being the
// parent of the file's pg_wal (PostgreSQL runs archive_command there). Without this a second
// cluster pointed at the prefix could archive its timeline histories into ours before its first
// segment is refused, and a later recovery_target_timeline = 'latest' would follow them.
//
// A pg_control that cannot be read or is damaged refuses the push: PostgreSQL always has one
// where it runs archive_command, so this means walship was not called from a data directory, and
// accepting the file unchecked is exactly the hole being closed. PostgreSQL retries the push, and
// the log line names the file. An archive with no identity recorded yet accepts the file: there is
// nothing to compare with, and the first segment pushed records the identity.
func (p *Pusher) checkSystem(ctx context.Context, walDir, name string) error {
	path := filepath.Join(walDir, "..", "global", "pg_control")
	c, err := readControl(path)
	if err != nil {
		return fmt.Errorf("%s: cannot tell which database system it belongs to: %w", name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.id == nil {
		p.id = p.cachedIdentity()
	}
	if p.id == nil {
		id, err := ReadIdentity(ctx, p.cfg.Store)
		if errors.Is(err, storage.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		p.id = id
		if err := writeFileDurable(filepath.Join(p.cfg.SpoolDir, "identity"), p.identityCache(id)); err != nil {
			p.cfg.Log.Warn("could not cache the archive identity", "err", err.Error())
		}
	}
	return p.sameSystem(c.SystemID)
}

// readControl reads and checks pg_control. PostgreSQL rewrites it in place, so a read racing a
// write can be torn and fail its CRC: it is read up to three times.
func readControl(path string) (walfile.Control, error) {
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		var b []byte
		if b, err = os.ReadFile(path); err != nil {
			return walfile.Control{}, err
		}
		var c walfile.Control
		if c, err = walfile.ParseControl(b); err == nil {
			return c, nil
		}
	}
	return walfile.Control{}, fmt.Errorf("%s: %w", path, err)
}
