package restore

import (
	"io"
	"strings"
	"testing"
	"time"
)

// waitingFor waits until n downloads wait for a turn.
func waitingFor(t *testing.T, tr *turns, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.mu.Lock()
		w := 0
		for _, c := range tr.waiting {
			w += c
		}
		tr.mu.Unlock()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d downloads wait for a turn, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// await fails the test with msg unless ch is closed within 5 s.
func await(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}

// TestTurnsEarliestFirst: a freed turn goes to the download of the earliest segment, whatever the
// order they asked in.
func TestTurnsEarliestFirst(t *testing.T) {
	tr := newTurns(1)
	tr.acquire(5)
	got := make(chan uint64, 3)
	for i, seg := range []uint64{9, 7, 8} {
		go func() {
			tr.acquire(seg)
			got <- seg
			tr.release()
		}()
		waitingFor(t, tr, i+1)
	}
	tr.release()
	for _, want := range []uint64{7, 8, 9} {
		select {
		case seg := <-got:
			if seg != want {
				t.Fatalf("segment %d had its turn, want %d first", seg, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no turn for segment %d", want)
		}
	}
}

// TestTurnsSeveralFree: with two turns, two downloads work at once.
func TestTurnsSeveralFree(t *testing.T) {
	tr := newTurns(2)
	tr.acquire(3)
	done := make(chan struct{})
	go func() { tr.acquire(4); close(done) }()
	await(t, done, "the second of two turns was not given")
	if newTurns(0).free != 1 {
		t.Fatal("turns for a machine of one core: none, want one")
	}
}

// blockingReader returns its content once release is closed.
type blockingReader struct {
	release chan struct{}
	r       io.Reader
}

func (b *blockingReader) Read(p []byte) (int, error) {
	<-b.release
	return b.r.Read(p)
}

// TestTurnReaderFreesTurnOnNetwork: a download waiting for the network holds no turn, so a later
// segment's download works meanwhile; once its bytes arrive it holds one until it reads again or
// is done.
func TestTurnReaderFreesTurnOnNetwork(t *testing.T) {
	tr := newTurns(1)
	body := &blockingReader{release: make(chan struct{}), r: strings.NewReader("wal")}
	near := &turnReader{r: body, t: tr, seg: 1}
	read := make(chan error, 1)
	go func() {
		_, err := near.Read(make([]byte, 3))
		read <- err
	}()
	taken := make(chan struct{})
	go func() { tr.acquire(2); close(taken) }()
	await(t, taken, "a download waiting for the network kept a later one from its turn")
	close(body.release)
	waitingFor(t, tr, 1) // the near download's bytes arrived: it waits for the turn
	tr.release()
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	later := make(chan struct{})
	go func() { tr.acquire(3); close(later) }()
	waitingFor(t, tr, 1)
	select {
	case <-later:
		t.Fatal("a turn was given while a download worked on what it read")
	case <-time.After(20 * time.Millisecond):
	}
	near.done()
	await(t, later, "done did not give the turn back")
}
