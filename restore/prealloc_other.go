//go:build !linux

package restore

import "os"

// preallocate is a no-op where fallocate is not available (see prealloc_linux.go).
func preallocate(*os.File, map[string]string, int64) {}
