package restore

import (
	"io"
	"sync"
)

// turns orders the CPU work of a following prefetcher's concurrent downloads by how soon replay
// needs each segment. Where replay, the storage server and the downloads share few cores (two in
// the benchmark), four downloads decoding at once each ran at a quarter of the speed, so the
// segment replay asked for next was spooled no sooner than the three after it: at the start of a
// recovery the third wal-fetch call waited 97-148 ms, where replaying the segment before it took
// 56 ms. A download holds a turn while it decodes and writes what it has read and gives it up
// whenever it reads from the network (turnReader), so downloads still wait for the network
// together; a free turn goes to the waiting download of the earliest segment.
type turns struct {
	mu      sync.Mutex
	cond    *sync.Cond
	free    int
	waiting map[uint64]int // segment number -> downloads waiting for a turn
}

func newTurns(n int) *turns {
	t := &turns{free: max(1, n), waiting: map[uint64]int{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// earliest is the smallest segment number waiting; the caller holds mu and waits itself.
func (t *turns) earliest() uint64 {
	first := true
	var min uint64
	for s := range t.waiting {
		if first || s < min {
			min, first = s, false
		}
	}
	return min
}

// acquire waits for a turn for a download of segment seg: one is free and no download of an
// earlier segment waits for it.
func (t *turns) acquire(seg uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.waiting[seg]++
	for t.free == 0 || t.earliest() < seg {
		t.cond.Wait()
	}
	if t.waiting[seg]--; t.waiting[seg] == 0 {
		delete(t.waiting, seg)
	}
	t.free--
	if t.free > 0 && len(t.waiting) > 0 {
		t.cond.Broadcast() // the next waiter may take another free turn
	}
}

func (t *turns) release() {
	t.mu.Lock()
	t.free++
	t.mu.Unlock()
	t.cond.Broadcast()
}

// turnReader is a download's body, read with turns: it holds no turn while it waits for the
// network and takes one, by its segment's place, before the caller works on what it read.
type turnReader struct {
	r    io.Reader
	t    *turns
	seg  uint64
	held bool
}

func (r *turnReader) Read(p []byte) (int, error) {
	r.done()
	n, err := r.r.Read(p)
	r.t.acquire(r.seg)
	r.held = true
	return n, err
}

// done gives up the turn the last Read took; the download has finished with what it read.
func (r *turnReader) done() {
	if r.held {
		r.t.release()
		r.held = false
	}
}
