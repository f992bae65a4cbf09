// Package fastfetch serves a wal-fetch call from the prefetch spool before the rest of the
// binary initialises, and exits.
//
// PostgreSQL starts one restore_command per WAL file, and once the prefetcher runs ahead of
// replay a call does little more than check a spooled file and hard-link it into pg_wal. The
// process's start-up was then most of what replay waited for: about 12 ms a call on a 2-core VM,
// of which the package initialisation of the storage SDKs took 5.5 ms (Google Cloud Storage
// alone 4 ms; bench's BenchmarkStartup) and the rest grew with the binary they make. The
// language initialises a package as soon as everything it imports is, taking the first in
// import-path order when several are ready (the Go specification, "Package initialization"),
// and this package imports only packages that are ready early (standard ones initialised before
// os, walfile, flock, restore/spool; not log/slog or path/filepath, which wait for every ready
// package whose path sorts before theirs): its init runs after about a hundred small packages
// and before any storage SDK's, and a call it serves exits there, in 5.4-5.9 ms instead of
// 12.2-14.4 ms (the same VM, a file:// archive, 60 ms between calls as replay spaces them).
//
// It serves only the common case and leaves everything else, untouched, to the full command:
// exactly `wal-fetch [--storage URL] [--log-level L] [--spool-dir DIR] NAME pg_wal/RECOVERYXLOG`
// (the form PostgreSQL's archive recovery uses) for a segment NAME, a log level that logs
// nothing on success (not debug), a storage URL given, a prefetcher holding the spool's lock
// (one started by an earlier full call, which checked the configuration), no timeline history in
// pg_wal (the full command checks segments against it), and a spooled copy that passes
// spool.Serve's check. Any other call, and any failure, goes on to main, which does the same
// work again from the start; a copy already linked into pg_wal is simply served again.
package fastfetch

import (
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/walship/walship/restore/spool"
	"github.com/walship/walship/walfile"
)

func init() {
	if served(os.Args[1:], os.Getenv) {
		os.Exit(0)
	}
}

// What wal-fetch reads of its environment, and its prefetch depth: the full command's too, so
// that the two read a call alike.
const (
	EnvStorage      = "WALSHIP_STORAGE"
	EnvLogLevel     = "WALSHIP_LOG_LEVEL"
	EnvSpool        = "WALSHIP_SPOOL_DIR"
	EnvPrefetch     = "WALSHIP_PREFETCH"
	DefaultLevel    = "info"
	DefaultPrefetch = 8
	MaxPrefetch     = 128
)

// Dest is the only %p served: the name PostgreSQL's archive recovery restores a segment under.
const Dest = "pg_wal/RECOVERYXLOG"

// DataDir is the data directory of a %p path: PostgreSQL runs archive and restore commands in the
// data directory, with %p pointing into pg_wal.
func DataDir(walPath string) string {
	abs := walPath
	if !path.IsAbs(abs) {
		wd, err := os.Getwd()
		if err != nil {
			return "."
		}
		abs = path.Join(wd, walPath)
	}
	return path.Dir(path.Dir(abs))
}

// served serves the wal-fetch call args from the spool and reports whether it did; getenv reads
// the environment as the full command does.
func served(args []string, getenv func(string) string) bool {
	c, ok := parse(args, getenv)
	if !ok {
		return false
	}
	dir := path.Join(c.spool, "prefetch")
	if !spool.Running(dir) || historyIn(path.Dir(c.dest)) {
		return false
	}
	spool.AwaitInFlight(dir, c.name)
	hdr, _, err := spool.Serve(path.Join(dir, c.name), c.name, c.dest)
	if err != nil || hdr == nil {
		return false
	}
	// As restore's prefetchAfter with a prefetcher running: tell it where replay is. Without one
	// (it ended meanwhile), the full command serves the segment again and starts another.
	if _, _, err := walfile.ParseSegment(c.name, hdr.SegSize); err != nil || !spool.Running(dir) {
		return false
	}
	os.WriteFile(path.Join(dir, spool.PositionFile), []byte(c.name), 0o600)
	return true
}

// call is a wal-fetch call fastfetch can serve.
type call struct{ name, dest, spool string }

// parse reads args as the full command's flag set would, and reports whether the call is one
// fastfetch serves (see the package comment). Flags are read as the flag package reads them
// (-f or --f, with the value after = or as the next argument, up to the first non-flag
// argument); any flag but the three named, including --, leaves the call to the full command.
func parse(args []string, getenv func(string) string) (call, bool) {
	if len(args) == 0 || args[0] != "wal-fetch" {
		return call{}, false
	}
	// The full command's defaults: an empty WALSHIP_LOG_LEVEL is info, an empty --log-level an error.
	vals := map[string]string{
		"storage":   getenv(EnvStorage),
		"log-level": getenv(EnvLogLevel),
		"spool-dir": getenv(EnvSpool),
	}
	if vals["log-level"] == "" {
		vals["log-level"] = DefaultLevel
	}
	args = args[1:]
	for len(args) > 0 && len(args[0]) > 1 && args[0][0] == '-' {
		f := strings.TrimPrefix(strings.TrimPrefix(args[0], "-"), "-")
		name, val, hasVal := strings.Cut(f, "=")
		if _, known := vals[name]; !known {
			return call{}, false
		}
		args = args[1:]
		if !hasVal {
			if len(args) == 0 {
				return call{}, false
			}
			val, args = args[0], args[1:]
		}
		vals[name] = val
	}
	if len(args) != 2 || walfile.Classify(args[0]) != walfile.Segment || args[1] != Dest || vals["storage"] == "" {
		return call{}, false
	}
	// Levels above debug log nothing on success; the full command reads the others (and their
	// offsets, "info+2"), so log/slog, initialised late, is not imported for them.
	switch strings.ToLower(vals["log-level"]) {
	case "info", "warn", "error":
	default:
		return call{}, false
	}
	if v := getenv(EnvPrefetch); v != "" {
		if n, err := strconv.Atoi(v); err == nil && (n < 1 || n > MaxPrefetch) {
			return call{}, false
		}
	}
	c := call{name: args[0], dest: args[1], spool: vals["spool-dir"]}
	if c.spool == "" {
		c.spool = path.Join(DataDir(c.dest), "walship")
	}
	return c, true
}

// historyIn reports whether walDir holds a timeline history file.
func historyIn(walDir string) bool {
	entries, _ := os.ReadDir(walDir)
	for _, e := range entries {
		if walfile.Classify(e.Name()) == walfile.History {
			return true
		}
	}
	return false
}
