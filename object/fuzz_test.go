package object

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame reader: it must never panic, and anything it
// accepts must re-encode to a frame with the same summary.
func FuzzDecode(f *testing.F) {
	for _, c := range allCodecs {
		var buf bytes.Buffer
		Encode(&buf, bytes.NewReader(walLike(2000, 1)), Options{Codec: c})
		f.Add(buf.Bytes())
	}
	f.Add([]byte("WSHP\x01\x01\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var out bytes.Buffer
		sum, err := Decode(&limitedWriter{w: &out, n: 64 << 20}, bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, errTooBig) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := Encode(io.Discard, bytes.NewReader(out.Bytes()), Options{Codec: None})
		if err != nil || again != sum {
			t.Fatalf("accepted frame does not describe its content: %+v vs %+v", sum, again)
		}
	})
}

var errTooBig = errors.New("decoded output over the fuzz limit")

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n -= len(p); l.n < 0 {
		return 0, errTooBig
	}
	return l.w.Write(p)
}
