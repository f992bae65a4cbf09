// Package bench measures walship against the physical limits of this machine on a real corpus:
// a pgbench cluster's base backup and the 64 WAL segments written after it. Run with
//
//	go test -run x -bench 'Archive|CopyFsync|Fetch|Recovery|PgbenchBacklog' -benchtime 1x -timeout 60m ./bench/
//
// and the comparison with pgBackRest and barman-cloud with bench/compare (BenchmarkCompare).
//
// Each archive and fetch benchmark calls the walship binary once per segment, as PostgreSQL does.
package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walship/walship/testenv"
)

// calls runs one command per segment, in order, and returns wall time and the CPU time of the
// processes (user + system).
func calls(b *testing.B, env []string, dir string, argv func(seg string) []string, segs []string) (time.Duration, time.Duration) {
	return callsThen(b, env, dir, argv, segs, nil)
}

// callsThen is calls with a step after each successful call (PostgreSQL marking a file done).
func callsThen(b *testing.B, env []string, dir string, argv func(seg string) []string, segs []string, after func(seg string)) (time.Duration, time.Duration) {
	b.Helper()
	var cpu time.Duration
	start := time.Now()
	for _, s := range segs {
		a := argv(s)
		cmd := exec.Command(a[0], a[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", a, err, out)
		}
		u := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu += time.Duration(u.Utime.Nano() + u.Stime.Nano())
		if after != nil {
			after(s)
		}
	}
	return time.Since(start), cpu
}

func reportRun(b *testing.B, c corpus, wall, cpu time.Duration) {
	n := float64(len(c.segments))
	b.ReportMetric(n/wall.Seconds(), "seg/s")
	b.ReportMetric(float64(c.bytes)/1e6/wall.Seconds(), "MB/s")
	b.ReportMetric(cpu.Seconds()*1000/n, "cpu-ms/seg")
	b.ReportMetric(0, "ns/op")
}

// pgWAL lays the corpus out as DATADIR/pg_wal (see dataDir), with the archive_status .ready files
// of a backlog only when ready is set.
func pgWAL(b *testing.B, c corpus, ready bool) string {
	data := dataDir(b, c, b.TempDir(), true)
	if !ready {
		status := filepath.Join(data, "pg_wal", "archive_status")
		if err := os.RemoveAll(status); err != nil {
			b.Fatal(err)
		}
		if err := os.Mkdir(status, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	return data
}

type target struct {
	name string
	url  func(b *testing.B, i int) string
	env  []string
	size func(b *testing.B, url string) int64
}

var runs int

// runID gives every run its own archive prefix.
func runID() int { runs++; return runs }

func fileTarget(b *testing.B) target {
	root := b.TempDir()
	return target{name: "file", url: func(b *testing.B, i int) string {
		d := filepath.Join(root, fmt.Sprint(i))
		os.MkdirAll(d, 0o755)
		return "file://" + d
	}, size: func(b *testing.B, url string) int64 { return duBytes(strings.TrimPrefix(url, "file://")) }}
}

func minioTarget(b *testing.B) target {
	srv := testenv.MinIO(b)
	bucket := srv.NewBucket(b)
	return target{name: "minio", url: func(b *testing.B, i int) string {
		return fmt.Sprintf("s3://%s/run%d?endpoint=%s", bucket, i, srv.Endpoint)
	}, env: []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}}
}

func duBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// BenchmarkArchive pushes the 64 segments with one wal-push call each. "serial" has no backlog
// (each call pushes its own segment); "backlog" has all 64 marked ready, so a call pushes up to
// --parallel files and later calls are answered from markers.
func BenchmarkArchive(b *testing.B) {
	c := loadCorpus(b)
	for _, mk := range []func(*testing.B) target{fileTarget, minioTarget} {
		tg := mk(b)
		for _, mode := range []string{"serial", "backlog"} {
			b.Run(tg.name+"/"+mode, func(b *testing.B) {
				var wall, cpu time.Duration
				var stored int64
				for i := 0; i < b.N; i++ {
					data := pgWAL(b, c, mode == "backlog")
					url := tg.url(b, runID())
					status := filepath.Join(data, "pg_wal", "archive_status")
					w, u := callsThen(b, tg.env, data, func(s string) []string {
						return []string{walship, "wal-push", "--storage", url, "pg_wal/" + filepath.Base(s)}
					}, c.segments, func(s string) {
						os.Rename(filepath.Join(status, filepath.Base(s)+".ready"), filepath.Join(status, filepath.Base(s)+".done"))
					})
					wall += w
					cpu += u
					if tg.size != nil {
						stored = tg.size(b, url)
					}
				}
				reportRun(b, c, wall/time.Duration(b.N), cpu/time.Duration(b.N))
				if stored > 0 {
					b.ReportMetric(float64(c.bytes)/float64(stored), "ratio")
				}
			})
		}
	}
}

// BenchmarkCopyFsync is the limit for a local archive: cp and fsync of each segment, one process
// pair per segment.
func BenchmarkCopyFsync(b *testing.B) {
	c := loadCorpus(b)
	var wall, cpu time.Duration
	for i := 0; i < b.N; i++ {
		dst := b.TempDir()
		w, u := calls(b, nil, "/", func(s string) []string {
			return []string{"sh", "-c", fmt.Sprintf("cp %s %s/ && sync %s/%s", s, dst, dst, filepath.Base(s))}
		}, c.segments)
		wall += w
		cpu += u
	}
	reportRun(b, c, wall/time.Duration(b.N), cpu/time.Duration(b.N))
}

// BenchmarkFetch restores the 64 segments with one wal-fetch call each (prefetch on, as
// configured by default), from MinIO and from a file archive, against cp from a directory.
func BenchmarkFetch(b *testing.B) {
	c := loadCorpus(b)
	for _, mk := range []func(*testing.B) target{fileTarget, minioTarget} {
		tg := mk(b)
		url := tg.url(b, 999)
		data := pgWAL(b, c, true)
		calls(b, tg.env, data, func(s string) []string {
			return []string{walship, "wal-push", "--storage", url, "pg_wal/" + filepath.Base(s)}
		}, c.segments)
		b.Run(tg.name, func(b *testing.B) {
			var wall, cpu time.Duration
			for i := 0; i < b.N; i++ {
				dst := b.TempDir()
				os.MkdirAll(filepath.Join(dst, "pg_wal"), 0o755)
				w, u := calls(b, tg.env, dst, func(s string) []string {
					return []string{walship, "wal-fetch", "--storage", url, filepath.Base(s), "pg_wal/RECOVERYXLOG"}
				}, c.segments)
				wall += w
				cpu += u
			}
			reportRun(b, c, wall/time.Duration(b.N), cpu/time.Duration(b.N))
		})
	}
	b.Run("cp", func(b *testing.B) {
		var wall, cpu time.Duration
		for i := 0; i < b.N; i++ {
			dst := b.TempDir()
			w, u := calls(b, nil, dst, func(s string) []string { return []string{"cp", s, dst + "/RECOVERYXLOG"} }, c.segments)
			wall += w
			cpu += u
		}
		reportRun(b, c, wall/time.Duration(b.N), cpu/time.Duration(b.N))
	})
}

// BenchmarkRecovery times a copy of the base backup replaying the 64 segments to the end of the
// archive and promoting, with walship from MinIO against cp from a local directory.
func BenchmarkRecovery(b *testing.B) {
	c := loadCorpus(b)
	tg := minioTarget(b)
	url := tg.url(b, 998)
	data := pgWAL(b, c, true)
	calls(b, tg.env, data, func(s string) []string {
		return []string{walship, "wal-push", "--storage", url, "pg_wal/" + filepath.Base(s)}
	}, c.segments)
	commands := map[string]string{
		"walship-minio": fmt.Sprintf("%s wal-fetch %%f %%p", walship),
		"cp":            fmt.Sprintf("cp %s/%%f %%p", only64(b, c)),
	}
	for _, name := range []string{"cp", "walship-minio"} {
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				dir := testenv.PostgresOwnedDir(b)
				testenv.CopyDataDir(b, c.backup, dir)
				os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
				testenv.ChownPostgres(b, filepath.Join(dir, "recovery.signal"))
				pg := testenv.NewPostgresFromDataDir(b, dir, testenv.PostgresOptions{Env: append(tg.env, "WALSHIP_STORAGE="+url), Conf: []string{
					"archive_mode = off", "restore_command = '" + commands[name] + "'",
					"recovery_target_action = 'promote'", "shared_buffers = 256MB"}})
				start := time.Now()
				pg.StartNoWait(b)
				pg.WaitFor(b, "select pg_is_in_recovery()", "f", 20*time.Minute)
				total += time.Since(start)
				pg.Stop(b)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/recovery")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// only64 is a postgres-readable directory holding exactly the corpus's 64 segments.
func only64(b *testing.B, c corpus) string {
	dir := testenv.PostgresOwnedDir(b)
	for _, s := range c.segments {
		if err := os.Link(s, filepath.Join(dir, filepath.Base(s))); err != nil {
			b.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	return dir
}

// BenchmarkPgbenchBacklog runs pgbench at full speed for 60 s on a primary archiving through
// walship to MinIO and samples archive_status each second: the backlog must not grow.
func BenchmarkPgbenchBacklog(b *testing.B) {
	tg := minioTarget(b)
	url := tg.url(b, 997)
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{Env: append(tg.env, "WALSHIP_STORAGE="+url), Conf: []string{
		"archive_mode = on", fmt.Sprintf("archive_command = '%s wal-push %%p'", walship),
		"wal_level = replica", "max_wal_size = 4GB", "shared_buffers = 256MB", "synchronous_commit = off"}})
	pg.RunAs(b, "pgbench", "-i", "-q", "-s", "20", "postgres")
	startLSN := pg.Psql(b, "select pg_current_wal_lsn()")
	done := make(chan struct{})
	var samples []int
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for range 62 {
			<-t.C
			m, _ := filepath.Glob(filepath.Join(pg.DataDir, "pg_wal", "archive_status", "*.ready"))
			samples = append(samples, len(m))
		}
	}()
	pg.RunAs(b, "pgbench", "-n", "-c", "4", "-j", "2", "-T", "60", "postgres")
	<-done
	mb := pg.Psql(b, fmt.Sprintf("select round(pg_wal_lsn_diff(pg_current_wal_lsn(), '%s') / 1048576)", startLSN))
	maxReady := maxOf(samples)
	b.Logf("pgbench 60 s: %s MiB of WAL; .ready backlog per second: %v", mb, samples)
	b.ReportMetric(float64(maxReady), "max-ready")
	b.ReportMetric(float64(samples[len(samples)-1]), "final-ready")
	b.ReportMetric(0, "ns/op")
	// Keeping up means the backlog of the last ten seconds is no larger than that of the first
	// ten after the warm-up, give or take one parallel push (4 files).
	early, late := maxOf(samples[5:15]), maxOf(samples[len(samples)-10:])
	if late > early+4 {
		b.Fatalf("archiving falls behind pgbench: the .ready backlog grew from at most %d to %d files", early, late)
	}
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
