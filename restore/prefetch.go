package restore

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// The spool keeps prefetched objects as stored (still framed), so serving one re-verifies it and
// a torn or damaged spool file is simply fetched again: nothing in the spool is trusted, so it
// needs no fsync. Files older than spoolMaxAge are dropped, which bounds what a timeline switch
// or an abandoned recovery leaves behind.
const (
	spoolMaxAge = 10 * time.Minute
	missSuffix  = ".missing"
)

func (f *Fetcher) prefetchDir() string { return filepath.Join(f.cfg.SpoolDir, "prefetch") }

// fromSpool serves name from the spool when a verified copy is there.
func (f *Fetcher) fromSpool(name, dest string, hist history) (bool, error) {
	p := filepath.Join(f.prefetchDir(), name)
	sf, err := os.Open(p)
	if err != nil {
		return false, nil
	}
	hdr, err := writeVerified(sf, name, dest, nil, f.cfg.Identities)
	sf.Close()
	os.Remove(p)
	if err != nil {
		f.cfg.Log.Warn("prefetched copy unusable; fetching from storage", "file", name, "err", err.Error())
		return false, nil
	}
	if err := checkTimeline(name, hdr, hist); err != nil {
		os.Remove(dest)
		return true, err
	}
	f.cfg.Log.Debug("restored from prefetch spool", "file", name)
	if hdr != nil {
		f.prefetchAfter(name, hdr.SegSize)
	}
	return true, nil
}

// The negative cache: a miss is an empty file NAME.missing in the prefetch spool, dated by its
// modification time, written by the prefetcher and (in standby mode) by a probe that storage
// answered "not there". It is bounded like the rest of the spool: recording a miss drops expired
// ones, and cleanSpool drops those of segments already replayed.

// trustMisses reports whether a miss may answer a probe for a file of kind: only on a standby,
// which asks again every few seconds anyway, and only for the files a waiting standby probes.
func (f *Fetcher) trustMisses(kind walfile.Kind) bool {
	return f.cfg.Standby && f.cfg.MissTTL > 0 && (kind == walfile.Segment || kind == walfile.History)
}

func (f *Fetcher) missPath(name string) string {
	return filepath.Join(f.prefetchDir(), name+missSuffix)
}

// recentMiss reports whether name was found absent less than MissTTL ago.
func (f *Fetcher) recentMiss(name string) bool {
	if f.cfg.MissTTL <= 0 {
		return false
	}
	fi, err := os.Stat(f.missPath(name))
	if err != nil {
		return false
	}
	age := f.cfg.Now().Sub(fi.ModTime())
	return age >= 0 && age < f.cfg.MissTTL
}

// recordMiss dates a miss of name now and drops expired ones. A failure only costs a request later.
func (f *Fetcher) recordMiss(name string) {
	dir := f.prefetchDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	now := f.cfg.Now()
	p := f.missPath(name)
	if touch(p) != nil || os.Chtimes(p, now, now) != nil {
		os.Remove(p)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), missSuffix) || e.Name() == name+missSuffix {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) >= f.cfg.MissTTL {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// forgetMiss drops a miss once storage holds the file.
func (f *Fetcher) forgetMiss(name string) { os.Remove(f.missPath(name)) }

// prefetchAfter starts the background download of the segments following name that the spool
// does not hold yet, and drops spool files that can no longer be asked for.
func (f *Fetcher) prefetchAfter(name string, segSize uint32) {
	if f.cfg.Prefetch <= 0 || f.cfg.StartPrefetch == nil {
		return
	}
	tli, segno, err := walfile.ParseSegment(name, segSize)
	if err != nil {
		return
	}
	dir := f.prefetchDir()
	f.cleanSpool(dir, tli, segno, segSize)
	var want []string
	nextHeld := false
	for i := 1; i <= f.cfg.Prefetch; i++ {
		n := walfile.SegmentName(tli, segno+uint64(i), segSize)
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			nextHeld = nextHeld || i == 1
			continue
		}
		if f.recentMiss(n) {
			break // the archive ends before n
		}
		want = append(want, n)
	}
	// A background process per call, to fetch the one segment the call consumed, cost as much CPU
	// as fetching in the foreground. So the spool is refilled once half of it has been served (or
	// when the next segment is not there), and not while a prefetcher is still at work.
	if len(want) == 0 || (nextHeld && len(want) < (f.cfg.Prefetch+1)/2) || prefetcherRunning(dir) {
		return
	}
	if err := f.cfg.StartPrefetch(want); err != nil {
		f.cfg.Log.Warn("could not start prefetch", "err", err.Error())
	}
}

// prefetcherRunning reports whether a prefetcher holds the spool's lock (see Prefetch).
func prefetcherRunning(dir string) bool {
	lock, err := os.Open(filepath.Join(dir, ".lock"))
	if err != nil {
		return false
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	return false
}

func (f *Fetcher) cleanSpool(dir string, tli uint32, segno uint64, segSize uint32) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		base := strings.TrimSuffix(n, missSuffix)
		info, err := e.Info()
		if err != nil {
			continue
		}
		t, s, perr := walfile.ParseSegment(base, segSize)
		stale := perr == nil && t == tli && s <= segno
		if stale || time.Since(info.ModTime()) > spoolMaxAge {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// Prefetch downloads names into the spool concurrently. Only one prefetcher runs per spool (an
// flock); a second returns at once. A name the archive lacks is recorded as a miss so a standby's
// next probe for it need not ask storage.
func Prefetch(ctx context.Context, st storage.Store, spoolDir string, names []string) error {
	dir := filepath.Join(spoolDir, "prefetch")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // another prefetcher is at work
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		if walfile.Classify(name) != walfile.Segment {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = prefetchOne(ctx, st, dir, name)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func prefetchOne(ctx context.Context, st storage.Store, dir, name string) error {
	final := filepath.Join(dir, name)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	key, err := layout.WALKey(name)
	if err != nil {
		return err
	}
	rc, _, err := st.Get(ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		return touch(filepath.Join(dir, name+missSuffix))
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	os.Remove(filepath.Join(dir, name+missSuffix))
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), final)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func touch(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return f.Close()
}
