package storage

import (
	"context"
	"io"
)

// Faulty is a decorator for tests of the layers above storage: Before can fail or delay any call
// (error on the Nth put, a stall, a cancelled context), After can lose the reply of a write that
// took effect, and Body can damage what Get returns (short reads, resets mid-body, slow bodies).
// All are optional.
type Faulty struct {
	Store
	// Before runs ahead of every operation; a non-nil error is returned instead of calling Store.
	Before func(ctx context.Context, op, key string) error
	// After runs once a put, create or delete has returned err and may replace it: returning an
	// error for a write that succeeded is a reply lost on the way back (a reset after the body).
	After func(ctx context.Context, op, key string, err error) error
	// Body wraps the reader returned by Get and GetRange.
	Body func(op, key string, r io.ReadCloser) io.ReadCloser
}

func (f *Faulty) Unwrap() Store { return f.Store }

func (f *Faulty) before(ctx context.Context, op, key string) error {
	if f.Before == nil {
		return nil
	}
	return f.Before(ctx, op, key)
}

func (f *Faulty) after(ctx context.Context, op, key string, err error) error {
	if f.After == nil {
		return err
	}
	return f.After(ctx, op, key, err)
}

func (f *Faulty) body(op, key string, r io.ReadCloser) io.ReadCloser {
	if f.Body == nil {
		return r
	}
	return f.Body(op, key, r)
}

func (f *Faulty) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	if err := f.before(ctx, "put", key); err != nil {
		return err
	}
	return f.after(ctx, "put", key, f.Store.Put(ctx, key, body, meta))
}

func (f *Faulty) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	if err := f.before(ctx, "create", key); err != nil {
		return err
	}
	return f.after(ctx, "create", key, Create(ctx, f.Store, key, body, meta))
}

func (f *Faulty) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	if err := f.before(ctx, "get", key); err != nil {
		return nil, Info{}, err
	}
	rc, info, err := f.Store.Get(ctx, key)
	if err != nil {
		return nil, info, err
	}
	return f.body("get", key, rc), info, nil
}

func (f *Faulty) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := f.before(ctx, "getrange", key); err != nil {
		return nil, err
	}
	rc, err := GetRange(ctx, f.Store, key, offset, length)
	if err != nil {
		return nil, err
	}
	return f.body("getrange", key, rc), nil
}

func (f *Faulty) Stat(ctx context.Context, key string) (Info, error) {
	if err := f.before(ctx, "stat", key); err != nil {
		return Info{}, err
	}
	return f.Store.Stat(ctx, key)
}

func (f *Faulty) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := f.before(ctx, "list", prefix); err != nil {
		return err
	}
	return f.Store.List(ctx, prefix, fn)
}

func (f *Faulty) Delete(ctx context.Context, key string) error {
	if err := f.before(ctx, "delete", key); err != nil {
		return err
	}
	return f.after(ctx, "delete", key, f.Store.Delete(ctx, key))
}
