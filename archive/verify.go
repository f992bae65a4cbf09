package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"filippo.io/age"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// Result is the outcome of verifying one archived file.
type Result struct {
	Name string
	Key  string
	Raw  int64
	Err  error // nil when the object decoded, matched its metadata and (for WAL) its name
}

// Verify reads every WAL, history, partial and backup object in the archive with workers
// concurrent downloads, decoding each completely, and calls fn with each result in no particular
// order. It returns an error only when the archive could not be listed.
func Verify(ctx context.Context, st storage.Store, workers int, ids []age.Identity, fn func(Result)) error {
	keys := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range keys {
				r := verifyOne(ctx, st, key, ids)
				mu.Lock()
				fn(r)
				mu.Unlock()
			}
		}()
	}
	var listErr error
	for _, prefix := range []string{"pg/wal/", layout.HistoryPrefix} {
		err := st.List(ctx, prefix, func(i storage.Info) error {
			if _, ok := layout.WALName(i.Key); ok {
				keys <- i.Key
			}
			return nil
		})
		if err != nil {
			listErr = fmt.Errorf("list %s: %w", prefix, err)
			break
		}
	}
	close(keys)
	wg.Wait()
	return listErr
}

func verifyOne(ctx context.Context, st storage.Store, key string, ids []age.Identity) Result {
	name, _ := layout.WALName(key)
	r := Result{Name: name, Key: key}
	rc, info, err := st.Get(ctx, key)
	if err != nil {
		r.Err = err
		return r
	}
	defer rc.Close()
	head := &headWriter{}
	sum, err := object.DecodeWith(head, rc, ids)
	if err != nil {
		r.Err = err
		return r
	}
	r.Raw = sum.RawSize
	if want, ok := object.SummaryFromMetadata(info.Metadata); ok && want != sum {
		r.Err = fmt.Errorf("%w: content xxh3 %s, metadata says %s", object.ErrCorrupt, sum.Hex(), want.Hex())
		return r
	}
	if k := walfile.Classify(name); k == walfile.Segment || k == walfile.Partial {
		h, err := walfile.ParseHeader(head.b.Bytes())
		if err != nil {
			r.Err = fmt.Errorf("%w: %v", object.ErrCorrupt, err)
			return r
		}
		if err := walfile.CheckHeader(name, h, sum.RawSize); err != nil {
			r.Err = fmt.Errorf("%w: %v", object.ErrCorrupt, err)
		}
	}
	return r
}

// headWriter keeps the first 40 bytes (the WAL long page header) and discards the rest.
type headWriter struct{ b bytes.Buffer }

func (h *headWriter) Write(p []byte) (int, error) {
	if n := 40 - h.b.Len(); n > 0 {
		h.b.Write(p[:min(n, len(p))])
	}
	return len(p), nil
}

var _ io.Writer = (*headWriter)(nil)

// IsCorrupt reports whether a verification error means damaged content (as opposed to the
// archive being unreadable).
func IsCorrupt(err error) bool { return errors.Is(err, object.ErrCorrupt) }
