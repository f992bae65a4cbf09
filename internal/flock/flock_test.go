package flock

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestLockWaitsForRelease: Lock returns as soon as the holder releases, holding the lock.
func TestLockWaitsForRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claim")
	release, ok, err := TryLock(path)
	if !ok || err != nil {
		t.Fatalf("TryLock: ok %v, err %v", ok, err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		released <- time.Now()
		release()
	}()
	unlock, ok, err := Lock(context.Background(), path)
	if !ok || err != nil {
		t.Fatalf("Lock: ok %v, err %v", ok, err)
	}
	if got := time.Now(); got.Before(<-released) {
		t.Fatal("Lock returned before the holder released")
	}
	if _, ok, _ := TryLock(path); ok {
		t.Fatal("the lock Lock returned is not held")
	}
	unlock()
	if u, ok, _ := TryLock(path); !ok {
		t.Fatal("unlock did not release")
	} else {
		u()
	}
}

// TestLockGivenUp: a Lock whose ctx ends returns not ok, and its abandoned wait, taking the lock
// once the holder releases, lets it go at once.
func TestLockGivenUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claim")
	release, ok, _ := TryLock(path)
	if !ok {
		t.Fatal("TryLock failed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, ok, err := Lock(ctx, path); ok || err != nil {
		t.Fatalf("Lock on a held lock with a 30 ms deadline: ok %v, err %v", ok, err)
	}
	release()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u, ok, _ := TryLock(path)
		if ok {
			u()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the abandoned wait still holds the lock 5 s after the holder released it")
		}
		time.Sleep(time.Millisecond)
	}
}
