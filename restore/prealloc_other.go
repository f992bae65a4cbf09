//go:build !linux

package restore

import "os"

// preallocate is a no-op where fallocate is not available (see prealloc_linux.go).
func preallocate(*os.File, map[string]string) {}

// startWriteback is a no-op where sync_file_range is not available (see prealloc_linux.go).
func startWriteback(*os.File) {}
