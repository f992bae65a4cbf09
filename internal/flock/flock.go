// Package flock is the advisory file locks the background processes (the prefetcher, the pusher)
// hold in the spool, so that only one runs per spool and a call can tell whether one is at work.
package flock

import (
	"errors"
	"os"
	"syscall"
)

// TryLock takes an exclusive lock on path, creating it; ok is false when another process holds
// it. Unlock releases it (and is a no-op when ok is false).
func TryLock(path string) (unlock func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return func() {}, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return func() {}, false, nil
		}
		return func() {}, false, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, true, nil
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
