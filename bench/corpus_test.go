package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/testenv"
	"github.com/walship/walship/walfile"
)

// corpusSegments is how many full segments every benchmark archives, fetches and replays.
const corpusSegments = 64

// corpusScale is the pgbench scale of the corpus cluster: 50 is about 750 MB of tables, so the
// write-heavy TPC-B-like load touches enough pages to give WAL full-page images, as in production.
const corpusScale = 50

// walship is the binary under test, built once by TestMain into a directory every user can read.
var walship string

func TestMain(m *testing.M) {
	// WALSHIP_BENCH_BINARY names a binary built by scripts/build to measure instead, one that
	// outlives the run so that perf can resolve its symbols afterwards.
	if walship = os.Getenv("WALSHIP_BENCH_BINARY"); walship != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "walship-bench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	walship = filepath.Join(dir, "walship")
	if out, err := exec.Command("bash", "../scripts/build", walship).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// corpus is a base backup and the segments written after it, kept between runs.
type corpus struct {
	dir      string // owned by postgres
	backup   string // the base backup (a data directory without pg_wal contents)
	segments []string
	bytes    int64
}

// loadCorpus returns the corpus, building it on first use: pgbench -i at corpusScale, a base
// backup, then pgbench until corpusSegments full segments after the backup have been archived
// (by plain cp). It lives outside $HOME because the postgres user writes it.
func loadCorpus(b *testing.B) corpus {
	b.Helper()
	dir := os.Getenv("WALSHIP_BENCH_CORPUS")
	if dir == "" {
		dir = fmt.Sprintf("/var/tmp/walship-bench-corpus-s%d", corpusScale)
	}
	c := corpus{dir: dir, backup: filepath.Join(dir, "backup")}
	if _, err := os.Stat(filepath.Join(dir, "complete")); err != nil {
		buildCorpus(b, dir)
	}
	// The segments start at the base backup's first segment, so recovery replays exactly them.
	label, err := os.ReadFile(filepath.Join(c.backup, "backup_label"))
	if err != nil {
		b.Fatalf("corpus: %v: remove %s and rerun", err, dir)
	}
	var first string
	for _, line := range strings.Split(string(label), "\n") {
		if _, f, ok := strings.Cut(line, "(file "); ok && strings.HasPrefix(line, "START WAL LOCATION") {
			first = strings.TrimSuffix(f, ")")
		}
	}
	names, _ := filepath.Glob(filepath.Join(dir, "wal", "0000000100000000000000??"))
	sort.Strings(names)
	i := sort.SearchStrings(names, filepath.Join(dir, "wal", first))
	if first == "" || len(names)-i < corpusSegments {
		b.Fatalf("corpus has %d segments from %q, want %d: remove %s and rerun", len(names)-i, first, corpusSegments, dir)
	}
	c.segments = names[i : i+corpusSegments]
	// WALSHIP_BENCH_SEGMENTS takes fewer, for a quick trial of the benchmarks themselves.
	if n, err := strconv.Atoi(os.Getenv("WALSHIP_BENCH_SEGMENTS")); err == nil && n > 0 && n < len(c.segments) {
		c.segments = c.segments[:n]
	}
	for _, s := range c.segments {
		fi, err := os.Stat(s)
		if err != nil {
			b.Fatal(err)
		}
		c.bytes += fi.Size()
	}
	return c
}

func buildCorpus(b *testing.B, dir string) {
	b.Logf("building the corpus in %s (once; a few minutes)", dir)
	os.RemoveAll(dir)
	wal := filepath.Join(dir, "wal")
	if err := os.MkdirAll(wal, 0o755); err != nil {
		b.Fatal(err)
	}
	mustRun(b, "chown", "-R", "postgres", dir)
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{Conf: []string{
		"archive_mode = on", fmt.Sprintf("archive_command = 'cp %%p %s/%%f'", wal),
		"wal_level = replica", "max_wal_size = 1GB", "shared_buffers = 256MB",
		// Frequent checkpoints: the load writes full-page images, as a busy production cluster does,
		// and the corpus is built in minutes rather than in a quarter of an hour.
		"checkpoint_timeout = 30s",
		"synchronous_commit = off",
	}})
	pg.RunAs(b, "pgbench", "-i", "-q", "-s", fmt.Sprint(corpusScale), "postgres")
	pg.RunAs(b, "pg_basebackup", "-D", filepath.Join(dir, "backup"), "--wal-method=none", "--checkpoint=fast")
	start := pg.Psql(b, "select pg_walfile_name(pg_current_wal_lsn())")
	for segDistance(start, pg.Psql(b, "select pg_walfile_name(pg_current_wal_lsn())")) <= corpusSegments+2 {
		pg.RunAs(b, "pgbench", "-n", "-c", "4", "-j", "2", "-T", "10", "postgres")
	}
	pg.Psql(b, "select pg_switch_wal()")
	pg.WaitFor(b, "select last_archived_wal >= pg_walfile_name(pg_current_wal_lsn() - 1) from pg_stat_archiver", "t", 5*time.Minute)
	pg.Stop(b)
	if err := os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
}

func segDistance(a, b string) int {
	_, x, _ := walfile.ParseSegment(a, 16<<20)
	_, y, _ := walfile.ParseSegment(b, 16<<20)
	return int(y - x)
}

func mustRun(b *testing.B, args ...string) {
	b.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("%v: %v\n%s", args, err, out)
	}
}
