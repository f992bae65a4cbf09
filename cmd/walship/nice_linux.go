package main

import (
	"os"
	"strconv"
	"syscall"
)

// prefetchNice is the nice value of a prefetcher: it fills the spool ahead of replay, and a
// wal-fetch call it competes with for a core is what replay waits for. The scheduler still gives
// it every core nobody else wants, and a call that finds its segment still downloading sleeps
// and leaves the core to it, so it is never starved of the CPU replay is waiting on.
const prefetchNice = 10

// lowerPriority sets the nice value of every thread of the process to n. Linux keeps a nice
// value per thread, and a new thread takes its creator's, so the threads running now are each
// set (twice, for one made while the first pass ran); those made later follow. Errors are
// ignored: priority is a preference.
func lowerPriority(n int) {
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				syscall.Setpriority(syscall.PRIO_PROCESS, tid, n)
			}
		}
	}
}
