// Package mem is an in-memory Store for unit tests of the packages above storage; it keeps the
// same contract as the real backends (the conformance suite runs against it).
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/walship/walship/storage"
)

type object struct {
	data []byte
	info storage.Info
}

// Store keeps objects in a map guarded by a mutex.
type Store struct {
	mu      sync.Mutex
	objects map[string]object
}

// New returns an empty Store.
func New() *Store { return &Store{objects: map[string]object{}} }

func (s *Store) String() string { return "mem://" }

func (s *Store) put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string, create bool) error {
	if err := storage.CheckKey(key); err != nil {
		return fmt.Errorf("mem: put: %w", err)
	}
	if err := storage.CheckMetadata(meta); err != nil {
		return fmt.Errorf("mem: put %s: %w", key, err)
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("mem: put %s: %w", key, err)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("mem: put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem: put %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[key]; ok && create {
		return fmt.Errorf("mem: create %s: %w", key, storage.ErrExist)
	}
	s.objects[key] = object{data: data, info: storage.Info{
		Key: key, Size: int64(len(data)), ModTime: time.Now(), Metadata: maps.Clone(meta),
	}}
	return nil
}

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, key, body, meta, false)
}

// Create implements storage.Creator.
func (s *Store) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, key, body, meta, true)
}

func (s *Store) lookup(ctx context.Context, op, key string) (object, error) {
	if err := ctx.Err(); err != nil {
		return object{}, fmt.Errorf("mem: %s %s: %w", op, key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return object{}, fmt.Errorf("mem: %s %s: %w", op, key, storage.ErrNotExist)
	}
	o.info.Metadata = maps.Clone(o.info.Metadata)
	return o, nil
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	o, err := s.lookup(ctx, "get", key)
	if err != nil {
		return nil, storage.Info{}, err
	}
	return io.NopCloser(bytes.NewReader(o.data)), o.info, nil
}

// GetRange implements storage.RangeGetter.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	o, err := s.lookup(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	if offset > int64(len(o.data)) {
		return nil, fmt.Errorf("mem: get %s: offset %d beyond size %d", key, offset, len(o.data))
	}
	end := int64(len(o.data))
	if length >= 0 && offset+length < end {
		end = offset + length
	}
	return io.NopCloser(bytes.NewReader(o.data[offset:end])), nil
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	o, err := s.lookup(ctx, "stat", key)
	return o.info, err
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	s.mu.Lock()
	var infos []storage.Info
	for k, o := range s.objects {
		if strings.HasPrefix(k, prefix) {
			infos = append(infos, o.info)
		}
	}
	s.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	for _, i := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.lookup(ctx, "delete", key); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objects, key)
	s.mu.Unlock()
	return nil
}

// Corrupt replaces the stored bytes of key, keeping its metadata: tests use it to model bit rot.
func (s *Store) Corrupt(key string, f func([]byte) []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[key]
	o.data = f(bytes.Clone(o.data))
	o.info.Size = int64(len(o.data))
	s.objects[key] = o
}
