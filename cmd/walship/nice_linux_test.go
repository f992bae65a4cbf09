package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestLowerPriority: in a process of its own (nice values stay with the threads), every thread,
// those running when lowerPriority is called and those the runtime makes afterwards, ends at
// the nice value asked for.
func TestLowerPriority(t *testing.T) {
	if os.Getenv("WALSHIP_NICE_CHILD") == "1" {
		lowerPriority(prefetchNice)
		// Goroutines locked to threads make the runtime start new ones.
		var wg sync.WaitGroup
		start, stop := make(chan struct{}), make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				runtime.LockOSThread()
				wg.Done()
				<-start
				<-stop
			}()
		}
		wg.Wait()
		close(start)
		defer close(stop)
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			stat, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
			if err != nil {
				t.Fatal(err)
			}
			// Field 19 is the nice value; the fields after the command name (in parentheses) start at 3.
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if nice, _ := strconv.Atoi(f[16]); nice != prefetchNice {
				t.Errorf("thread %s: nice %d, want %d (of %d threads)", task.Name(), nice, prefetchNice, len(tasks))
			}
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLowerPriority$", "-test.v")
	cmd.Env = append(os.Environ(), "WALSHIP_NICE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
