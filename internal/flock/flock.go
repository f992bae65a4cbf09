// Package flock is the advisory file locks the background processes (the prefetcher, the pusher)
// hold in the spool, so that only one runs per spool and a call can tell whether one is at work.
package flock

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
)

// TryLock takes an exclusive lock on path, creating it; ok is false when another process holds
// it. Unlock releases it (and is a no-op when ok is false).
func TryLock(path string) (unlock func(), ok bool, err error) {
	f, unlock, ok, err := tryLock(path)
	if f != nil {
		f.Close()
	}
	return unlock, ok, err
}

// tryLock is TryLock that, when another process holds the lock, returns the file still open.
func tryLock(path string) (held *os.File, unlock func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, func() {}, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return f, func() {}, false, nil
		}
		f.Close()
		return nil, func() {}, false, err
	}
	return nil, unlockFunc(f), true, nil
}

func unlockFunc(f *os.File) func() {
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
}

// Lock takes an exclusive lock on path, creating it, and waits for a holder to release it until
// ctx ends; ok is false when ctx ended first. The wait is one blocking flock(2), woken by the
// release itself, not a poll. A wait given up goes on in the background and releases the lock at
// once if it takes it later, so an abandoned wait never holds the lock.
func Lock(ctx context.Context, path string) (unlock func(), ok bool, err error) {
	f, unlock, ok, err := tryLock(path)
	if f == nil {
		return unlock, ok, err
	}
	var mu sync.Mutex
	abandoned := false
	done := make(chan error, 1)
	go func() {
		err := flockEINTR(f, syscall.LOCK_EX)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			f.Close() // releases the lock, if taken
			return
		}
		done <- err
	}()
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		mu.Lock()
		select {
		case werr = <-done: // taken as ctx ended
			mu.Unlock()
		default:
			abandoned = true
			mu.Unlock()
			return func() {}, false, nil
		}
	}
	if werr != nil {
		f.Close()
		return func() {}, false, werr
	}
	return unlockFunc(f), true, nil
}

// flockEINTR is flock(2), retried when a signal (the Go runtime's own, for preemption)
// interrupts the wait.
func flockEINTR(f *os.File, how int) error {
	for {
		if err := syscall.Flock(int(f.Fd()), how); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// Held reports whether a process holds the lock on path; a missing file is no lock.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
