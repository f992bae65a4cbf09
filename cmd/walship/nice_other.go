//go:build !linux

package main

import "syscall"

// prefetchNice: see nice_linux.go.
const prefetchNice = 10

// lowerPriority sets the process's nice value to n.
func lowerPriority(n int) { syscall.Setpriority(syscall.PRIO_PROCESS, 0, n) }
