package walfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := map[string]Kind{
		"000000010000000000000003":                 Segment,
		"00000002.history":                         History,
		"000000010000000000000003.partial":         Partial,
		"000000010000000000000003.00000028.backup": Backup,
		"00000001000000000000000g":                 Invalid,
		"000000010000000000000003.gz":              Invalid,
		"../../etc/passwd":                         Invalid,
		"/000000010000000000000003":                Invalid,
		"0000000100000000000000031":                Invalid,
		"0000000g.history":                         Invalid,
		"000000010000000000000003\x00":             Invalid,
		"":                                         Invalid,
		"000000010000000000000003/00000028.backup": Invalid,
	}
	for name, want := range cases {
		if got := Classify(name); got != want {
			t.Errorf("Classify(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSegmentNames(t *testing.T) {
	for _, segSize := range []uint32{1 << 20, 16 << 20, 1 << 30} {
		for _, segno := range []uint64{0, 1, 255, 256, 4095, 4096, 1 << 20} {
			name := SegmentName(3, segno, segSize)
			tli, got, err := ParseSegment(name, segSize)
			if err != nil || tli != 3 || got != segno {
				t.Errorf("size %d segno %d: %s parsed as %d/%d (%v)", segSize, segno, name, tli, got, err)
			}
		}
	}
	if got := SegmentName(1, 0x100, 16<<20); got != "000000010000000100000000" {
		t.Errorf("SegmentName(1, 256, 16MiB) = %s", got)
	}
	if _, _, err := ParseSegment("000000010000000000000100", 16<<20); err == nil {
		t.Errorf("segment 0x100 accepted for 16 MiB segments (only 0..FF exist)")
	}
}

func TestLSN(t *testing.T) {
	l, err := ParseLSN("16/B374D848")
	if err != nil || l != 0x16B374D848 || l.String() != "16/B374D848" {
		t.Fatalf("ParseLSN: %v %v", l, err)
	}
	for _, bad := range []string{"", "16", "x/1", "1/2/3", "100000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func header(magic uint16, info uint16, tli uint32, addr uint64, sysid uint64, seg, blk uint32) []byte {
	b := make([]byte, 8192)
	le := binary.LittleEndian
	le.PutUint16(b, magic)
	le.PutUint16(b[2:], info)
	le.PutUint32(b[4:], tli)
	le.PutUint64(b[8:], addr)
	le.PutUint64(b[24:], sysid)
	le.PutUint32(b[32:], seg)
	le.PutUint32(b[36:], blk)
	return b
}

func TestParseHeader(t *testing.T) {
	h, err := ParseHeader(header(0xD110, 2, 1, 3<<24, 7300000000000000001, 16<<20, 8192))
	if err != nil || h.SystemID != 7300000000000000001 || h.SegSize != 16<<20 || h.Timeline != 1 || h.PageAddr != 3<<24 {
		t.Fatalf("ParseHeader: %+v, %v", h, err)
	}
	bad := [][]byte{
		header(0x1234, 2, 1, 0, 1, 16<<20, 8192),
		header(0xD110, 0, 1, 0, 1, 16<<20, 8192),
		header(0xD110, 2, 1, 0, 1, 3<<20, 8192),
		header(0xD110, 2, 1, 0, 1, 16<<20, 1000),
		header(0xD110, 2, 1, 100, 1, 16<<20, 8192),
		header(0xD110, 2, 0, 0, 1, 16<<20, 8192),
		make([]byte, 10),
	}
	for i, b := range bad {
		if _, err := ParseHeader(b); !errors.Is(err, ErrNotWAL) {
			t.Errorf("bad header %d: got %v, want ErrNotWAL", i, err)
		}
	}
}

func TestParseHistory(t *testing.T) {
	h, err := ParseHistory([]byte("1\t0/3000060\tno recovery target specified\n\n# comment\n2\t0/5000000\tbefore 2026-01-01\n"))
	if err != nil || len(h) != 2 || h[1].Timeline != 2 || h[1].SwitchLSN != 0x5000000 || h[0].Reason != "no recovery target specified" {
		t.Fatalf("ParseHistory: %+v %v", h, err)
	}
	for _, bad := range []string{"x\t0/1", "1", "2\t0/5\n1\t0/6", "1\t0/6\n2\t0/5", "0\t0/1"} {
		if _, err := ParseHistory([]byte(bad)); err == nil {
			t.Errorf("ParseHistory(%q) accepted", bad)
		}
	}
}

func TestCheckHeader(t *testing.T) {
	const seg = 16 << 20
	h := func(tli uint32, addr uint64, segSize uint32) PageHeader {
		return PageHeader{Magic: 0xD110, Timeline: tli, PageAddr: LSN(addr), SystemID: 1, SegSize: segSize, BlockSize: 8192}
	}
	cases := []struct {
		what string
		name string
		hdr  PageHeader
		size int64
		ok   bool
	}{
		{"fits", "000000020000000000000003", h(2, 3*seg, seg), seg, true},
		{"parent timeline's pages", "000000020000000000000003", h(1, 3*seg, seg), seg, true},
		{"partial", "000000010000000000000003.partial", h(1, 3*seg, seg), seg, true},
		{"later timeline", "000000010000000000000003", h(2, 3*seg, seg), seg, false},
		{"other segment", "000000010000000000000003", h(1, 4*seg, seg), seg, false},
		{"other segment size", "000000010000000000000003", h(1, 3*seg, 2*seg), 2 * seg, false},
		{"out of range for the size", "0000000100000000000000FF", h(1, 0xFF<<30, 1<<30), 1 << 30, false},
		{"short", "000000010000000000000003", h(1, 3*seg, seg), seg - 1, false},
		{"long partial", "000000010000000000000003.partial", h(1, 3*seg, seg), seg + 1, false},
		{"history", "00000002.history", h(1, 3*seg, seg), seg, false},
	}
	for _, c := range cases {
		if err := CheckHeader(c.name, c.hdr, c.size); (err == nil) != c.ok {
			t.Errorf("%s: CheckHeader(%s) = %v, want ok=%v", c.what, c.name, err, c.ok)
		}
	}
}

func TestParseControl(t *testing.T) {
	good := make([]byte, 8192)
	binary.LittleEndian.PutUint64(good, 7714409585967011990)
	binary.LittleEndian.PutUint32(good[8:], 1300)
	binary.LittleEndian.PutUint32(good[288:], crc32.Checksum(good[:288], crc32.MakeTable(crc32.Castagnoli)))
	c, err := ParseControl(good)
	if err != nil || c.SystemID != 7714409585967011990 || c.Version != 1300 {
		t.Fatalf("ParseControl: %+v, %v", c, err)
	}
	// A version whose layout walship does not know is read for its system identifier only.
	other := bytes.Clone(good)
	binary.LittleEndian.PutUint32(other[8:], 1700)
	if c, err := ParseControl(other); err != nil || c.SystemID != 7714409585967011990 {
		t.Errorf("version 1700: %+v, %v", c, err)
	}
	flip := bytes.Clone(good)
	flip[200] ^= 1
	zero := make([]byte, 8192)
	binary.LittleEndian.PutUint32(zero[8:], 1700)
	swapped := bytes.Clone(good)
	binary.BigEndian.PutUint32(swapped[8:], 1300)
	for what, b := range map[string][]byte{"flipped bit": flip, "short": good[:4096], "system 0": zero, "big-endian": swapped, "empty": nil} {
		if _, err := ParseControl(b); !errors.Is(err, ErrBadControl) {
			t.Errorf("%s: got %v, want ErrBadControl", what, err)
		}
	}
}
