package object

import "runtime"

type repeatReader struct{ b []byte }

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], r.b)
	}
	return n, nil
}

// heapWatcher discards writes and samples the live heap every 16 MiB.
type heapWatcher struct {
	peak *uint64
	n    int
}

func (h *heapWatcher) Write(p []byte) (int, error) {
	h.n += len(p)
	if h.n >= 16<<20 {
		h.n = 0
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		*h.peak = max(*h.peak, m.HeapInuse)
	}
	return len(p), nil
}
