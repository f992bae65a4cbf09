package object

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"filippo.io/age"
)

// Fixed test keys, so that saved corpus entries stay meaningful from run to run. They protect
// nothing.
const (
	fuzzKey  = "AGE-SECRET-KEY-10MZ7XNZELCAXW5R2D86Z07PAJ9T6N06NJ3Y6MUL84GJXD6A2ZFKSTF8XTY"
	otherKey = "AGE-SECRET-KEY-1JZNG6V7MZ28LFWKWTJPPXC43MTW24UEV5PR3RKTXL0HFD37QXC8SD3TJKS"
)

func mustKey(f *testing.F, s string) *age.X25519Identity {
	id, err := age.ParseX25519Identity(s)
	if err != nil {
		f.Fatal(err)
	}
	return id
}

// FuzzDecode feeds arbitrary bytes to the frame reader without a key: it must never panic, fail
// only with the errors the decoder documents (ErrCorrupt; ErrKey for a well-formed encrypted
// header), and anything it accepts must re-encode to a frame with the same summary.
func FuzzDecode(f *testing.F) {
	for _, c := range allCodecs {
		f.Add(encodeSeed(f, c, nil))
	}
	f.Add(encodeSeed(f, Zstd, []age.Recipient{mustKey(f, fuzzKey).Recipient()}))
	f.Add([]byte("WSHP\x01\x01\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, nil) })
}

// FuzzDecodeWith is FuzzDecode for the encrypted path: the frame is opened with a key, so the
// mutations reach age's header parsing, its authenticated stream and the decompressor behind it.
func FuzzDecodeWith(f *testing.F) {
	key := mustKey(f, fuzzKey)
	for _, c := range allCodecs {
		f.Add(encodeSeed(f, c, []age.Recipient{key.Recipient()}))
	}
	f.Add(encodeSeed(f, Zstd, []age.Recipient{mustKey(f, otherKey).Recipient()}))
	f.Add(encodeSeed(f, Zstd, nil))
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b, []age.Identity{key}) })
}

func encodeSeed(f *testing.F, c Codec, to []age.Recipient) []byte {
	var buf bytes.Buffer
	if _, err := Encode(&buf, bytes.NewReader(walLike(2000, 1)), Options{Codec: c, Recipients: to}); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

func checkDecode(t *testing.T, b []byte, ids []age.Identity) {
	var out bytes.Buffer
	sum, err := DecodeWith(&limitedWriter{w: &out, n: 64 << 20}, bytes.NewReader(b), ids)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrKey) && !errors.Is(err, errTooBig) {
			t.Fatalf("error %v wraps neither ErrCorrupt nor ErrKey", err)
		}
		return
	}
	again, err := Encode(io.Discard, bytes.NewReader(out.Bytes()), Options{Codec: None})
	if err != nil || again != sum {
		t.Fatalf("accepted frame does not describe its content: %+v vs %+v", sum, again)
	}
}

// FuzzSummaryFromMetadata parses object metadata as a store returns it (any bytes another tool
// or a damaged sidecar may hold): what it accepts must be a summary Metadata writes back the same.
func FuzzSummaryFromMetadata(f *testing.F) {
	good := Summary{RawSize: 16 << 20, Digest: Digest{1, 2, 3}}.Metadata()
	f.Add(good[MetaDigest], good[MetaRawSize])
	f.Add("", "")
	f.Add(good[MetaDigest][:10], "-1")
	f.Add(good[MetaDigest], "+16777216")
	f.Fuzz(func(t *testing.T, sha, size string) {
		s, ok := SummaryFromMetadata(map[string]string{MetaDigest: sha, MetaRawSize: size})
		if !ok {
			return
		}
		if s.RawSize < 0 {
			t.Fatalf("accepted a negative size %q", size)
		}
		if back, ok := SummaryFromMetadata(s.Metadata()); !ok || back != s {
			t.Fatalf("accepted summary %+v does not round-trip: %+v %v", s, back, ok)
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
