package object

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zeebo/xxh3"
)

// walLike returns n bytes shaped like PostgreSQL WAL: 8 KiB pages with headers, records with
// headers, counters, repeated tuple data and some incompressible bytes.
func walLike(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	words := [][]byte{[]byte("pgbench_accounts"), []byte("filler                                  "), []byte("abalance"), []byte("\x00\x00\x00\x00")}
	for page := 0; page*8192 < n; page++ {
		p := b[page*8192 : min(n, (page+1)*8192)]
		if len(p) >= 24 {
			binary.LittleEndian.PutUint16(p, 0xD110)
			binary.LittleEndian.PutUint32(p[4:], 1)
			binary.LittleEndian.PutUint64(p[8:], uint64(page*8192))
		}
		off, lsn := 24, uint64(page*8192)
		for off+24 < len(p) {
			rec := p[off:min(len(p), off+40+r.IntN(300))]
			binary.LittleEndian.PutUint32(rec, uint32(len(rec)))
			binary.LittleEndian.PutUint64(rec[4:], lsn)
			for i := 16; i < len(rec); {
				switch r.IntN(4) {
				case 0:
					i += copy(rec[i:], words[r.IntN(len(words))])
				case 1:
					for j := 0; j < 8 && i < len(rec); j++ {
						rec[i] = byte(r.Uint32())
						i++
					}
				default:
					i += 4
				}
			}
			off += len(rec)
			lsn += uint64(len(rec))
		}
	}
	return b
}

var allCodecs = []Codec{None, Zstd, LZ4, Gzip}

func encode(t testing.TB, data []byte, o Options) []byte {
	var buf bytes.Buffer
	sum, err := Encode(&buf, bytes.NewReader(data), o)
	if err != nil {
		t.Fatal(err)
	}
	if sum.RawSize != int64(len(data)) || sum.Digest != Digest(xxh3.Hash128(data).Bytes()) {
		t.Fatalf("encode summary wrong")
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, c := range allCodecs {
		for _, n := range []int{0, 1, 1000, 1 << 20, 16 << 20} {
			data := walLike(n, uint64(n))
			frame := encode(t, data, Options{Codec: c})
			var out bytes.Buffer
			sum, err := Decode(&out, bytes.NewReader(frame))
			if err != nil {
				t.Fatalf("%s %d: decode: %v", c, n, err)
			}
			if !bytes.Equal(out.Bytes(), data) || sum.RawSize != int64(n) || sum.Digest != Digest(xxh3.Hash128(data).Bytes()) {
				t.Fatalf("%s %d: round trip differs", c, n)
			}
			if n == 16<<20 {
				t.Logf("%s: 16 MiB WAL-like -> %d bytes (%.1fx)", c, len(frame), float64(n)/float64(len(frame)))
			}
		}
	}
}

func TestCodecInHeader(t *testing.T) {
	for _, c := range allCodecs {
		r, err := NewReader(bytes.NewReader(encode(t, []byte("abc"), Options{Codec: c})))
		if err != nil || r.Codec() != c {
			t.Errorf("codec %s: reader says %v, err %v", c, r.Codec(), err)
		}
	}
}

func decodeErr(frame []byte) error {
	_, err := Decode(io.Discard, bytes.NewReader(frame))
	return err
}

// TestEveryFlipDetected flips each bit position class in every byte of small frames.
func TestEveryFlipDetected(t *testing.T) {
	for _, c := range allCodecs {
		data := walLike(3000, 1)
		frame := encode(t, data, Options{Codec: c})
		for i := range frame {
			for _, mask := range []byte{0x01, 0x80} {
				bad := bytes.Clone(frame)
				bad[i] ^= mask
				if err := decodeErr(bad); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: flip 0x%02x at byte %d of %d: got %v, want ErrCorrupt", c, mask, i, len(frame), err)
				}
			}
		}
	}
}

func TestEveryTruncationDetected(t *testing.T) {
	for _, c := range allCodecs {
		frame := encode(t, walLike(3000, 2), Options{Codec: c})
		for n := 0; n < len(frame); n++ {
			if err := decodeErr(frame[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: truncated to %d of %d: got %v, want ErrCorrupt", c, n, len(frame), err)
			}
		}
	}
}

func TestTrailingGarbageDetected(t *testing.T) {
	for _, c := range allCodecs {
		frame := encode(t, walLike(3000, 3), Options{Codec: c})
		for _, extra := range [][]byte{{0}, []byte("garbage"), frame} {
			if err := decodeErr(append(bytes.Clone(frame), extra...)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: %d bytes appended: got %v, want ErrCorrupt", c, len(extra), err)
			}
		}
	}
}

// TestSwappedPayloadDetected: a frame whose payload decodes fine but belongs to other bytes.
func TestSwappedPayloadDetected(t *testing.T) {
	a := encode(t, []byte("aaaaaaaa"), Options{Codec: None})
	b := encode(t, []byte("bbbbbbbb"), Options{Codec: None})
	mixed := append(bytes.Clone(b[:len(b)-trailerSize]), a[len(a)-trailerSize:]...)
	if err := decodeErr(mixed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("payload of b with trailer of a: got %v, want ErrCorrupt", err)
	}
}

type failingSource struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingSource) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// TestSourceErrorIsNotCorruption: a connection reset must be retried, not reported as a corrupt
// object.
func TestSourceErrorIsNotCorruption(t *testing.T) {
	reset := errors.New("connection reset by peer")
	for _, c := range allCodecs {
		frame := encode(t, walLike(1<<20, 4), Options{Codec: c})
		_, err := Decode(io.Discard, &failingSource{r: bytes.NewReader(frame), n: len(frame) / 2, err: reset})
		if !errors.Is(err, reset) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: source reset mid-frame: got %v, want the reset and not ErrCorrupt", c, err)
		}
	}
}

func TestNotAFrame(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("WSH"), []byte("PK\x03\x04 not ours"), make([]byte, 100)} {
		if err := decodeErr(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: got %v, want ErrCorrupt", in, err)
		}
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	sum, _ := Encode(&buf, bytes.NewReader([]byte("hello")), DefaultOptions)
	got, ok := SummaryFromMetadata(sum.Metadata())
	if !ok || got != sum {
		t.Fatalf("metadata round trip: got %+v %v, want %+v", got, ok, sum)
	}
	for _, bad := range []map[string]string{nil, {"xxh3": "zz", "rawsize": "1"}, {"xxh3": sum.Hex(), "rawsize": "-1"}, {"sha256": sum.Hex(), "rawsize": "1"}} {
		if _, ok := SummaryFromMetadata(bad); ok {
			t.Errorf("malformed metadata %v accepted", bad)
		}
	}
}

func TestParseCodec(t *testing.T) {
	for _, c := range allCodecs {
		if got, err := ParseCodec(c.String()); err != nil || got != c {
			t.Errorf("ParseCodec(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseCodec("brotli"); err == nil {
		t.Error("brotli accepted")
	}
}

// TestConstantMemory encodes and decodes 256 MiB through pipes and checks the heap stays small.
func TestConstantMemory(t *testing.T) {
	const n = 256 << 20
	src := io.LimitReader(&repeatReader{walLike(1<<20, 9)}, n)
	pr, pw := io.Pipe()
	go func() {
		_, err := Encode(pw, src, DefaultOptions)
		pw.CloseWithError(err)
	}()
	var peak uint64
	sum, err := Decode(&heapWatcher{peak: &peak}, pr)
	if err != nil || sum.RawSize != n {
		t.Fatalf("stream of %d bytes: %v (%d)", n, err, sum.RawSize)
	}
	if peak > 96<<20 {
		t.Fatalf("heap reached %d MiB while streaming 256 MiB; want constant memory", peak>>20)
	}
	t.Logf("peak heap %d MiB while streaming 256 MiB", peak>>20)
}

// TestVersion1Refused checks that a frame of the pre-release format (SHA-256 digests) is refused
// as corrupt, with the version named, rather than misread with the new trailer layout.
func TestVersion1Refused(t *testing.T) {
	var frame bytes.Buffer
	if _, err := Encode(&frame, strings.NewReader("segment"), Options{Codec: Zstd}); err != nil {
		t.Fatal(err)
	}
	b := frame.Bytes()
	b[4] = 1
	b[7] = headerCheck([headerSize]byte(b[:headerSize]))
	_, err := Decode(io.Discard, bytes.NewReader(b))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "frame version 1") {
		t.Fatalf("a version 1 frame: %v, want a corrupt-object error naming version 1", err)
	}
}
