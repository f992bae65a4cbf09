//go:build !cgo

package object

import (
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// ZstdEncoder names the library that writes zstd frames in this build: klauspost/compress when
// cgo is off (see zstd_cgo.go for the faster libzstd build).
const ZstdEncoder = "klauspost/compress"

// zstd encoders are costly to build and hold sizeable buffers, so they are pooled per level; a
// long-lived process (stream, daemon) reuses them.
var zstdEncoders sync.Map // zstd.EncoderLevel -> *sync.Pool

// zstdWindow is the encoder's window: on WAL, 1 MiB compresses within 2% of 4 MiB and touches
// far less memory in a process that lives for one segment. It is within zstdMaxWindow.
const zstdWindow = 1 << 20

func zstdWriter(w io.Writer, level int) (io.WriteCloser, error) {
	lvl := zstd.EncoderLevelFromZstd(level)
	p, _ := zstdEncoders.LoadOrStore(lvl, &sync.Pool{})
	pool := p.(*sync.Pool)
	enc, _ := pool.Get().(*zstd.Encoder)
	if enc == nil {
		var err error
		enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(zstdWindow), zstd.WithEncoderCRC(false))
		if err != nil {
			return nil, err
		}
	}
	enc.Reset(w)
	return &pooledEncoder{enc, pool}, nil
}

type pooledEncoder struct {
	*zstd.Encoder
	pool *sync.Pool
}

func (p *pooledEncoder) Close() error {
	err := p.Encoder.Close()
	p.Encoder.Reset(nil)
	p.pool.Put(p.Encoder)
	return err
}
