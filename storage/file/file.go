// Package file is the local-filesystem Store (file:///abs/path), the default backend: every write
// is atomic and durable (temp file, fsync, rename or link, fsync of the directory).
//
// Each object is one file holding a small envelope — magic "WSF1", a big-endian uint32 length, the
// metadata as JSON — followed by the object's bytes, so data and metadata land in one atomic step
// and need no extended attributes or sidecar files.
package file

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/walship/walship/storage"
)

const (
	magic      = "WSF1"
	headerSize = 8
	tmpPrefix  = ".tmp-"
	maxMeta    = 64 << 10
	filePerm   = 0o640
	dirPerm    = 0o750
)

// Store keeps objects below Root.
type Store struct {
	root string
}

// New returns a Store rooted at dir, which must be an absolute path. The directory is not checked
// here (no I/O at start-up); every operation reports storage.ErrNoContainer while it is missing, so
// an unmounted archive is never mistaken for an empty one.
func New(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("file: %q is not an absolute path", dir)
	}
	return &Store{root: filepath.Clean(dir)}, nil
}

func (s *Store) String() string { return "file://" + s.root }

func (s *Store) path(op, key string) (string, error) {
	if err := storage.CheckKey(key); err != nil {
		return "", fmt.Errorf("file: %s: %w", op, err)
	}
	for _, el := range strings.Split(key, "/") {
		if strings.HasPrefix(el, tmpPrefix) {
			return "", fmt.Errorf("file: %s: key %q uses the reserved prefix %s", op, key, tmpPrefix)
		}
	}
	if fi, err := os.Stat(s.root); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("file: %s %s: %w: %s is missing or not a directory", op, key, storage.ErrNoContainer, s.root)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.write(ctx, "put", key, body, meta, func(tmp, final string) error {
		return os.Rename(tmp, final)
	})
}

// Create implements storage.Creator with link(2), which fails atomically if the name exists.
func (s *Store) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.write(ctx, "create", key, body, meta, func(tmp, final string) error {
		err := os.Link(tmp, final)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", storage.ErrExist, final)
		}
		if err != nil {
			return err
		}
		return os.Remove(tmp)
	})
}

func (s *Store) write(ctx context.Context, op, key string, body io.ReadSeeker, meta map[string]string,
	commit func(tmp, final string) error) error {
	final, err := s.path(op, key)
	if err != nil {
		return err
	}
	if err := storage.CheckMetadata(meta); err != nil {
		return fmt.Errorf("file: %s %s: %w", op, key, err)
	}
	dir := filepath.Dir(final)
	if err := mkdirDurable(s.root, dir); err != nil {
		return fmt.Errorf("file: %s %s: %w", op, key, err)
	}
	tmp, err := writeTemp(ctx, dir, filepath.Base(final), body, meta)
	if err != nil {
		return fmt.Errorf("file: %s %s: %w", op, key, err)
	}
	if err := commit(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("file: %s %s: %w", op, key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("file: %s %s: %w", op, key, err)
	}
	return nil
}

// writeTemp writes envelope and body to a new temporary file in dir and fsyncs it.
func writeTemp(ctx context.Context, dir, base string, body io.ReadSeeker, meta map[string]string) (string, error) {
	hdr, err := encodeHeader(meta)
	if err != nil {
		return "", err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, tmpPrefix+base+"-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", err
	}
	if _, err := f.Write(hdr); err != nil {
		return fail(err)
	}
	if _, err := io.Copy(f, ctxReader{ctx, body}); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

func encodeHeader(meta map[string]string) ([]byte, error) {
	var js []byte
	if len(meta) > 0 {
		var err error
		if js, err = json.Marshal(meta); err != nil {
			return nil, err
		}
	}
	if len(js) > maxMeta {
		return nil, fmt.Errorf("metadata too large (%d bytes)", len(js))
	}
	hdr := make([]byte, headerSize, headerSize+len(js))
	copy(hdr, magic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(js)))
	return append(hdr, js...), nil
}

// open opens key and reads its envelope, leaving the file positioned at the object's first byte.
func (s *Store) open(op, key string) (*os.File, storage.Info, error) {
	p, err := s.path(op, key)
	if err != nil {
		return nil, storage.Info{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, storage.Info{}, mapErr(op, key, err)
	}
	info, err := readInfo(f, key)
	if err != nil {
		f.Close()
		return nil, storage.Info{}, fmt.Errorf("file: %s %s: %w", op, key, err)
	}
	return f, info, nil
}

func readInfo(f *os.File, key string) (storage.Info, error) {
	fi, err := f.Stat()
	if err != nil {
		return storage.Info{}, err
	}
	if fi.IsDir() {
		return storage.Info{}, fmt.Errorf("%w: %s is a directory", storage.ErrNotExist, f.Name())
	}
	var hdr [headerSize]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || string(hdr[:4]) != magic {
		return storage.Info{}, fmt.Errorf("%s is not a walship object file (bad envelope)", f.Name())
	}
	n := int64(binary.BigEndian.Uint32(hdr[4:]))
	if n > maxMeta || headerSize+n > fi.Size() {
		return storage.Info{}, fmt.Errorf("%s has a damaged envelope", f.Name())
	}
	info := storage.Info{Key: key, Size: fi.Size() - headerSize - n, ModTime: fi.ModTime()}
	if n > 0 {
		js := make([]byte, n)
		if _, err := io.ReadFull(f, js); err != nil {
			return storage.Info{}, err
		}
		if err := json.Unmarshal(js, &info.Metadata); err != nil {
			return storage.Info{}, fmt.Errorf("%s has damaged metadata: %w", f.Name(), err)
		}
	}
	return info, nil
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	f, info, err := s.open("get", key)
	if err != nil {
		return nil, storage.Info{}, err
	}
	return f, info, nil
}

// GetRange implements storage.RangeGetter.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, info, err := s.open("get", key)
	if err != nil {
		return nil, err
	}
	if offset > info.Size {
		f.Close()
		return nil, fmt.Errorf("file: get %s: offset %d beyond size %d", key, offset, info.Size)
	}
	if _, err := f.Seek(offset, io.SeekCurrent); err != nil {
		f.Close()
		return nil, fmt.Errorf("file: get %s: %w", key, err)
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	f, info, err := s.open("stat", key)
	if err != nil {
		return storage.Info{}, err
	}
	f.Close()
	return info, nil
}

// List implements storage.Store. It walks only the deepest directory the prefix names, then sorts,
// because a directory walk's order differs from lexical key order ("a-x" < "a/1").
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	if fi, err := os.Stat(s.root); err != nil || !fi.IsDir() {
		return fmt.Errorf("file: list %q: %w: %s is missing or not a directory", prefix, storage.ErrNoContainer, s.root)
	}
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	var keys []string
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		if key := filepath.ToSlash(rel); strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("file: list %q: %w", prefix, err)
	}
	sort.Strings(keys)
	for _, key := range keys {
		f, info, err := s.open("list", key)
		if errors.Is(err, storage.ErrNotExist) {
			continue // deleted while listing
		}
		if err != nil {
			return err
		}
		f.Close()
		info.Metadata = nil
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path("delete", key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return mapErr("delete", key, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("file: delete %s: %w", key, err)
	}
	return nil
}

// mapErr is the one place OS errors become storage sentinels.
func mapErr(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("file: %s %s: %w", op, key, storage.ErrNotExist)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("file: %s %s: %w: %w", op, key, storage.ErrPermission, err)
	}
	return fmt.Errorf("file: %s %s: %w", op, key, err)
}

// mkdirDurable creates dir and any missing parents below root, fsyncing each parent that gained an
// entry so the new directories survive a crash.
func mkdirDurable(root, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return err
	}
	cur := root
	for _, el := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, el)
		err := os.Mkdir(next, dirPerm)
		switch {
		case err == nil:
			if err := syncDir(cur); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
		cur = next
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// ctxReader stops a long copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
