package main

import (
	"context"
	"fmt"
	"runtime"
)

func runVersion(ctx context.Context, e *env, args []string) int {
	fs, c := e.flags("version", "", "Print the version.")
	if code, done := e.parse(fs, c, args, 0); done {
		return code
	}
	fmt.Fprintf(e.stdout, "walship %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
