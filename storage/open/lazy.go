package open

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/walship/walship/storage"
)

// ErrSetup wraps what went wrong building a lazily opened backend (its SDK configuration or
// credential chain), returned by the request that needed it: a configuration problem, not an
// outage, so it is not retried and callers treat it like a bad storage URL.
var ErrSetup = errors.New("cannot set up the storage client")

// lazy is a Store that builds the one it stands for on first use. PostgreSQL starts one process
// per WAL file, and many of them need no request at all (a marker hit, a spool hit, a recent
// miss): they should not pay for an SDK's configuration loading. The outcome of the one attempt
// to build is kept, so a failed set-up is not retried request after request.
type lazy struct {
	name string
	open func() (storage.Store, error)
	once sync.Once
	st   storage.Store
	err  error
}

func (l *lazy) store() (storage.Store, error) {
	l.once.Do(func() {
		if l.st, l.err = l.open(); l.err != nil {
			l.st, l.err = nil, fmt.Errorf("%s: %w: %w", l.name, ErrSetup, l.err)
		}
	})
	return l.st, l.err
}

// String names the store without building it.
func (l *lazy) String() string { return l.name }

// Unwrap builds the store so that optional capabilities are found on the real one; it is nil when
// the store cannot be built (the next request says why).
func (l *lazy) Unwrap() storage.Store {
	st, _ := l.store()
	return st
}

func (l *lazy) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	st, err := l.store()
	if err != nil {
		return err
	}
	return st.Put(ctx, key, body, meta)
}

// Create implements storage.Creator through the built store's own chain, so a set-up error is
// reported as such rather than as a missing capability.
func (l *lazy) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	st, err := l.store()
	if err != nil {
		return err
	}
	return storage.Create(ctx, st, key, body, meta)
}

func (l *lazy) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	st, err := l.store()
	if err != nil {
		return nil, storage.Info{}, err
	}
	return st.Get(ctx, key)
}

// GetRange implements storage.RangeGetter through the built store's own chain.
func (l *lazy) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	st, err := l.store()
	if err != nil {
		return nil, err
	}
	return storage.GetRange(ctx, st, key, offset, length)
}

func (l *lazy) Stat(ctx context.Context, key string) (storage.Info, error) {
	st, err := l.store()
	if err != nil {
		return storage.Info{}, err
	}
	return st.Stat(ctx, key)
}

func (l *lazy) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	st, err := l.store()
	if err != nil {
		return err
	}
	return st.List(ctx, prefix, fn)
}

func (l *lazy) Delete(ctx context.Context, key string) error {
	st, err := l.store()
	if err != nil {
		return err
	}
	return st.Delete(ctx, key)
}
