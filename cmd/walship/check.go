package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/open"
)

// runCheck proves the storage works end to end before PostgreSQL depends on it: it creates a
// probe object, refuses to overwrite it, reads it back through the verified frame, and deletes it.
func runCheck(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("check", "[flags]", "Check that the storage is reachable, writable and refuses overwrites.")
	if code, done := e.parse(fs, c, args, 0); done {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := open.Open(ctx, c.storage, open.Options{Getenv: e.getenv, Logger: e.log})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship check: %s\n", oneLine(err))
		return exitUsage
	}
	start := time.Now()
	if err := probe(ctx, st); err != nil {
		fmt.Fprintf(e.stderr, "walship check: %s: %s\n", st, oneLine(err))
		return exitFailure
	}
	fmt.Fprintf(e.stdout, "storage %s OK: create, overwrite refusal, verified read and delete in %s\n",
		st, time.Since(start).Round(time.Millisecond))
	return exitOK
}

func probe(ctx context.Context, st storage.Store) error {
	var id [8]byte
	rand.Read(id[:])
	key := layout.ProbeKey(hex.EncodeToString(id[:]))
	raw := make([]byte, 64<<10)
	rand.Read(raw)
	var frame bytes.Buffer
	sum, err := object.Encode(&frame, bytes.NewReader(raw), object.DefaultOptions)
	if err != nil {
		return err
	}
	if err := storage.Create(ctx, st, key, bytes.NewReader(frame.Bytes()), sum.Metadata()); err != nil {
		return fmt.Errorf("write probe: %w", err)
	}
	defer st.Delete(context.WithoutCancel(ctx), key)
	if err := storage.Create(ctx, st, key, bytes.NewReader(frame.Bytes()), nil); !errors.Is(err, storage.ErrExist) {
		return fmt.Errorf("second create of the probe was not refused (got %v): this store could overwrite WAL", err)
	}
	rc, info, err := st.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read probe: %w", err)
	}
	defer rc.Close()
	var back bytes.Buffer
	got, err := object.Decode(&back, rc)
	if err != nil {
		return fmt.Errorf("read probe: %w", err)
	}
	if meta, ok := object.SummaryFromMetadata(info.Metadata); !ok || meta != sum || got != sum {
		return errors.New("probe read back differs from what was written")
	}
	if err := st.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete probe: %w", err)
	}
	return nil
}
