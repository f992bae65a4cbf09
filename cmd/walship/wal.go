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
	"github.com/walship/walship/cmd/walship/internal/fastfetch"
	"github.com/walship/walship/restore"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/open"
)

const envSpool = fastfetch.EnvSpool

func spoolFlag(e *env, fs *flag.FlagSet) *string {
	return fs.String("spool-dir", e.getenv(envSpool), "directory for markers and prefetched WAL, outside pg_wal (default DATADIR/walship, or $"+envSpool+")")
}

func intEnv(e *env, name string, def int) int {
	if v, err := strconv.Atoi(e.getenv(name)); err == nil {
		return v
	}
	return def
}

// pushFlags are wal-push's own flags, shared with the background pusher it starts.
type pushFlags struct {
	parallel     *int
	allowStandby *bool
	spool        *string
}

func (e *env) pushFlags(fs *flag.FlagSet, c *common) pushFlags {
	fs.StringVar(&c.compression, "compression", e.getenv(envCompress), "zstd (default), lz4, gzip or none ($"+envCompress+")")
	o := pushFlags{
		parallel: fs.Int("parallel", intEnv(e, "WALSHIP_PARALLEL", 4), "files pushed at once: in a backlog a background pusher "+
			"keeps this many of the ready files in flight; 1 pushes only the requested file ($WALSHIP_PARALLEL)"),
		allowStandby: fs.Bool("allow-standby", false, "archive even though standby.signal exists (archive_mode=always)"),
		spool:        spoolFlag(e, fs),
	}
	e.cryptoFlags(fs, c)
	return o
}

// pusher checks the flags and sets up a Pusher for the WAL directory walDir; code is the exit
// code when it returns nil.
func (e *env) pusher(ctx context.Context, name string, c *common, o pushFlags, walDir string) (*archive.Pusher, int) {
	codec, err := c.codec()
	if err != nil {
		fmt.Fprintf(e.stderr, "walship %s: %v\n", name, err)
		return nil, exitUsage
	}
	if *o.parallel < 1 || *o.parallel > 64 {
		fmt.Fprintf(e.stderr, "walship %s: --parallel %d: use 1 to 64\n", name, *o.parallel)
		return nil, exitUsage
	}
	gcBudget(*o.parallel)
	// Lazy: a call answered by a marker needs no storage, so it does not set up the SDK.
	st, err := open.Open(ctx, c.storage, open.Options{Getenv: e.getenv, Logger: e.log, Lazy: true})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship %s: %s\n", name, oneLine(err))
		return nil, exitUsage
	}
	if *o.spool == "" {
		*o.spool = filepath.Join(fastfetch.DataDir(filepath.Join(walDir, "f")), "walship")
	}
	cfg := archive.Config{Store: st, StoreURL: st.String(), Codec: codec, SpoolDir: *o.spool,
		Parallel: *o.parallel, AllowStandby: *o.allowStandby, Log: e.log}
	if e.startAhead != nil {
		cfg.StartAhead = func() error { return e.startAhead(c, o, walDir) }
	}
	p, err := archive.New(cfg)
	if err != nil {
		fmt.Fprintf(e.stderr, "walship %s: %s\n", name, oneLine(err))
		return nil, exitUsage
	}
	return p, exitOK
}

func runWalPush(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-push", "[flags] %p", "archive_command: archive one WAL file (and get the ready files after it pushed ahead).\n"+
		"Exit 0 only once the file is durable in storage; non-zero otherwise (PostgreSQL retries).")
	o := e.pushFlags(fs, c)
	if code, done := e.parse(fs, c, args, 1); done {
		return code
	}
	path := fs.Arg(0)
	p, code := e.pusher(ctx, "wal-push", c, o, filepath.Dir(path))
	if p == nil {
		return code
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

// startAhead launches `walship wal-push-ahead` (see detach), so archive_command returns as soon as
// its own file is stored.
func startAhead(c *common, o pushFlags, walDir string) error {
	return detach(filepath.Join(*o.spool, "pushing"), "push-ahead.log", c.storage,
		"wal-push-ahead", "--log-level", c.logLevel, "--spool-dir", *o.spool,
		"--parallel", strconv.Itoa(*o.parallel), "--compression", c.compression,
		"--allow-standby="+strconv.FormatBool(*o.allowStandby),
		"--age-recipients", c.ageRecipients, "--age-key-file", c.ageKeyFile, walDir)
}

// detach starts walship with args in a session of its own (outside PostgreSQL's process group,
// so the calling archive or restore command returns at once), its output appended to logName in
// logDir. The storage URL goes in its environment rather than on its command line, where ps
// would show it.
func detach(logDir, logName, storageURL string, args ...string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := openLog(logDir, logName)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envStorage+"="+storageURL)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// maxLog bounds a background process's log in the spool: one that grew past it is started anew.
const maxLog = 1 << 20

// openLog opens name in dir for appending, emptied first when it has grown past maxLog.
func openLog(dir, name string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, name)
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if fi, err := os.Stat(p); err == nil && fi.Size() > maxLog {
		flags |= os.O_TRUNC
	}
	return os.OpenFile(p, flags, 0o600)
}

func runWalPushAhead(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-push-ahead", "[flags] WALDIR", "Internal: push the ready files of WALDIR in the background (started by wal-push).")
	o := e.pushFlags(fs, c)
	if code, done := e.parse(fs, c, args, 1); done {
		return code
	}
	if *o.spool == "" {
		fmt.Fprintf(e.stderr, "walship wal-push-ahead: needs --spool-dir\n")
		return exitUsage
	}
	e.startAhead = nil
	p, code := e.pusher(ctx, "wal-push-ahead", c, o, fs.Arg(0))
	if p == nil {
		return code
	}
	if err := p.PushAhead(ctx, fs.Arg(0)); err != nil {
		e.log.Warn("push ahead stopped", "err", oneLine(err))
		return exitFailure
	}
	return exitOK
}

func runWalFetch(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-fetch", "[flags] %f %p", "restore_command: restore one WAL file, verified, to %p.\n"+
		"Exit 0 restored; 1 not in the archive; on a storage error or damaged object, after retrying:\n"+
		"1 in standby mode (PostgreSQL retries later), 200 otherwise (recovery stops instead of ending early).\n"+
		"Bad arguments or configuration: 200 in every mode.")
	prefetch := fs.Int("prefetch", intEnv(e, fastfetch.EnvPrefetch, fastfetch.DefaultPrefetch), "segments to download ahead in the background, 0 disables ($"+fastfetch.EnvPrefetch+")")
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
	if _, err := os.Stat(filepath.Join(fastfetch.DataDir(dest), "standby.signal")); err == nil {
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
	if *prefetch < 0 || *prefetch > fastfetch.MaxPrefetch {
		return badConfig(fmt.Errorf("--prefetch %d: use 0 to %d", *prefetch, fastfetch.MaxPrefetch))
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
		*spool = filepath.Join(fastfetch.DataDir(dest), "walship")
	}
	f, err := restore.New(restore.Config{Store: st, SpoolDir: *spool, Prefetch: *prefetch, Standby: standby, MissTTL: *missTTL, Log: e.log, Identities: ids,
		StartPrefetch: func(names []string, segSize uint32) error { return startPrefetch(c, *spool, *prefetch, segSize, names) }})
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

// startPrefetch launches `walship wal-prefetch --follow` (see detach), so restore_command returns
// at once.
func startPrefetch(c *common, spool string, depth int, segSize uint32, names []string) error {
	args := []string{"wal-prefetch", "--log-level", c.logLevel, "--spool-dir", spool,
		"--follow", strconv.Itoa(depth), "--segment-size", strconv.FormatUint(uint64(segSize), 10)}
	if c.ageKeyFile != "" {
		args = append(args, "--age-key-file", c.ageKeyFile) // the prefetcher decodes what it spools
	}
	return detach(filepath.Join(spool, "prefetch"), "prefetch.log", c.storage, append(args, names...)...)
}

func runWalPrefetch(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("wal-prefetch", "[flags] NAME...", "Internal: download WAL segments into the spool (started by wal-fetch).")
	spool := spoolFlag(e, fs)
	follow := fs.Int("follow", 0, "after NAME..., keep this many segments ahead of wal-fetch's calls until they stop (0: just NAME...)")
	segSize := fs.Uint("segment-size", 0, "WAL segment size in bytes, for --follow")
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
	lowerPriority(prefetchNice)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
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
	if *follow > 0 {
		err = restore.Follow(ctx, st, *spool, fs.Args(), ids, *follow, uint32(*segSize))
	} else {
		err = restore.Prefetch(ctx, st, *spool, fs.Args(), ids)
	}
	if err != nil {
		e.log.Warn("prefetch incomplete", "err", oneLine(err))
		return exitFailure
	}
	return exitOK
}
