package object

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// benchData is the segment the codec benchmarks compress: the file WALSHIP_BENCH_WAL names (a
// real segment, e.g. one of bench/compare's corpus), else a 16 MiB WAL-like buffer. Real WAL is
// what to quote: the synthetic buffer is far less compressible and favours other code paths
// (libzstd level 3 runs at 58 MB/s on it, 270 MB/s on pgbench WAL).
func benchData(b *testing.B) []byte {
	if p := os.Getenv("WALSHIP_BENCH_WAL"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatalf("WALSHIP_BENCH_WAL: %v", err)
		}
		return data
	}
	return walLike(16<<20, 42)
}

// BenchmarkEncode and BenchmarkDecode measure one core (run with -cpu 1) on a segment (see
// benchData); MB/s is of raw WAL. The ratio metric is raw size over stored size.
func BenchmarkEncode(b *testing.B) {
	b.Logf("zstd encoder: %s", ZstdEncoder)
	data := benchData(b)
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
	data := benchData(b)
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
