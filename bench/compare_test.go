package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/testenv"
)

// BenchmarkCompare measures walship against pgBackRest and barman-cloud on the same corpus, in
// one run: archive, fetch and recovery, with the tools alternated round by round in a rotating
// order (A B C, B C A, C A B …: see rotated) so that a slow moment of the machine does not land
// on one tool alone. It prints one report with medians and ranges, walship's ratios to each peer
// and to the limits of the machine, and writes it to bench/results/. Run it with bench/compare,
// which installs the peers.
func BenchmarkCompare(b *testing.B) {
	for _, p := range []string{"pgbackrest", "barman-cloud-wal-archive", "barman-cloud-wal-restore", "zstd", "lz4", "sha256sum", "/usr/bin/time"} {
		if _, err := exec.LookPath(p); err != nil {
			b.Fatalf("bench: %s not found: run bench/compare, which installs the peers (apt-get install pgbackrest barman-cli-cloud python3-boto3 zstd lz4 time)", p)
		}
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("WALSHIP_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	dropped := dropMachineAWS(b)
	c := loadCorpus(b)
	l := newLab(b, c)
	r := &report{c: c, rounds: rounds, results: map[string]map[string][]measure{}, dropped: dropped}

	walshipS3 := walshipTool("walship s3", true)
	pgbrSync := pgbackrestTool("pgbackrest s3 sync", true, false)
	pgbrAsync := pgbackrestTool("pgbackrest s3 async", true, true)
	archivers := []tool{cpTool, walshipTool("walship file", false), pgbackrestTool("pgbackrest posix", false, false),
		walshipTool("walship s3 --parallel 1", true, "--parallel", "1"), walshipS3, pgbrSync, pgbrAsync, barmanTool}
	fetchers := []tool{cpTool, walshipTool("walship file", false), pgbackrestTool("pgbackrest posix", false, false),
		walshipS3, pgbrSync, pgbrAsync, barmanTool}
	recoverers := []tool{cpTool, walshipS3, pgbrSync, pgbrAsync, barmanTool}
	// WALSHIP_BENCH_ONLY="cp+fsync,walship s3" runs only the tools named, for a quick trial of a
	// change; the report then lacks the others and is printed, not written to bench/results/.
	only := os.Getenv("WALSHIP_BENCH_ONLY")
	partial := only != ""
	if partial {
		archivers, fetchers, recoverers = pick(archivers, only), pick(fetchers, only), pick(recoverers, only)
	}
	// WALSHIP_BENCH_PHASES="archive" (or fetch, recovery, comma-separated) runs only those phases.
	if phases := os.Getenv("WALSHIP_BENCH_PHASES"); phases != "" {
		partial = true
		if !strings.Contains(phases, "archive") {
			archivers = nil
		}
		if !strings.Contains(phases, "fetch") {
			fetchers = nil
		}
		if !strings.Contains(phases, "recovery") {
			recoverers = nil
		}
	}
	r.tools = map[string]tool{}
	for _, ts := range [][]tool{archivers, fetchers, recoverers} {
		for _, t := range ts {
			r.tools[t.name] = t
		}
	}

	for i := 0; i < rounds; i++ {
		for _, t := range rotated(archivers, i) {
			r.add("archive", t.name, logRun(i, "archive", t.name, archiveRun(b, l, t)))
		}
	}
	// Each tool's archive for fetching and recovery is filled once by its own push, untimed.
	filled := map[string]archive{}
	for _, t := range union(fetchers, recoverers) {
		a := t.open(b, l)
		fill(b, l, a)
		filled[t.name] = a
	}
	for i := 0; i < rounds; i++ {
		for _, t := range rotated(fetchers, i) {
			r.add("fetch", t.name, logRun(i, "fetch", t.name, fetchRun(b, l, filled[t.name])))
		}
	}
	for i := 0; i < rounds; i++ {
		for _, t := range rotated(recoverers, i) {
			r.add("recovery", t.name, logRun(i, "recovery", t.name, recoveryRun(b, l, filled[t.name])))
		}
	}
	if !partial {
		r.limits = limits(b, c, rounds)
	}
	r.order = map[string][]string{"archive": names(archivers), "fetch": names(fetchers), "recovery": names(recoverers)}

	text := r.String()
	fmt.Println(text)
	if partial {
		b.Logf("WALSHIP_BENCH_ONLY or _PHASES is set: the partial report is not written to bench/results/")
		b.ReportMetric(0, "ns/op")
		return
	}
	out, err := newReport(filepath.Join("results", fmt.Sprintf("%s-%s", time.Now().Format("2006-01-02"), hostname())), text)
	if err != nil {
		b.Fatalf("bench: %v", err)
	}
	b.Logf("report written to bench/%s", out)
	b.ReportMetric(0, "ns/op")
}

// rotated is ts in round i's order: each round starts one tool further on (A B C, B C A, C A B,
// A B C …). In a fixed order the first tool always ran first in its phase, right after the
// previous phase or the last, heaviest tool (barman-cloud), and the host's state after those
// landed on it alone: cp's first recovery was its slowest in each of the four reports of
// 2026-12-07 that list the rounds.
func rotated(ts []tool, i int) []tool {
	if len(ts) == 0 {
		return nil
	}
	k := i % len(ts)
	return append(append([]tool(nil), ts[k:]...), ts[:k]...)
}

// union is the tools of a and then those of b not in a.
func union(a, b []tool) []tool {
	out := append([]tool(nil), a...)
	for _, t := range b {
		if !slices.ContainsFunc(out, func(u tool) bool { return u.name == t.name }) {
			out = append(out, t)
		}
	}
	return out
}

// pick keeps the tools whose names are in the comma-separated list.
func pick(ts []tool, list string) []tool {
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var out []tool
	for _, t := range ts {
		if want[t.name] {
			out = append(out, t)
		}
	}
	return out
}

func names(ts []tool) []string {
	var n []string
	for _, t := range ts {
		n = append(n, t.name)
	}
	return n
}

// dataDir lays out a data directory for one run under run: pg_control and PG_VERSION from the
// base backup (pgBackRest checks them against its stanza), and, with segments, the corpus in
// pg_wal as hard links with an archive_status .ready file each, the backlog PostgreSQL leaves
// when archiving falls behind.
func dataDir(b *testing.B, c corpus, run string, segments bool) string {
	data := filepath.Join(run, "data")
	for _, d := range []string{"global", "pg_wal/archive_status"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	mustRun(b, "cp", filepath.Join(c.backup, "global", "pg_control"), filepath.Join(data, "global"))
	mustRun(b, "cp", filepath.Join(c.backup, "PG_VERSION"), data)
	if segments {
		for _, s := range c.segments {
			if err := os.Link(s, filepath.Join(data, "pg_wal", filepath.Base(s))); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(data, "pg_wal", "archive_status", filepath.Base(s)+".ready"), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return data
}

// archiveRun pushes the corpus into a fresh archive of t with one call per segment, oldest first,
// marking each .done after its call as PostgreSQL does.
func archiveRun(b *testing.B, l *lab, t tool) measure {
	run := l.dir(b, "archive")
	defer os.RemoveAll(run)
	data := dataDir(b, l.c, run, true)
	a := t.open(b, l)
	cl := newCaller(b)
	for _, s := range l.c.segments {
		name := filepath.Base(s)
		cl.call(data, a.env, a.push(data, "pg_wal/"+name))
		status := filepath.Join(data, "pg_wal", "archive_status", name)
		if err := os.Rename(status+".ready", status+".done"); err != nil {
			b.Fatal(err)
		}
	}
	m := cl.done()
	m.stored = a.stored()
	m.segs, m.rawSize = len(l.c.segments), l.c.bytes
	return m
}

// logRun prints one run's figures as it ends, to follow a long run (on standard error: a
// benchmark's own log keeps only its first lines).
func logRun(round int, phase, tool string, m measure) measure {
	fmt.Fprintf(os.Stderr, "bench: round %d, %s, %s: %.2f s, %.1f CPU ms/seg, peak RSS %d MiB\n", round+1, phase, tool,
		m.wall.Seconds(), float64(m.cpu.Microseconds())/1000/float64(max(m.segs, 1)), m.maxRSS>>20)
	return m
}

// fill pushes the corpus into a, untimed, for the fetch and recovery runs.
func fill(b *testing.B, l *lab, a archive) {
	run := l.dir(b, "fill")
	defer os.RemoveAll(run)
	data := dataDir(b, l.c, run, true)
	cl := newCaller(b)
	for _, s := range l.c.segments {
		cl.call(data, a.env, a.push(data, "pg_wal/"+filepath.Base(s)))
	}
	cl.done()
	// The pushes ran as root; the postgres user restores from local archives during recovery.
	mustRun(b, "chown", "-R", "postgres", l.work)
}

// fetchRun restores the corpus from a with one call per segment, each into its own file so the
// bytes can be checked after the timed calls without giving prefetchers free time between them.
func fetchRun(b *testing.B, l *lab, a archive) measure {
	run := l.dir(b, "fetch")
	defer os.RemoveAll(run)
	data := dataDir(b, l.c, run, false)
	spool := filepath.Join(run, "spool")
	if err := os.Mkdir(spool, 0o755); err != nil {
		b.Fatal(err)
	}
	cl := newCaller(b)
	for i, s := range l.c.segments {
		cl.call(data, a.env, a.fetch(data, filepath.Base(s), fmt.Sprintf("pg_wal/restored-%02d", i), spool))
	}
	m := cl.done()
	for i, s := range l.c.segments {
		got, err := os.ReadFile(filepath.Join(data, "pg_wal", fmt.Sprintf("restored-%02d", i)))
		if err != nil {
			b.Fatalf("bench: restored %s: %v", filepath.Base(s), err)
		}
		want, err := os.ReadFile(s)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			b.Fatalf("bench: restored %s differs from the original (%d bytes, want %d)", filepath.Base(s), len(got), len(want))
		}
	}
	m.segs, m.rawSize = len(l.c.segments), l.c.bytes
	return m
}

// recoveryRun times a copy of the base backup replaying the corpus through a's restore_command
// until it reaches the end of the archive and promotes.
func recoveryRun(b *testing.B, l *lab, a archive) measure {
	dir := testenv.EmptyDataDir(b)
	defer os.RemoveAll(dir)
	testenv.CopyDataDir(b, l.c.backup, dir)
	signal := filepath.Join(dir, "recovery.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	testenv.ChownPostgres(b, signal)
	spool := l.dir(b, "recovery-spool")
	defer os.RemoveAll(spool)
	pg := testenv.NewPostgresFromDataDir(b, dir, testenv.PostgresOptions{Env: a.env, Conf: []string{
		"archive_mode = off", "restore_command = '" + a.restoreCommand(dir, spool) + "'",
		"recovery_target_action = 'promote'", "shared_buffers = 256MB"}})
	start := time.Now()
	pg.StartNoWait(b)
	pg.WaitFor(b, "select pg_is_in_recovery()", "f", 20*time.Minute)
	m := measure{wall: time.Since(start), segs: len(l.c.segments), rawSize: l.c.bytes}
	pg.Stop(b)
	keepLogs(b, m, pg.Log(), filepath.Join(spool, "prefetch", "prefetch.log"))
	return m
}

// keepLogs copies a recovery's PostgreSQL log (which has what restore_command wrote to standard
// error) and walship's prefetch log, when there is one, into $WALSHIP_BENCH_LOGS, named by the
// time the run ended and its seconds, to look into a slow run. WALSHIP_LOG_LEVEL=debug, which
// walship inherits, makes both logs say what each call did and when.
func keepLogs(b *testing.B, m measure, pgLog, prefetchLog string) {
	dir := os.Getenv("WALSHIP_BENCH_LOGS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatalf("bench: WALSHIP_BENCH_LOGS: %v", err)
	}
	stem := filepath.Join(dir, fmt.Sprintf("%s-%.2fs", time.Now().Format("150405"), m.wall.Seconds()))
	err := os.WriteFile(stem+"-postgres.log", []byte(pgLog), 0o644)
	if pl, rerr := os.ReadFile(prefetchLog); err == nil && rerr == nil { // no prefetcher: no log
		err = os.WriteFile(stem+"-prefetch.log", pl, 0o644)
	}
	if err != nil {
		b.Fatalf("bench: WALSHIP_BENCH_LOGS: %v", err)
	}
}

// limit is one physical limit of the machine: a C tool's throughput on the corpus on one core.
type limit struct {
	name     string
	perCore  stat // MB of raw WAL per CPU second
	outRatio float64
}

// limits runs zstd, lz4 and sha256sum over the corpus on one core, rounds times.
func limits(b *testing.B, c corpus, rounds int) []limit {
	var out []limit
	for _, l := range []struct{ name, cmd string }{
		{"zstd -1 (one thread)", "zstd -q -1 --single-thread -c"},
		{"zstd -3 (one thread)", "zstd -q -3 --single-thread -c"},
		{"lz4 -1", "lz4 -q -1 -c"},
		{"sha256sum", "sha256sum"},
	} {
		loop := `for f; do ` + l.cmd + ` "$f"; done`
		var rates []float64
		for i := 0; i < rounds; i++ {
			cl := &caller{b: b, group: &cpuGroup{}}
			cl.call("/", nil, append([]string{"/bin/sh", "-c", loop + " > /dev/null", "sh"}, c.segments...))
			m := cl.done()
			rates = append(rates, float64(c.bytes)/1e6/m.cpu.Seconds())
		}
		size, err := exec.Command("/bin/sh", append([]string{"-c", loop + " | wc -c", "sh"}, c.segments...)...).Output()
		if err != nil {
			b.Fatalf("bench: %s: %v", l.name, err)
		}
		n, _ := strconv.ParseFloat(strings.TrimSpace(string(size)), 64)
		out = append(out, limit{name: l.name, perCore: summarize(rates), outRatio: float64(c.bytes) / n})
	}
	return out
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown-host"
	}
	return h
}

// machine describes where the figures were taken.
// newReport writes text to stem.md, or stem-2.md, stem-3.md … when a run of the same day on a
// machine of the same name wrote one already: a report is never overwritten.
func newReport(stem, text string) (string, error) {
	for n := 1; ; n++ {
		out := stem + ".md"
		if n > 1 {
			out = fmt.Sprintf("%s-%d.md", stem, n)
		}
		f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = f.WriteString(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return out, err
	}
}

// dropMachineAWS removes the machine's AWS_* variables (but AWS_EC2_METADATA_DISABLED, which
// bench/compare sets) from this process's environment, which every tool and PostgreSQL below it
// inherit, and returns their names. Each tool is configured for the lab's MinIO on its own
// command line or environment; a variable of the machine would change what a tool does or what
// it costs. This one did: a sandbox's AWS_CA_BUNDLE naming the system's whole bundle of 140
// certificates made the AWS SDK parse them all in every walship process that set up S3, 4-6 ms
// a call, for a client walship then replaces with its own (ca_file=); pgBackRest and barman-cloud,
// told their CA file here, never read it.
func dropMachineAWS(b *testing.B) []string {
	var names []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") && k != "AWS_EC2_METADATA_DISABLED" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		// b.Setenv records the value to restore; Unsetenv then removes it for the run.
		b.Setenv(k, "")
		os.Unsetenv(k)
	}
	return names
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %s, %d cores, Linux %s, %s", hostname(), model, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
}
