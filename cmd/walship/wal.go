package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/restore"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/open"
)

const envSpool = "WALSHIP_SPOOL_DIR"

// dataDir is the data directory of a %p path: PostgreSQL runs archive and restore commands in the
// data directory, with %p pointing into pg_wal.
func dataDir(walPath string) string {
	abs, err := filepath.Abs(walPath)
	if err != nil {
		return "."
	}
	return filepath.Dir(filepath.Dir(abs))
}

func spoolFlag(e *env, fs *flag.FlagSet) *string {
	return fs.String("spool-dir", e.getenv(envSpool), "directory for markers and prefetched WAL, outside pg_wal (default DATADIR/walship, or $"+envSpool+")")
}

func intEnv(e *env, name string, def int) int {
	if v, err := strconv.Atoi(e.getenv(name)); err == nil {
		return v
	}
	return def
}

func runWalPush(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-push", "[flags] %p", "archive_command: archive one WAL file (and the ready files after it).\n"+
		"Exit 0 only once the file is durable in storage; non-zero otherwise (PostgreSQL retries).")
	fs.StringVar(&c.compression, "compression", e.getenv(envCompress), "zstd (default), lz4, gzip or none ($"+envCompress+")")
	parallel := fs.Int("parallel", intEnv(e, "WALSHIP_PARALLEL", 4), "files pushed at once: the requested one plus ready ones after it ($WALSHIP_PARALLEL)")
	allowStandby := fs.Bool("allow-standby", false, "archive even though standby.signal exists (archive_mode=always)")
	spool := spoolFlag(e, fs)
	e.cryptoFlags(fs, c)
	if code, done := e.parse(fs, c, args, 1); done {
		return code
	}
	path := fs.Arg(0)
	codec, err := c.codec()
	if err != nil {
		fmt.Fprintf(e.stderr, "walship wal-push: %v\n", err)
		return exitUsage
	}
	if *parallel < 1 || *parallel > 64 {
		fmt.Fprintf(e.stderr, "walship wal-push: --parallel %d: use 1 to 64\n", *parallel)
		return exitUsage
	}
	gcBudget(*parallel)
	// Lazy: a call answered by a marker needs no storage, so it does not set up the SDK.
	st, err := open.Open(ctx, c.storage, open.Options{Getenv: e.getenv, Logger: e.log, Lazy: true})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship wal-push: %s\n", oneLine(err))
		return exitUsage
	}
	if *spool == "" {
		*spool = filepath.Join(dataDir(path), "walship")
	}
	p, err := archive.New(archive.Config{Store: st, StoreURL: st.String(), Codec: codec, SpoolDir: *spool,
		Parallel: *parallel, AllowStandby: *allowStandby, Log: e.log})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship wal-push: %s\n", oneLine(err))
		return exitUsage
	}
	if err := p.Push(ctx, path); err != nil {
		e.log.Error("wal-push failed", "file", filepath.Base(path), "err", oneLine(err))
		if errors.Is(err, archive.ErrBadFile) || errors.Is(err, open.ErrSetup) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

func runWalFetch(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-fetch", "[flags] %f %p", "restore_command: restore one WAL file, verified, to %p.\n"+
		"Exit 0 restored; 1 not in the archive; on a storage error or damaged object, after retrying:\n"+
		"1 in standby mode (PostgreSQL retries later), 200 otherwise (recovery stops instead of ending early).\n"+
		"Bad arguments or configuration: 200 in every mode.")
	prefetch := fs.Int("prefetch", intEnv(e, "WALSHIP_PREFETCH", 8), "segments to download ahead in the background, 0 disables ($WALSHIP_PREFETCH)")
	retryFor := fs.Duration("retry-for", 60*time.Second, "how long to retry a storage error before giving up")
	missTTL := fs.Duration("miss-ttl", restore.DefaultMissTTL, "in standby mode, how long a file found missing is answered missing without asking storage again; 0 disables")
	spool := spoolFlag(e, fs)
	e.cryptoFlags(fs, c)
	// A restore_command that cannot run must not look like "file not found" (exit 1-125), or
	// PostgreSQL may end recovery early: usage errors exit with exitAbortPG.
	if code, done := e.parse(fs, c, args, 2); done {
		if code == exitOK {
			return code
		}
		return exitAbortPG
	}
	name, dest := fs.Arg(0), fs.Arg(1)
	// A %f or %p PostgreSQL could not have passed is a bad argument, exit 200 even on a standby,
	// where a failure exits 1: that would read as "not in the archive".
	err := restore.CheckName(name)
	if err == nil {
		err = restore.CheckDest(dest)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "walship wal-fetch: %s\n", oneLine(err))
		return exitAbortPG
	}
	standby := false
	if _, err := os.Stat(filepath.Join(dataDir(dest), "standby.signal")); err == nil {
		standby = true
	}
	fail := func(err error) int {
		if standby {
			e.log.Error("wal-fetch failed; PostgreSQL will retry", "file", name, "err", oneLine(err))
			return exitFailure
		}
		e.log.Error("wal-fetch failed: stopping recovery rather than ending it with WAL missing; fix the cause and restart PostgreSQL",
			"file", name, "err", oneLine(err))
		return exitAbortPG
	}
	// Bad configuration exits 200 in every mode, like a bad argument: on a standby exit 1 reads
	// as "not in the archive", and the standby would wait forever for WAL it can never be given
	// instead of stopping with the reason in its log.
	badConfig := func(err error) int {
		fmt.Fprintf(e.stderr, "walship wal-fetch: %s\n", oneLine(err))
		return exitAbortPG
	}
	if *prefetch < 0 || *prefetch > 128 {
		return badConfig(fmt.Errorf("--prefetch %d: use 0 to 128", *prefetch))
	}
	if *missTTL < 0 {
		return badConfig(fmt.Errorf("--miss-ttl %s: use 0 (off) or a positive duration", *missTTL))
	}
	ids, err := c.identities()
	if err != nil {
		return badConfig(err)
	}
	// Lazy: a call served from the spool or answered by a recent miss needs no storage.
	st, err := open.Open(ctx, c.storage, open.Options{Getenv: e.getenv, Logger: e.log, Lazy: true,
		Retry: storage.RetryPolicy{MaxElapsed: *retryFor}})
	if err != nil {
		return badConfig(err)
	}
	if *spool == "" {
		*spool = filepath.Join(dataDir(dest), "walship")
	}
	f, err := restore.New(restore.Config{Store: st, SpoolDir: *spool, Prefetch: *prefetch, Standby: standby, MissTTL: *missTTL, Log: e.log, Identities: ids,
		StartPrefetch: func(names []string) error { return startPrefetch(c, *spool, names) }})
	if err != nil {
		return badConfig(err)
	}
	err = f.Fetch(ctx, name, dest)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, restore.ErrOldTimeline):
		e.log.Warn("refused: a segment of an old timeline written after the failover", "file", name, "err", oneLine(err))
		return exitFailure
	case errors.Is(err, restore.ErrNotFound):
		e.log.Info("not in the archive", "file", name)
		return exitFailure
	case errors.Is(err, open.ErrSetup):
		return badConfig(err)
	}
	return fail(err)
}

// startPrefetch launches `walship wal-prefetch` detached from PostgreSQL's process group, with
// its output in the spool, so restore_command returns at once.
func startPrefetch(c *common, spool string, names []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(spool, "prefetch"), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(spool, "prefetch", "prefetch.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"wal-prefetch", "--storage", c.storage, "--log-level", c.logLevel, "--spool-dir", spool}
	if c.ageKeyFile != "" {
		args = append(args, "--age-key-file", c.ageKeyFile) // the prefetcher decodes what it spools
	}
	args = append(args, names...)
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

func runWalPrefetch(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-prefetch", "[flags] NAME...", "Internal: download WAL segments into the spool (started by wal-fetch).")
	spool := spoolFlag(e, fs)
	e.cryptoFlags(fs, c)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			e.usage()
			return exitOK
		}
		fmt.Fprintf(e.stderr, "walship wal-prefetch: %v\n", err)
		return exitUsage
	}
	if *spool == "" || fs.NArg() == 0 {
		fmt.Fprintf(e.stderr, "walship wal-prefetch: needs --spool-dir and at least one name\n")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st, err := open.Open(ctx, c.storage, open.Options{Getenv: e.getenv, Logger: e.log})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship wal-prefetch: %s\n", oneLine(err))
		return exitUsage
	}
	ids, err := c.identities()
	if err != nil {
		fmt.Fprintf(e.stderr, "walship wal-prefetch: %s\n", oneLine(err))
		return exitUsage
	}
	if err := restore.Prefetch(ctx, st, *spool, fs.Args(), ids); err != nil {
		e.log.Warn("prefetch incomplete", "err", oneLine(err))
		return exitFailure
	}
	return exitOK
}
