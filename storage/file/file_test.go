package file_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/file"
	"github.com/walship/walship/storage/storagetest"
)

func newStore(t *testing.T) storage.Store {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Options{New: newStore})
}

func TestMissingRootIsNotNotFound(t *testing.T) {
	s, err := file.New(filepath.Join(t.TempDir(), "unmounted"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "wal/x"); !errors.Is(err, storage.ErrNoContainer) || errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get with missing root: got %v, want ErrNoContainer and not ErrNotExist", err)
	}
	if err := s.Put(ctx, "wal/x", bytes.NewReader(nil), nil); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("put with missing root: got %v, want ErrNoContainer", err)
	}
	if err := s.List(ctx, "", func(storage.Info) error { return nil }); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("list with missing root: got %v, want ErrNoContainer", err)
	}
}

func TestRelativeRootRefused(t *testing.T) {
	if _, err := file.New("rel/dir"); err == nil {
		t.Fatal("relative root accepted")
	}
}

func TestNoTempFilesLeft(t *testing.T) {
	dir := t.TempDir()
	s, _ := file.New(dir)
	ctx := context.Background()
	s.Put(ctx, "a/b", bytes.NewReader([]byte("x")), nil)
	storage.Create(ctx, s, "a/b", bytes.NewReader([]byte("y")), nil)
	s.Put(ctx, "a/c", failingReader{}, nil)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if strings.HasPrefix(fi.Name(), ".tmp-") {
			t.Errorf("temp file left behind: %s", p)
		}
		return nil
	})
	if _, err := s.Stat(ctx, "a/c"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("failed put left an object: %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error)       { return 0, errors.New("disk read error") }
func (failingReader) Seek(int64, int) (int64, error) { return 0, nil }

func TestForeignFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	s, _ := file.New(dir)
	os.WriteFile(filepath.Join(dir, "stray"), []byte("not ours"), 0o644)
	_, err := s.Stat(context.Background(), "stray")
	if err == nil || errors.Is(err, storage.ErrNotExist) {
		t.Errorf("stat of a foreign file: got %v, want an envelope error", err)
	}
}
