package object

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkEncode and BenchmarkDecode measure one core (run with -cpu 1) on a 16 MiB WAL-like
// segment; MB/s is of raw WAL. The ratio metric is raw size over stored size.
func BenchmarkEncode(b *testing.B) {
	data := walLike(16<<20, 42)
	for _, o := range benchOptions {
		b.Run(name(o), func(b *testing.B) {
			var buf bytes.Buffer
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				buf.Reset()
				if _, err := Encode(&buf, bytes.NewReader(data), o); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data))/float64(buf.Len()), "ratio")
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	data := walLike(16<<20, 42)
	for _, o := range benchOptions {
		b.Run(name(o), func(b *testing.B) {
			var buf bytes.Buffer
			Encode(&buf, bytes.NewReader(data), o)
			frame := buf.Bytes()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Decode(io.Discard, bytes.NewReader(frame)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchOptions = []Options{{Codec: Zstd, Level: 1}, {Codec: Zstd, Level: 3}, {Codec: LZ4, Level: 1}, {Codec: Gzip, Level: 1}, {Codec: None}}

func name(o Options) string {
	if o.Codec == None {
		return "none"
	}
	return o.Codec.String() + "-" + string(rune('0'+o.Level))
}
