package main

import (
	"context"
	"fmt"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/storage/open"
)

// runVerify reads back every archived file and reports each one that is damaged or unreadable.
func runVerify(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("verify", "[flags]", "Read every archived WAL file back, verify it completely, and list each damaged or\n"+
		"unreadable one on stdout. Exit 0 all verified; 1 some failed; 2 bad arguments.")
	workers := fs.Int("workers", 4, "concurrent downloads")
	e.cryptoFlags(fs, c)
	if code, done := e.parse(fs, c, args, 0); done {
		return code
	}
	ids, err := c.identities()
	if err != nil {
		fmt.Fprintf(e.stderr, "walship verify: %v\n", err)
		return exitUsage
	}
	st, err := open.Open(ctx, c.storage, open.Options{Getenv: e.getenv, Logger: e.log})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship verify: %s\n", oneLine(err))
		return exitUsage
	}
	var ok, bad int
	var raw int64
	err = archive.Verify(ctx, st, *workers, ids, func(r archive.Result) {
		if r.Err != nil {
			bad++
			what := "UNREADABLE"
			if archive.IsCorrupt(r.Err) {
				what = "CORRUPT"
			}
			fmt.Fprintf(e.stdout, "%s %s: %s\n", what, r.Name, oneLine(r.Err))
			return
		}
		ok++
		raw += r.Raw
	})
	if err != nil {
		fmt.Fprintf(e.stderr, "walship verify: %s: %s\n", st, oneLine(err))
		return exitFailure
	}
	fmt.Fprintf(e.stdout, "%s: %d verified (%d MiB of WAL), %d failed\n", st, ok, raw>>20, bad)
	if bad > 0 {
		return exitFailure
	}
	return exitOK
}
