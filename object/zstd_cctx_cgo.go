//go:build cgo

package object

/*
#include <stddef.h>

// The few functions of libzstd's stable API that zstdCCtx calls. The library is the copy
// github.com/DataDog/zstd builds into the binary (or the system's, with its external_libzstd
// tag); that package's Go API has no way to set compression parameters, so they are declared
// here rather than taken from its zstd.h.
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
ZSTD_CCtx* ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx);
size_t ZSTD_CCtx_reset(ZSTD_CCtx* cctx, int reset);
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, int param, int value);
size_t ZSTD_compress2(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
unsigned ZSTD_isError(size_t code);
const char* ZSTD_getErrorName(size_t code);
unsigned ZSTD_versionNumber(void);
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// libzstd's parameter and reset numbers (zstd.h; the stable ones have kept their numbers since
// 1.4.0).
const (
	zstdCLevel    = 100 // ZSTD_c_compressionLevel
	zstdCHashLog  = 102 // ZSTD_c_hashLog
	zstdCChainLog = 103 // ZSTD_c_chainLog
	// zstdCBlockSplitterLevel is ZSTD_c_experimentalParam20, ZSTD_c_blockSplitterLevel, in
	// libzstd 1.5.7 and later: 1 turns the pre-splitter off.
	zstdCBlockSplitterLevel = 1017
	zstdResetAll            = 3 // ZSTD_reset_session_and_parameters
)

// The default setting (DefaultLevel) is libzstd's level 3 with its match tables sized for the
// 2 MiB frames walship writes and without block pre-splitting. Level 3's tables (a 128 Ki-entry
// hash table, a 64 Ki-entry chain table: 768 KiB) suit a stream of any length; for 2 MiB they
// mostly miss the CPU's caches. With 16 Ki entries each (128 KiB) and no pre-splitter (new in
// 1.5.7, which samples every block to choose where to cut it), the 64 segments of bench/compare's
// pgbench corpus compress in 14.2 ms a segment on one core against 19.9 (-28%), into 85.2 MiB
// against 84.3 (+1.1%); level 2 takes 17.2 ms and stores 95.6 MiB (+13%). Other levels are
// libzstd's own.
const (
	zstdTunedHashLog  = 14
	zstdTunedChainLog = 14
)

// zstdCCtx is a libzstd compression context.
type zstdCCtx struct {
	c *C.ZSTD_CCtx
}

func newZstdCCtx() *zstdCCtx {
	z := &zstdCCtx{c: C.ZSTD_createCCtx()}
	runtime.AddCleanup(z, func(c *C.ZSTD_CCtx) { C.ZSTD_freeCCtx(c) }, z.c)
	return z
}

// compress compresses src into one frame that declares its size, in dst (which must hold
// ZSTD_compressBound(len(src))), and returns the frame.
func (z *zstdCCtx) compress(dst, src []byte, level int) ([]byte, error) {
	if err := z.setLevel(level); err != nil {
		return nil, err
	}
	var s, d unsafe.Pointer
	if len(src) > 0 {
		s = unsafe.Pointer(&src[0])
	}
	if cap(dst) == 0 {
		return nil, errors.New("zstd: no room for the frame")
	}
	dst = dst[:cap(dst)]
	d = unsafe.Pointer(&dst[0])
	n := C.ZSTD_compress2(z.c, d, C.size_t(len(dst)), s, C.size_t(len(src)))
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	if err := zstdErr(n); err != nil {
		return nil, err
	}
	return dst[:n], nil
}

// setLevel resets every parameter, then sets level, tuned when it is DefaultLevel.
func (z *zstdCCtx) setLevel(level int) error {
	if err := zstdErr(C.ZSTD_CCtx_reset(z.c, zstdResetAll)); err != nil {
		return err
	}
	set := func(p, v int) error {
		if err := zstdErr(C.ZSTD_CCtx_setParameter(z.c, C.int(p), C.int(v))); err != nil {
			return fmt.Errorf("parameter %d = %d: %w", p, v, err)
		}
		return nil
	}
	if err := set(zstdCLevel, level); err != nil || level != DefaultLevel {
		return err
	}
	if err := set(zstdCHashLog, zstdTunedHashLog); err != nil {
		return err
	}
	if err := set(zstdCChainLog, zstdTunedChainLog); err != nil {
		return err
	}
	if C.ZSTD_versionNumber() >= 10507 {
		return set(zstdCBlockSplitterLevel, 1)
	}
	return nil
}

func zstdErr(code C.size_t) error {
	if C.ZSTD_isError(code) == 0 {
		return nil
	}
	return fmt.Errorf("zstd: %s", C.GoString(C.ZSTD_getErrorName(code)))
}
