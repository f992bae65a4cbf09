package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"github.com/walship/walship/internal/flock"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/object"
	"github.com/walship/walship/restore/spool"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/walfile"
)

// The prefetcher keeps segments in the spool decoded and verified, each beside a small
// checksum file (see package spool), so a torn or damaged spool file is simply fetched again:
// the spool needs no fsync. Files older than spoolMaxAge are dropped, which bounds what a
// timeline switch or an abandoned recovery leaves behind.
const (
	spoolMaxAge = 10 * time.Minute
	missSuffix  = ".missing"
)

func (f *Fetcher) prefetchDir() string { return filepath.Join(f.cfg.SpoolDir, "prefetch") }

// fromSpool serves name from the spool when a verified copy is there.
func (f *Fetcher) fromSpool(name, dest string, hist history) (bool, error) {
	p := filepath.Join(f.prefetchDir(), name)
	spool.AwaitInFlight(f.prefetchDir(), name)
	hdr, check, err := spool.Serve(p, name, dest)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // not spooled, or not completely yet
	}
	if err != nil {
		f.cfg.Log.Warn("prefetched copy unusable; fetching from storage", "file", name, "err", err.Error())
		spool.Remove(p)
		return false, nil
	}
	if err := checkTimeline(name, hdr, hist); err != nil {
		os.Remove(dest)
		return true, err
	}
	f.cfg.Log.Debug("restored from prefetch spool", "file", name, "check", check)
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
	// The segments before the one just served leave the spool (that one stays: PostgreSQL may
	// ask for it again, see spool.SumSuffix). A following prefetcher does it when it sees the position
	// move, off the path of the call replay waits for (removing a segment whose last name is the
	// spool's frees its 4096 cached pages): a call served from the spool took 15.4 ms with the
	// cleaning, 9.2 ms without.
	running := spool.Running(dir)
	if !running {
		cleanSpool(dir, tli, segno, segSize)
	}
	// A following prefetcher (Follow) keeps its window ahead of this.
	os.WriteFile(filepath.Join(dir, spool.PositionFile), []byte(name), 0o600)
	var want []string
	nextHeld := false
	for i := 1; i <= f.cfg.Prefetch; i++ {
		n := walfile.SegmentName(tli, segno+uint64(i), segSize)
		if _, err := os.Stat(filepath.Join(dir, n+spool.SumSuffix)); err == nil {
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
	if len(want) == 0 || (nextHeld && len(want) < (f.cfg.Prefetch+1)/2) || running {
		return
	}
	if err := f.cfg.StartPrefetch(want, segSize); err != nil {
		f.cfg.Log.Warn("could not start prefetch", "err", err.Error())
	}
}

// cleanSpool drops the spool files (segments, their checksum files, misses) of timeline tli
// before segment below, and any older than spoolMaxAge.
func cleanSpool(dir string, tli uint32, below uint64, segSize uint32) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		base := strings.TrimSuffix(strings.TrimSuffix(n, missSuffix), spool.SumSuffix)
		info, err := e.Info()
		if err != nil {
			continue
		}
		t, s, perr := walfile.ParseSegment(base, segSize)
		stale := perr == nil && t == tli && s < below
		if stale || time.Since(info.ModTime()) > spoolMaxAge {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// Prefetch downloads names into the spool concurrently. Only one prefetcher runs per spool (an
// flock); a second returns at once. A name the archive lacks is recorded as a miss so a standby's
// next probe for it need not ask storage.
func Prefetch(ctx context.Context, st storage.Store, spoolDir string, names []string, ids []age.Identity) error {
	return Follow(ctx, st, spoolDir, names, ids, 0, 0)
}

// followPoll is how often a following prefetcher looks at wal-fetch's position; followIdle is how
// long it waits for wal-fetch to move before it exits.
const (
	followPoll = 5 * time.Millisecond
	followIdle = 3 * time.Second
)

// Follow is Prefetch, and then, with depth > 0, stays to keep the spool filled: as wal-fetch
// (whose last request is in spool.PositionFile) moves on, it keeps the segments up to depth ahead of
// it downloaded or downloading, prefetchers at a time, starting the next one as soon as a download
// ends and there is room, until wal-fetch stops asking for followIdle, asks for another timeline,
// or the archive ends (a miss). One process then serves a whole recovery, instead of one started
// for each half spool with its own storage set-up and connections, and replay does not wait at
// the end of each batch for the slowest download of it. names are consecutive segments of
// segSize bytes.
func Follow(ctx context.Context, st storage.Store, spoolDir string, names []string, ids []age.Identity, depth int, segSize uint32) error {
	dir := filepath.Join(spoolDir, "prefetch")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	unlock, ok, err := flock.TryLock(filepath.Join(dir, ".lock"))
	if err != nil || !ok {
		return err // nil when another prefetcher is at work
	}
	unlock = sync.OnceFunc(unlock)
	defer unlock()
	if depth <= 0 || len(names) == 0 {
		_, err := prefetchAll(ctx, st, dir, names, ids)
		return err
	}
	tli, last, err := walfile.ParseSegment(names[len(names)-1], segSize)
	if err != nil {
		return err
	}
	_, firstSeg, err := walfile.ParseSegment(names[0], segSize)
	if err != nil {
		return err
	}
	// The archive ends (a miss): the lock goes to whichever prefetcher a later call starts, and
	// this one stays only to drop the served segments once the calls stop.
	ended := func() error {
		unlock()
		settle(ctx, dir, tli, segSize)
		return ctx.Err()
	}
	// The first segment alone: replay asks for it next, and downloaded beside the others it
	// shared the cores with them and came last (a wal-fetch call at the start of a recovery
	// waited 80-116 ms for it).
	if missed, err := prefetchOne(ctx, st, dir, names[0], ids, false, nil); err != nil {
		return err
	} else if missed {
		return ended()
	}
	// While replay spaces wal-fetch's calls (writebackSpacing or more between them, on
	// average), a segment spooled well ahead of the calls has its writeback started at once
	// (see startWriteback). Calls that come one after another, with nothing to replay between
	// them, wait for the downloads, and the I/O would only compete with those: fetching 64
	// segments so took 1.4-1.8 s without it and 1.7-2.0 s with it.
	var at atomic.Uint64
	var spacing atomic.Int64 // moving average of the time between calls, ns
	at.Store(firstSeg - 1)
	lead := uint64(max(1, depth/2))
	ahead := func(name string) bool {
		_, s, err := walfile.ParseSegment(name, segSize)
		return err == nil && s >= at.Load()+lead && time.Duration(spacing.Load()) >= writebackSpacing
	}
	order := newTurns(runtime.GOMAXPROCS(0) - 1) // a turn per core but replay's
	w := startWorkers(ctx, st, dir, ids, ahead, func(name string) *turnReader {
		_, s, _ := walfile.ParseSegment(name, segSize) // names are segments: checked as fed
		return &turnReader{t: order, seg: s}
	})
	for _, n := range names[1:] {
		if !w.feed(n) {
			break
		}
	}
	pos, seen, moved := uint64(0), false, time.Now()
	for ctx.Err() == nil && !w.stopped() {
		b, _ := os.ReadFile(filepath.Join(dir, spool.PositionFile))
		t, p, err := walfile.ParseSegment(string(b), segSize)
		switch {
		case err == nil && t != tli:
			return w.wait() // another timeline: the next call starts a prefetcher for it
		case err == nil && (p != pos || !seen):
			if seen {
				spacing.Store((3*spacing.Load() + int64(time.Since(moved))) / 4)
			}
			pos, seen, moved = p, true, time.Now()
			at.Store(p)
			cleanSpool(dir, tli, p, segSize) // the calls leave it to a follower (see prefetchAfter)
		case time.Since(moved) > followIdle:
			err := w.wait()
			if seen {
				cleanSpool(dir, tli, pos+1, segSize) // the calls have stopped: see settle
			}
			return err
		}
		if pos+uint64(depth) > last {
			last = max(last, pos) + 1
			w.feed(walfile.SegmentName(tli, last, segSize))
			continue
		}
		time.Sleep(followPoll)
	}
	if err := w.wait(); err != nil || ctx.Err() != nil {
		return errors.Join(err, ctx.Err())
	}
	return ended()
}

// writebackSpacing is the time between wal-fetch's calls from which a following prefetcher
// starts the writeback of what it spools: replay of a 16 MiB segment takes 50-70 ms on the
// benchmark machine, and a burst of calls with nothing to replay between them comes every
// 20-30 ms.
const writebackSpacing = 40 * time.Millisecond

// settleMax bounds how long a prefetcher whose archive ended waits for the calls to stop.
const settleMax = time.Minute

// settle waits until wal-fetch's calls have stopped (its position unchanged for followIdle; at
// most settleMax), then drops the segments of timeline tli served so far from the spool: they
// are PostgreSQL's files in pg_wal by then, and the spool kept the last one only for
// PostgreSQL's repeated request for it at the end of a recovery (see spool.SumSuffix), which comes
// moments after the miss that ended the archive. Without this the last segment's second name
// would stay in the spool, 16 MiB that pg_basebackup copies, until the next recovery.
func settle(ctx context.Context, dir string, tli uint32, segSize uint32) {
	deadline := time.Now().Add(settleMax)
	last, moved := "", time.Now()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, spool.PositionFile))
		if string(b) != last {
			last, moved = string(b), time.Now()
		}
		t, pos, err := walfile.ParseSegment(last, segSize)
		if err == nil && t != tli {
			return
		}
		if time.Since(moved) >= followIdle {
			if err == nil {
				cleanSpool(dir, tli, pos+1, segSize)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// workers are a following prefetcher's downloads: prefetchers goroutines, each holding a
// decoder, taking names from jobs. The first miss or error stops the feeding; downloads already
// under way finish.
type workers struct {
	jobs chan string
	wg   sync.WaitGroup
	mu   sync.Mutex
	stop bool
	errs []error
}

// startWorkers starts the downloads; ahead reports whether a name is far enough ahead of replay
// for its writeback to start at once, and order gives each download its place in the turns.
func startWorkers(ctx context.Context, st storage.Store, dir string, ids []age.Identity, ahead func(name string) bool,
	order func(name string) *turnReader) *workers {
	w := &workers{jobs: make(chan string)}
	for range prefetchers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for name := range w.jobs {
				missed, err := prefetchOne(ctx, st, dir, name, ids, ahead(name), order(name))
				if missed || err != nil {
					w.mu.Lock()
					w.stop = true
					w.errs = append(w.errs, err)
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

// feed hands name to the next free worker, waiting for one; false once stopped.
func (w *workers) feed(name string) bool {
	if w.stopped() {
		return false
	}
	w.jobs <- name
	return true
}

func (w *workers) stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stop
}

// wait ends the feeding, waits for the downloads under way and returns their errors.
func (w *workers) wait() error {
	close(w.jobs)
	w.wg.Wait()
	return errors.Join(w.errs...)
}

// prefetchAll downloads names (segments only) into dir, prefetchers at a time; missed reports
// whether the archive lacked one of them.
func prefetchAll(ctx context.Context, st storage.Store, dir string, names []string, ids []age.Identity) (missed bool, err error) {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	misses := make([]bool, len(names))
	slots := make(chan struct{}, prefetchers) // each holds a decoder
	for i, name := range names {
		if walfile.Classify(name) != walfile.Segment {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			misses[i], errs[i] = prefetchOne(ctx, st, dir, name, ids, false, nil)
		}()
	}
	wg.Wait()
	return slices.Contains(misses, true), errors.Join(errs...)
}

// prefetchers bounds the downloads, and so the decoders, of one prefetcher.
const prefetchers = 4

// prefetchOne downloads name into dir, starting its writeback with writeback; missed reports
// that the archive lacks it (recorded as a miss). With turn, the body is read through it (see
// turns).
func prefetchOne(ctx context.Context, st storage.Store, dir, name string, ids []age.Identity, writeback bool, turn *turnReader) (missed bool, err error) {
	final := filepath.Join(dir, name)
	if _, err := os.Stat(final + spool.SumSuffix); err == nil {
		return false, nil
	}
	key, err := layout.WALKey(name)
	if err != nil {
		return false, err
	}
	// The temp file is made before the request: it tells a wal-fetch call that asks for name
	// meanwhile to wait for this download (spool.AwaitInFlight) rather than make its own.
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return false, err
	}
	rc, info, err := st.Get(ctx, key)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		if errors.Is(err, storage.ErrNotExist) {
			return true, touch(filepath.Join(dir, name+missSuffix))
		}
		return false, err
	}
	defer rc.Close()
	os.Remove(filepath.Join(dir, name+missSuffix))
	var body io.Reader = rc
	if turn != nil {
		turn.r = rc
		defer turn.done()
		body = turn
	}
	return false, writeSpooled(tmp, body, info.Metadata, ids, final, writeback)
}

// writeSpooled decodes and verifies a stored object into tmp, and renames it to the spool file
// final once it verified, then writes its checksum file (see spool.Magic); otherwise tmp is
// removed. With writeback, the file's writeback is started (see startWriteback).
func writeSpooled(tmp *os.File, r io.Reader, meta map[string]string, ids []age.Identity, final string, writeback bool) error {
	fr, err := object.NewReaderWith(r, ids)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	defer fr.Close()
	preallocate(tmp, meta)
	crc := spool.NewCRC()
	sum, err := fr.CopyTo(io.MultiWriter(tmp, crc))
	if err == nil {
		if want, ok := object.SummaryFromMetadata(meta); ok && want != sum {
			err = fmt.Errorf("%w: content xxh3 %s, object metadata says %s", object.ErrCorrupt, sum.Hex(), want.Hex())
		}
	}
	if err == nil && writeback {
		startWriteback(tmp)
	}
	// The stamp is taken after the rename, which sets the change time; the checksum file comes
	// last, complete under its name at once: that is what a waiting call looks for.
	if err == nil {
		err = os.Rename(tmp.Name(), final)
	}
	var fi os.FileInfo
	if err == nil {
		fi, err = tmp.Stat()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = writeAtomic(final+spool.SumSuffix, spool.EncodeSum(crc.Sum32(), sum.RawSize, spool.StampOf(fi)))
	}
	if err != nil {
		os.Remove(tmp.Name())
		os.Remove(final)
	}
	return err
}

// writeAtomic writes b to a temp file beside path and renames it to path.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
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
