package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuGroup charges CPU time to one measured run through a cgroup, so that work a tool hands to a
// detached process (pgBackRest's async workers, walship's prefetcher) is counted too: rusage of
// the calls alone would miss it. Without a usable cgroup it falls back to the calls' rusage, and
// the report says so.
type cpuGroup struct {
	dir   string // the cgroup directory; empty: rusage only
	usage func(dir string) (time.Duration, error)
}

// cgroupRoots are where a CPU accounting hierarchy may be mounted: cgroup v1's cpuacct, or the
// v2 unified tree.
var cgroupRoots = []struct {
	root  string
	usage func(dir string) (time.Duration, error)
}{
	{"/sys/fs/cgroup/cpuacct", v1Usage},
	{"/sys/fs/cgroup", v2Usage},
	{"/sys/fs/cgroup/unified", v2Usage},
}

func v1Usage(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(ns), err
}

func v2Usage(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("no usage_usec in %s/cpu.stat", dir)
}

var groupSeq int

// newCPUGroup makes a fresh cgroup for one run, removed on cleanup.
func newCPUGroup(b *testing.B) *cpuGroup {
	for _, r := range cgroupRoots {
		if _, err := os.Stat(filepath.Join(r.root, "cgroup.procs")); err != nil {
			continue
		}
		groupSeq++
		dir := filepath.Join(r.root, fmt.Sprintf("walship-bench-%d-%d", os.Getpid(), groupSeq))
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		if _, err := r.usage(dir); err != nil {
			os.Remove(dir)
			continue
		}
		b.Cleanup(func() { os.Remove(dir) })
		return &cpuGroup{dir: dir, usage: r.usage}
	}
	return &cpuGroup{}
}

// wrap makes argv join the group before it starts: a shell writes its own pid into the group and
// then execs the tool, so every process the tool forks is inside from its first instruction.
func (g *cpuGroup) wrap(argv []string) []string {
	if g.dir == "" {
		return argv
	}
	return append([]string{"/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(g.dir, "cgroup.procs")}, argv...)
}

// settle waits for the group's detached processes to finish (an async worker or prefetcher
// outlives the last call), up to a minute, and returns the group's CPU time.
func (g *cpuGroup) settle(b *testing.B) (time.Duration, bool) {
	if g.dir == "" {
		return 0, false
	}
	deadline := time.Now().Add(time.Minute)
	for {
		procs, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		if err != nil {
			b.Fatalf("bench: read cgroup: %v", err)
		}
		if strings.TrimSpace(string(procs)) == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	u, err := g.usage(g.dir)
	if err != nil {
		b.Fatalf("bench: cgroup usage: %v", err)
	}
	return u, true
}

// measure is what one run of one tool cost.
type measure struct {
	wall    time.Duration // sum of the calls' durations
	cpu     time.Duration // all processes of the run (cgroup) or the calls alone (rusage)
	cgroup  bool          // cpu came from the cgroup
	maxRSS  int64         // bytes, the largest of the calls
	stored  int64         // bytes in the archive after an archive run; 0 when not measured
	calls   int
	segs    int
	rawSize int64
}

// caller runs tool calls the way PostgreSQL does: one process at a time, each waited for.
type caller struct {
	b     *testing.B
	group *cpuGroup
	m     measure
	rcpu  time.Duration // rusage CPU of the calls
}

func newCaller(b *testing.B) *caller { return &caller{b: b, group: newCPUGroup(b)} }

// call runs argv in dir with env added, failing the benchmark with its output if it fails.
//
// The peak RSS comes from GNU time, which forks the tool from its own small process. The
// rusage that Go's os/exec reports cannot be used for it: Go starts children with vfork
// semantics, so a child's ru_maxrss includes the benchmark process's own memory at the exec.
func (c *caller) call(dir string, env []string, argv []string) {
	c.b.Helper()
	rss := filepath.Join(c.b.TempDir(), "rss")
	a := c.group.wrap(append([]string{"/usr/bin/time", "-q", "-o", rss, "-f", "%M"}, argv...))
	cmd := exec.Command(a[0], a[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	c.m.wall += time.Since(start)
	if err != nil {
		c.b.Fatalf("bench: %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	u := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	c.rcpu += time.Duration(u.Utime.Nano() + u.Stime.Nano())
	kib, err := os.ReadFile(rss)
	if err != nil {
		c.b.Fatalf("bench: peak RSS of %s: %v", argv[0], err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(kib)), 10, 64)
	if err != nil {
		c.b.Fatalf("bench: peak RSS of %s: %q", argv[0], kib)
	}
	c.m.maxRSS = max(c.m.maxRSS, n*1024)
	c.m.calls++
}

// done closes the run: it waits for detached processes and reads the CPU they all used.
func (c *caller) done() measure {
	if cpu, ok := c.group.settle(c.b); ok {
		c.m.cpu, c.m.cgroup = cpu, true
	} else {
		c.m.cpu = c.rcpu
	}
	return c.m
}

// stat is the median and range of one figure over the rounds.
type stat struct{ med, min, max float64 }

func summarize(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med: med, min: s[0], max: s[len(s)-1]}
}

// format prints the median with the range when there is more than one round.
func (s stat) format(prec int) string {
	if s.min == s.max {
		return strconv.FormatFloat(s.med, 'f', prec, 64)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.med, prec, s.min, prec, s.max)
}
