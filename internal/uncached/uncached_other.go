//go:build !linux

package uncached

// Elsewhere every read goes through the cache.
func (r *Reader) startAhead() {}

func alignedBuf(n int) []byte { return make([]byte, n) }
