package walfile

import (
	"bytes"
	"testing"
)

func FuzzNames(f *testing.F) {
	for _, s := range []string{"000000010000000000000003", "00000002.history", "000000010000000000000003.partial",
		"000000010000000000000003.00000028.backup", "../x", "", "0000000100000000000000FF", "16/B374D848"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		k := Classify(name)
		if k != Invalid && (len(name) < 16 || bytes.ContainsAny([]byte(name), "/\\\x00")) {
			t.Fatalf("Classify(%q) = %v for a name that can escape a directory", name, k)
		}
		for _, size := range []uint32{1 << 20, 16 << 20, 1 << 30} {
			if tli, segno, err := ParseSegment(name, size); err == nil {
				if got := SegmentName(tli, segno, size); got != name[:24] {
					t.Fatalf("ParseSegment(%q) = %d/%d, which names %q", name, tli, segno, got)
				}
			}
		}
		if l, err := ParseLSN(name); err == nil {
			if back, err := ParseLSN(l.String()); err != nil || back != l {
				t.Fatalf("LSN %q does not round-trip: %v %v", name, back, err)
			}
		}
	})
}

func FuzzParseHeader(f *testing.F) {
	f.Add(header(0xD110, 2, 1, 3<<24, 7300000000000000001, 16<<20, 8192)[:40])
	f.Add(make([]byte, 40))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err == nil && (!ValidSegSize(h.SegSize) || h.Timeline == 0 || uint64(h.PageAddr)%uint64(h.SegSize) != 0) {
			t.Fatalf("ParseHeader accepted an impossible header: %+v", h)
		}
	})
}

func FuzzParseHistory(f *testing.F) {
	f.Add([]byte("1\t0/3000060\tno recovery target specified\n2\t0/5000000\tbefore 2026-01-01\n"))
	f.Add([]byte("# comment\n\n"))
	f.Add([]byte("1 0/0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseHistory(b)
		if err != nil {
			return
		}
		for i := 1; i < len(entries); i++ {
			if entries[i].Timeline <= entries[i-1].Timeline || entries[i].SwitchLSN < entries[i-1].SwitchLSN {
				t.Fatalf("ParseHistory accepted out-of-order entries: %+v", entries)
			}
		}
	})
}
