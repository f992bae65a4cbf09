//go:build cgo

package object

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	ddzstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

// decodeZstd reads a zstd payload through zstdReader and reports whether libzstd decoded all of
// it (no frame handed to klauspost/compress).
func decodeZstd(t *testing.T, payload []byte) ([]byte, bool, error) {
	t.Helper()
	r, release, err := zstdReader(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	out, err := io.ReadAll(r)
	return out, r.(*zstdFrames).rest == nil, err
}

func libzstd(t *testing.T, data []byte) []byte {
	t.Helper()
	c, err := ddzstd.CompressLevel(nil, data, 3)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// klauspostStream is a frame as klauspost/compress streams it: no content size in the header.
func klauspostStream(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

// TestZstdFramesDecoded: what zstdChunkWriter writes, and frames of every header shape (1-, 2-,
// 4-byte content sizes, single-segment or with a window, a content checksum), are decoded by
// libzstd; a frame without a declared size (a streaming encoder's) or a skippable frame hands
// the rest of the stream to klauspost/compress, with the same bytes out either way.
func TestZstdFramesDecoded(t *testing.T) {
	data := walLike(5<<20+123, 11)
	var chunked bytes.Buffer
	w, _ := zstdWriter(&chunked, 3)
	w.Write(data)
	w.Close()
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	skippable := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 0x184D2A50), 3)
	skippable = append(skippable, "abc"...)
	cases := []struct {
		name    string
		payload []byte
		want    []byte
		libzstd bool
	}{
		{"chunked", chunked.Bytes(), data, true},
		{"empty frame", libzstd(t, nil), nil, true},
		{"1-byte size", libzstd(t, data[:100]), data[:100], true},
		{"2-byte size", libzstd(t, data[:1000]), data[:1000], true},
		{"4-byte size", libzstd(t, data[:300<<10]), data[:300<<10], true},
		{"checksum", enc.EncodeAll(data[:200<<10], nil), data[:200<<10], true},
		{"no size", klauspostStream(t, data[:1<<20]), data[:1<<20], false},
		{"sized then streamed", append(libzstd(t, data[:5000]), klauspostStream(t, data[5000:5000+1<<20])...), data[:5000+1<<20], false},
		{"skippable", append(append(libzstd(t, data[:700]), skippable...), libzstd(t, data[700:900])...), data[:900], false},
	}
	for _, c := range cases {
		got, all, err := decodeZstd(t, c.payload)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: %d bytes decoded, differ from the %d encoded", c.name, len(got), len(c.want))
		}
		if all != c.libzstd {
			t.Errorf("%s: decoded by libzstd throughout: %v, want %v", c.name, all, c.libzstd)
		}
		// Decode takes libzstd's frames without a copy (chunker), then the rest through Read.
		var out writeSizes
		sum, err := Decode(&out, bytes.NewReader(zstdObject(c.payload, c.want)))
		switch {
		case err != nil:
			t.Errorf("%s: Decode: %v", c.name, err)
		case !bytes.Equal(out.Bytes(), c.want) || sum.RawSize != int64(len(c.want)):
			t.Errorf("%s: Decode wrote %d bytes (summary %d), want the %d encoded", c.name, out.Len(), sum.RawSize, len(c.want))
		case out.max > maxWrite:
			t.Errorf("%s: Decode wrote %d bytes at once, more than %d", c.name, out.max, maxWrite)
		}
		// A payload whose decoded bytes differ from the trailer's fails the digest check.
		if len(c.want) > 0 {
			bad := bytes.Clone(c.want)
			bad[len(bad)/2] ^= 1
			if _, err := Decode(io.Discard, bytes.NewReader(zstdObject(c.payload, bad))); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: Decode against a wrong digest: %v, want ErrCorrupt", c.name, err)
			}
		}
	}
}

// writeSizes is a bytes.Buffer that keeps the largest Write.
type writeSizes struct {
	bytes.Buffer
	max int
}

func (w *writeSizes) Write(p []byte) (int, error) {
	w.max = max(w.max, len(p))
	return w.Buffer.Write(p)
}

// zstdObject frames a zstd payload as an object whose trailer vouches for raw.
func zstdObject(payload, raw []byte) []byte {
	var h [headerSize]byte
	copy(h[:], magic)
	h[4] = version
	h[5] = byte(Zstd)
	h[7] = headerCheck(h)
	d := NewHash()
	d.Write(raw)
	t := trailer(h, int64(len(raw)), DigestOf(d), crc32.Checksum(payload, castagnoli))
	return append(append(h[:], payload...), t...)
}

// zstdHeader is a frame header with a 4-byte content size and a window descriptor.
func zstdHeader(size uint32) []byte {
	h := binary.LittleEndian.AppendUint32(nil, zstdMagic)
	h = append(h, 2<<6, 0x58) // 4-byte size, not single-segment; window 8 MiB
	return binary.LittleEndian.AppendUint32(h, size)
}

func rawBlock(n int, last bool) []byte {
	h := uint32(n) << 3
	if last {
		h |= 1
	}
	return append([]byte{byte(h), byte(h >> 8), byte(h >> 16)}, make([]byte, n)...)
}

// TestZstdFramesBounded: frames that would make the reader hold more than its bounds, or that
// are damaged in their structure, are refused as corrupt; a declared size beyond zstdMaxWindow
// goes to klauspost/compress, which refuses the window.
func TestZstdFramesBounded(t *testing.T) {
	long := zstdHeader(zstdMaxWindow)
	for range zstdMaxWindow/zstdMaxBlock + 1 {
		long = append(long, rawBlock(zstdMaxBlock, false)...)
	}
	cases := map[string][]byte{
		"block over 128 KiB":     append(zstdHeader(200<<10), rawBlock(zstdMaxBlock+1, true)...),
		"frame over maxFrame":    long,
		"reserved block type":    append(zstdHeader(10), 7, 0, 0),
		"size not as declared":   append(zstdHeader(10), rawBlock(9, true)...),
		"truncated in a block":   append(zstdHeader(10), rawBlock(10, true)[:8]...),
		"truncated in a header":  zstdHeader(10)[:7],
		"declared over window":   append(zstdHeader(zstdMaxWindow+1), rawBlock(10, true)...),
		"not zstd after a frame": append(libzstd(t, []byte("wal")), "garbage"...),
	}
	for name, payload := range cases {
		if _, _, err := decodeZstd(t, payload); err == nil {
			t.Errorf("%s: decoded without an error", name)
		} else if name != "declared over window" && name != "not zstd after a frame" && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	// A well-formed frame of raw blocks decodes: the walk of the block headers is right.
	ok := append(zstdHeader(3), rawBlock(3, true)...)
	if got, all, err := decodeZstd(t, ok); err != nil || len(got) != 3 || !all {
		t.Errorf("raw-block frame: %d bytes, libzstd %v, %v", len(got), all, err)
	}
}

// TestZstdTunedDefault: the default level compresses with walship's tuned parameters (its
// frames differ from libzstd's level 3 and decode to the same bytes); any other level is
// libzstd's own, byte for byte, even from a context the default level used just before (every
// parameter is reset between frames).
func TestZstdTunedDefault(t *testing.T) {
	data := walLike(zstdChunk, 5)
	z := newZstdCCtx()
	out := make([]byte, ddzstd.CompressBound(len(data)))
	for _, level := range []int{DefaultLevel, 1, DefaultLevel, 5, 2} {
		got, err := z.compress(out, data, level)
		if err != nil {
			t.Fatalf("level %d: %v", level, err)
		}
		plain, err := ddzstd.CompressLevel(nil, data, level)
		if err != nil {
			t.Fatal(err)
		}
		if tuned := !bytes.Equal(got, plain); tuned != (level == DefaultLevel) {
			t.Errorf("level %d: frame differs from libzstd's own: %v, want %v", level, tuned, level == DefaultLevel)
		}
		back, err := ddzstd.Decompress(nil, got)
		if err != nil || !bytes.Equal(back, data) {
			t.Errorf("level %d: round trip: %v (%d bytes of %d)", level, err, len(back), len(data))
		}
	}
	if _, err := z.compress(out[:0:0], data, DefaultLevel); err == nil {
		t.Error("compress into no room: no error")
	}
	if _, err := z.compress(out[:10:10], data, DefaultLevel); err == nil {
		t.Error("compress into 10 bytes: no error")
	}
}
