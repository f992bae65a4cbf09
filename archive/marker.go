package archive

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/walship/walship/object"
)

// A marker records that a file was archived with given content in a given store. It is only an
// optimisation: a missing or stale marker costs one more request, never a wrong answer. A hit is
// confirmed by the file's identity on disk (device, inode, size, modification and change times
// to the nanosecond), as git and rsync trust an unchanged file: any write to the file, a copy of
// it (a base backup carrying another cluster's markers) or pg_rewind's rewrite changes it, and
// PostgreSQL never writes to a segment it has handed to archive_command. When the identity does
// not match, the file is hashed and compared with the recorded digest instead.
type marker struct {
	Store  string    `json:"store"`
	Digest string    `json:"xxh3"`
	Size   int64     `json:"size"`
	Stat   *fileStat `json:"stat,omitempty"`
}

// fileStat is what identifies an unchanged file.
type fileStat struct {
	Dev, Ino         uint64
	MtimeNs, CtimeNs int64
}

func statOf(f *os.File) *fileStat {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &fileStat{Dev: uint64(st.Dev), Ino: st.Ino, MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}
}

func (p *Pusher) markerPath(name string) string {
	return filepath.Join(p.cfg.SpoolDir, "archived", name)
}

// markerMatches reports whether a marker says f's exact content is already archived. It leaves
// f rewound.
func (p *Pusher) markerMatches(f *os.File, name string, size int64) bool {
	b, err := os.ReadFile(p.markerPath(name))
	if err != nil {
		return false
	}
	var m marker
	if json.Unmarshal(b, &m) != nil || m.Store != p.cfg.StoreURL || m.Size != size {
		return false
	}
	if st := statOf(f); m.Stat != nil && st != nil && *st == *m.Stat {
		return true
	}
	h := object.NewHash()
	n, err := io.Copy(h, f)
	f.Seek(0, io.SeekStart)
	if err != nil || n != m.Size {
		return false
	}
	return object.Summary{Digest: object.DigestOf(h)}.Hex() == m.Digest
}

// writeMarker records f, just archived with sum, as archived. Its identity is recorded only if it
// is the one seen before f was read (before), so a file changed during the push is hashed again.
func (p *Pusher) writeMarker(f *os.File, name string, sum object.Summary, before *fileStat) error {
	m := marker{Store: p.cfg.StoreURL, Digest: sum.Hex(), Size: sum.RawSize}
	if after := statOf(f); before != nil && after != nil && *before == *after {
		m.Stat = after
	}
	b, _ := json.Marshal(m)
	return writeFileDurable(p.markerPath(name), b)
}

// pruneMarkers drops markers and claims of files PostgreSQL no longer has marked ready: it has
// recorded them as archived, so it will not ask again. The file being asked for keeps its marker.
func (p *Pusher) pruneMarkers(walDir, asked string) {
	for _, dir := range []string{filepath.Join(p.cfg.SpoolDir, "archived"), p.claimDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") || e.Name() == asked {
				continue
			}
			if _, err := os.Stat(filepath.Join(walDir, "archive_status", e.Name()+".ready")); os.IsNotExist(err) {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// writeFileDurable writes data to path atomically: temp file, fsync, rename, fsync directory.
func writeFileDurable(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
