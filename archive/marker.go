package archive

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/walship/walship/object"
)

// A marker records that a file was archived with given content in a given store. It is only an
// optimisation: a missing or stale marker costs one more request, never a wrong answer, because a
// hit is confirmed by hashing the file (a base backup may carry another cluster's markers).
type marker struct {
	Store  string `json:"store"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

func (p *Pusher) markerPath(name string) string {
	return filepath.Join(p.cfg.SpoolDir, "archived", name)
}

// markerMatches reports whether a marker says f's exact content is already archived. It leaves
// f rewound.
func (p *Pusher) markerMatches(f *os.File, name string) bool {
	b, err := os.ReadFile(p.markerPath(name))
	if err != nil {
		return false
	}
	var m marker
	if json.Unmarshal(b, &m) != nil || m.Store != p.cfg.StoreURL {
		return false
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Seek(0, io.SeekStart)
	if err != nil || n != m.Size {
		return false
	}
	var sum object.Summary
	copy(sum.SHA256[:], h.Sum(nil))
	return sum.Hex() == m.SHA256
}

func (p *Pusher) writeMarker(name string, sum object.Summary) error {
	b, _ := json.Marshal(marker{Store: p.cfg.StoreURL, SHA256: sum.Hex(), Size: sum.RawSize})
	return writeFileDurable(p.markerPath(name), b)
}

// pruneMarkers drops markers of files PostgreSQL no longer has marked ready: it has recorded
// them as archived, so it will not ask again. The file being asked for keeps its marker.
func (p *Pusher) pruneMarkers(walDir, asked string) {
	entries, err := os.ReadDir(filepath.Join(p.cfg.SpoolDir, "archived"))
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.Name() == asked {
			continue
		}
		if _, err := os.Stat(filepath.Join(walDir, "archive_status", e.Name()+".ready")); os.IsNotExist(err) {
			os.Remove(filepath.Join(p.cfg.SpoolDir, "archived", e.Name()))
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
