package object

import (
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Codec names the compression of a frame's payload. The values are stored in frames: never
// renumber them.
type Codec byte

// The codecs.
const (
	None Codec = 0
	Zstd Codec = 1
	LZ4  Codec = 2
	Gzip Codec = 3
)

// DefaultCodec and DefaultLevel are used when the user names none: zstd at level 3, zstd's own
// default and still one of its fast levels. On a pgbench corpus (bench/compare) level 1 stores
// 20% more than level 3 (pgBackRest's default) for 23 ms less CPU per 16 MiB segment.
const (
	DefaultCodec = Zstd
	DefaultLevel = 3
)

// Options choose how a frame is compressed.
type Options struct {
	Codec Codec
	// Level is codec-specific: zstd 1–19 with libzstd (higher is taken as 19), mapped onto
	// four speeds without cgo; gzip 1–9,
	// lz4 1 (fast) to 9 (high compression); 0 picks DefaultLevel.
	Level int
	// Recipients, when set, encrypt the payload with age to each of them (client-side
	// encryption: the store never sees the plaintext or the key).
	Recipients []age.Recipient
}

func (o Options) level() int {
	if o.Level == 0 {
		return DefaultLevel
	}
	return o.Level
}

// DefaultOptions is zstd at DefaultLevel.
var DefaultOptions = Options{Codec: DefaultCodec, Level: DefaultLevel}

type codec struct {
	name       string
	compress   func(w io.Writer, level int) (io.WriteCloser, error)
	decompress func(r io.Reader) (io.Reader, func(), error)
}

var codecs = map[Codec]codec{
	None: {"none", func(w io.Writer, _ int) (io.WriteCloser, error) { return nopWriteCloser{w}, nil },
		func(r io.Reader) (io.Reader, func(), error) { return r, func() {}, nil }},
	Zstd: {"zstd", zstdWriter, zstdReader},
	LZ4:  {"lz4", lz4Writer, lz4Reader},
	Gzip: {"gzip", gzipWriter, gzipReader},
}

// String returns the codec's name as accepted by ParseCodec.
func (c Codec) String() string {
	if cd, ok := codecs[c]; ok {
		return cd.name
	}
	return fmt.Sprintf("codec(%d)", byte(c))
}

// ParseCodec turns a user's --compression value into a Codec.
func ParseCodec(s string) (Codec, error) {
	for c, cd := range codecs {
		if strings.EqualFold(s, cd.name) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown compression %q (use zstd, lz4, gzip or none)", s)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// zstdMaxWindow bounds the window a frame may ask of the decoder, so a hostile frame cannot
// demand gigabytes. Every encoder stays within it (see zstdWriter).
const zstdMaxWindow = 8 << 20

// zstd decoders are costly to build and hold sizeable buffers, so they are kept in a freeList; a
// long-lived process (prefetcher, stream, daemon) reuses them. klauspost/compress decodes every
// frame in a build without cgo, and in a cgo build the frames zstdFrames does not take (see
// zstd_cgo.go).
var zstdDecoders = make(freeList[*zstd.Decoder], keptCodecs)

func newZstdDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
}

// zstdStreamReader decodes with klauspost/compress, bounding the window a frame may ask for
// (zstdMaxWindow).
func zstdStreamReader(r io.Reader) (io.Reader, func(), error) {
	dec, err := zstdDecoders.get(newZstdDecoder)
	if err != nil {
		return nil, nil, err
	}
	if err := dec.Reset(r); err != nil {
		zstdDecoders.put(dec)
		return nil, nil, err
	}
	return dec, func() { dec.Reset(nil); zstdDecoders.put(dec) }, nil
}

func lz4Writer(w io.Writer, level int) (io.WriteCloser, error) {
	zw := lz4.NewWriter(w)
	lvl := lz4.Fast
	if level > 1 {
		lvl = lz4.CompressionLevel(1 << (8 + min(level, 9)))
	}
	if err := zw.Apply(lz4.CompressionLevelOption(lvl), lz4.ConcurrencyOption(1), lz4.ChecksumOption(false)); err != nil {
		return nil, err
	}
	return zw, nil
}

func lz4Reader(r io.Reader) (io.Reader, func(), error) {
	zr := lz4.NewReader(r)
	if err := zr.Apply(lz4.ConcurrencyOption(1)); err != nil {
		return nil, nil, err
	}
	return zr, func() {}, nil
}

func gzipWriter(w io.Writer, level int) (io.WriteCloser, error) {
	return gzip.NewWriterLevel(w, min(max(level, 1), 9))
}

func gzipReader(r io.Reader) (io.Reader, func(), error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, nil, err
	}
	return zr, func() { zr.Close() }, nil
}
