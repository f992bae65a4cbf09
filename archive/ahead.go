package archive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/walship/walship/internal/flock"
)

// Pushing ahead in the background. In a backlog (PostgreSQL has more files marked ready than the
// one it asks for) a call starts one detached pusher (Config.StartAhead, running PushAhead) and
// pushes only its own file. The pusher keeps Parallel files in flight until no ready file is left,
// so the pipeline never drains between PostgreSQL's one-at-a-time calls, and those calls are then
// answered by the markers it writes. A claim (an flock on spool/pushing/NAME) keeps the call and
// the pusher from compressing and uploading the same file twice: the call waits for the pusher's
// claim and then finds the marker; the pusher passes over a file the call has claimed. Neither a
// claim nor the pusher is needed for correctness: a marker is written only once the object is
// durable, and pushing a file twice stores it once (the second push finds identical content).

// claimWait bounds how long a call waits for the pusher to finish a file it is pushing before
// pushing it as well (a stalled upload in the pusher must not stall PostgreSQL's archiver longer
// than its own push would).
const claimWait = 60 * time.Second

// aheadLifetime bounds one pusher; the next backlog starts another.
const aheadLifetime = 10 * time.Minute

func (p *Pusher) claimDir() string { return filepath.Join(p.cfg.SpoolDir, "pushing") }

// claim takes name's claim. With wait it waits until the claim is free (the pusher is done with
// the file), claimWait passes or ctx ends; without, it gives up at once. ok reports whether the
// claim is held; release is always safe to call.
func (p *Pusher) claim(ctx context.Context, name string, wait bool) (release func(), ok bool) {
	if err := os.MkdirAll(p.claimDir(), 0o700); err != nil {
		return func() {}, false
	}
	path := filepath.Join(p.claimDir(), name)
	if !wait {
		unlock, ok, _ := flock.TryLock(path)
		return unlock, ok
	}
	ctx, cancel := context.WithTimeout(ctx, claimWait)
	defer cancel()
	unlock, ok, _ := flock.Lock(ctx, path)
	return unlock, ok
}

// aheadRunning reports whether a pusher holds the spool's pusher lock.
func (p *Pusher) aheadRunning() bool { return flock.Held(filepath.Join(p.claimDir(), ".lock")) }

// pushClaimed pushes the requested file under its claim (see claim): if the pusher is at work on
// it, this waits and then finds the marker the pusher wrote.
func (p *Pusher) pushClaimed(ctx context.Context, path string) error {
	release, _ := p.claim(ctx, filepath.Base(path), true)
	defer release()
	return p.pushOne(ctx, path)
}

// PushAhead pushes every file PostgreSQL has marked ready in walDir that has no marker, Parallel
// at a time, history files first and then oldest first, until none is left. Only one runs per
// spool (an flock); a second returns at once. It stops at the first file that fails, leaving it
// and the rest to PostgreSQL's own calls, which report the error; and it stops when the data directory becomes a
// standby (unless AllowStandby), when ctx ends, or after aheadLifetime.
func (p *Pusher) PushAhead(ctx context.Context, walDir string) error {
	if err := os.MkdirAll(p.claimDir(), 0o700); err != nil {
		return err
	}
	unlock, ok, err := flock.TryLock(filepath.Join(p.claimDir(), ".lock"))
	if err != nil || !ok {
		return err // nil when another pusher is at work
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, aheadLifetime)
	defer cancel()
	var mu sync.Mutex
	var failed []error
	for ctx.Err() == nil {
		if err := p.checkNotStandby(walDir); err != nil {
			return err
		}
		todo := p.readyNeighbours(walDir, "", -1)
		if len(todo) == 0 {
			return nil
		}
		round, stop := context.WithCancel(ctx)
		work := make(chan string)
		pushed := 0
		var wg sync.WaitGroup
		for range min(p.cfg.Parallel, len(todo)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range work {
					release, ok := p.claim(ctx, n, false)
					if !ok {
						continue // PostgreSQL's call is pushing it
					}
					if _, err := os.Stat(p.markerPath(n)); err == nil {
						release() // pushed since the listing
						continue
					}
					// Archived by PostgreSQL's own call since the listing, its marker maybe
					// already pruned by a later call (see pruneMarkers): no longer ready.
					if _, err := os.Stat(filepath.Join(walDir, "archive_status", n+".ready")); err != nil {
						release()
						continue
					}
					err := p.pushOne(ctx, filepath.Join(walDir, n))
					release()
					mu.Lock()
					if err != nil {
						failed = append(failed, fmt.Errorf("%s: %w", n, err))
						stop() // what failed one file (storage, configuration) likely fails the next
					} else {
						pushed++
					}
					mu.Unlock()
				}
			}()
		}
	dispatch:
		for _, n := range todo {
			select {
			case work <- n:
			case <-round.Done():
				break dispatch
			}
		}
		close(work)
		wg.Wait()
		stop()
		if len(failed) > 0 {
			return fmt.Errorf("stopped after a failure, leaving the rest to PostgreSQL's calls: %w", errors.Join(failed...))
		}
		if pushed == 0 {
			return nil // everything left is claimed by PostgreSQL's calls or failed
		}
	}
	return ctx.Err()
}
