// Package walfile understands PostgreSQL's WAL files without I/O: file names, timelines, segment
// numbers and LSNs, the long page header that opens every segment, and timeline history files.
package walfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Kind classifies a file name PostgreSQL archives or asks for.
type Kind int

// The kinds of archived files.
const (
	Invalid Kind = iota
	Segment      // 000000010000000000000003
	History      // 00000002.history
	Partial      // 000000010000000000000003.partial
	Backup       // 000000010000000000000003.00000028.backup
)

func (k Kind) String() string {
	return [...]string{"invalid", "segment", "history", "partial", "backup"}[k]
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return len(s) > 0
}

// Classify returns the kind of a bare file name (no directory part); Invalid for anything else,
// including names that try to escape a directory.
func Classify(name string) Kind {
	switch {
	case len(name) == 24 && isHex(name):
		return Segment
	case len(name) == 16 && strings.HasSuffix(name, ".history") && isHex(name[:8]):
		return History
	case len(name) == 32 && strings.HasSuffix(name, ".partial") && isHex(name[:24]):
		return Partial
	case len(name) == 40 && strings.HasSuffix(name, ".backup") && name[24] == '.' && isHex(name[:24]) && isHex(name[25:33]):
		return Backup
	}
	return Invalid
}

// Timeline returns the timeline a file name belongs to (its first 8 hex digits).
func Timeline(name string) (uint32, error) {
	if Classify(name) == Invalid {
		return 0, fmt.Errorf("walfile: %q is not a WAL file name", name)
	}
	v, err := strconv.ParseUint(name[:8], 16, 32)
	return uint32(v), err
}

// SegmentsPerXLogID is how many segments of size segSize fit in one 4 GiB "xlogid".
func SegmentsPerXLogID(segSize uint32) uint64 { return 0x100000000 / uint64(segSize) }

// ValidSegSize reports whether segSize is one PostgreSQL allows (a power of two, 1 MiB–1 GiB).
func ValidSegSize(segSize uint32) bool {
	return segSize >= 1<<20 && segSize <= 1<<30 && segSize&(segSize-1) == 0
}

// ParseSegment splits a segment name (or the segment part of a .partial or .backup name) into
// timeline and segment number for the given segment size.
func ParseSegment(name string, segSize uint32) (tli uint32, segno uint64, err error) {
	if k := Classify(name); k != Segment && k != Partial && k != Backup {
		return 0, 0, fmt.Errorf("walfile: %q is not a segment name", name)
	}
	if !ValidSegSize(segSize) {
		return 0, 0, fmt.Errorf("walfile: invalid segment size %d", segSize)
	}
	t, _ := strconv.ParseUint(name[0:8], 16, 32)
	log, _ := strconv.ParseUint(name[8:16], 16, 32)
	seg, _ := strconv.ParseUint(name[16:24], 16, 32)
	per := SegmentsPerXLogID(segSize)
	if seg >= per {
		return 0, 0, fmt.Errorf("walfile: %q: segment %X out of range for %d-byte segments", name, seg, segSize)
	}
	return uint32(t), log*per + seg, nil
}

// SegmentName builds the file name of segment segno on timeline tli.
func SegmentName(tli uint32, segno uint64, segSize uint32) string {
	per := SegmentsPerXLogID(segSize)
	return fmt.Sprintf("%08X%08X%08X", tli, segno/per, segno%per)
}

// HistoryName is the name of timeline tli's history file.
func HistoryName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// LSN is a WAL position.
type LSN uint64

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN reads the X/X form.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("walfile: bad LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("walfile: bad LSN %q", s)
	}
	return LSN(h<<32 | l), nil
}

// Segment returns the number of the segment holding l.
func (l LSN) Segment(segSize uint32) uint64 { return uint64(l) / uint64(segSize) }

// Page header layout (access/xlog_internal.h). The magic changes with every major version that
// changes the WAL format; PostgreSQL 15 writes 0xD110.
const (
	longHeaderSize = 40
	xlpLongHeader  = 0x0002
)

// KnownMagic maps WAL page magic numbers to the PostgreSQL major version that writes them.
var KnownMagic = map[uint16]int{0xD101: 12, 0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17}

// PageHeader is the long header at the start of every WAL segment.
type PageHeader struct {
	Magic     uint16
	Timeline  uint32
	PageAddr  LSN
	SystemID  uint64
	SegSize   uint32
	BlockSize uint32
}

// ErrNotWAL is returned for bytes that do not start with a long WAL page header.
var ErrNotWAL = errors.New("not a WAL segment")

// ParseHeader reads the long page header from the first bytes of a segment. It checks the magic,
// the long-header flag, and that sizes are ones PostgreSQL can produce.
func ParseHeader(b []byte) (PageHeader, error) {
	if len(b) < longHeaderSize {
		return PageHeader{}, fmt.Errorf("%w: %d bytes, need %d", ErrNotWAL, len(b), longHeaderSize)
	}
	le := binary.LittleEndian
	h := PageHeader{
		Magic:     le.Uint16(b[0:]),
		Timeline:  le.Uint32(b[4:]),
		PageAddr:  LSN(le.Uint64(b[8:])),
		SystemID:  le.Uint64(b[24:]),
		SegSize:   le.Uint32(b[32:]),
		BlockSize: le.Uint32(b[36:]),
	}
	info := le.Uint16(b[2:])
	switch {
	case KnownMagic[h.Magic] == 0:
		return PageHeader{}, fmt.Errorf("%w: unknown page magic 0x%04X", ErrNotWAL, h.Magic)
	case info&xlpLongHeader == 0:
		return PageHeader{}, fmt.Errorf("%w: first page lacks the long header", ErrNotWAL)
	case !ValidSegSize(h.SegSize):
		return PageHeader{}, fmt.Errorf("%w: segment size %d", ErrNotWAL, h.SegSize)
	case h.BlockSize < 1024 || h.BlockSize > 65536 || h.BlockSize&(h.BlockSize-1) != 0:
		return PageHeader{}, fmt.Errorf("%w: block size %d", ErrNotWAL, h.BlockSize)
	case uint64(h.PageAddr)%uint64(h.SegSize) != 0:
		return PageHeader{}, fmt.Errorf("%w: page address %s is not a segment start", ErrNotWAL, h.PageAddr)
	case h.Timeline == 0:
		return PageHeader{}, fmt.Errorf("%w: timeline 0", ErrNotWAL)
	}
	return h, nil
}

// CheckHeader reports whether hdr, the long page header of a file of size bytes, fits the segment
// or .partial name: the header's page address is the start of the segment the name gives for the
// header's segment size, its timeline is not after the name's (the first segment of a new timeline
// legitimately begins with its parent's pages, so an earlier one is normal), and a segment is
// exactly one segment long (a .partial at most). wal-push, wal-fetch and verify all apply it.
func CheckHeader(name string, hdr PageHeader, size int64) error {
	k := Classify(name)
	if k != Segment && k != Partial {
		return fmt.Errorf("walfile: %q is not a segment or .partial name", name)
	}
	tli, segno, err := ParseSegment(name, hdr.SegSize)
	if err != nil {
		return err
	}
	if want := LSN(segno * uint64(hdr.SegSize)); hdr.PageAddr != want {
		return fmt.Errorf("%s starts at %s, but its name says %s", name, hdr.PageAddr, want)
	}
	if hdr.Timeline > tli {
		return fmt.Errorf("%s: its header says timeline %d, after its name's %d", name, hdr.Timeline, tli)
	}
	if (k == Segment && size != int64(hdr.SegSize)) || size > int64(hdr.SegSize) {
		return fmt.Errorf("%s is %d bytes, its header says segments are %d", name, size, hdr.SegSize)
	}
	return nil
}

// Control is what walship reads of pg_control, the data directory's control file
// (catalog/pg_control.h, ControlFileData): the system identifier that also opens every WAL page
// header, for files that carry no header (.history, .backup).
type Control struct {
	SystemID uint64 // system_identifier, the first field in every version
	Version  uint32 // pg_control_version
}

// controlFileSize is PG_CONTROL_FILE_SIZE: pg_control is written zero-padded to this size.
const controlFileSize = 8192

// controlCRCOffset maps pg_control_version to offsetof(ControlFileData, crc); the crc is the
// CRC-32C of every byte before it. PostgreSQL 13 to 16 write version 1300 with one layout, whose
// fields end at byte 288 (mock_authentication_nonce[32] at 256; checked against PostgreSQL 15's
// files). Other versions are read for their system identifier only.
var controlCRCOffset = map[uint32]int{1300: 288}

// ErrBadControl is returned for bytes that are not an intact pg_control file.
var ErrBadControl = errors.New("not an intact pg_control file")

// ParseControl reads pg_control (little-endian, as PostgreSQL writes it on x86 and ARM), checking
// its size, version and, for the versions in controlCRCOffset, its CRC. A CRC mismatch can be a
// torn read while PostgreSQL rewrites the file in place: read again before giving up.
func ParseControl(b []byte) (Control, error) {
	if len(b) != controlFileSize {
		return Control{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadControl, len(b), controlFileSize)
	}
	le := binary.LittleEndian
	c := Control{SystemID: le.Uint64(b), Version: le.Uint32(b[8:])}
	if c.Version < 900 || c.Version > 9999 {
		return Control{}, fmt.Errorf("%w: version %d", ErrBadControl, c.Version)
	}
	if off, ok := controlCRCOffset[c.Version]; ok {
		if got, want := crc32.Checksum(b[:off], castagnoli), le.Uint32(b[off:]); got != want {
			return Control{}, fmt.Errorf("%w: CRC %08x, stored %08x", ErrBadControl, got, want)
		}
	}
	if c.SystemID == 0 {
		return Control{}, fmt.Errorf("%w: system identifier 0", ErrBadControl)
	}
	return c, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HistoryEntry is one line of a timeline history file: timeline TLI ended at SwitchLSN.
type HistoryEntry struct {
	Timeline  uint32
	SwitchLSN LSN
	Reason    string
}

// ParseHistory reads a timeline history file. Entries must have increasing timelines and
// non-decreasing switch points; comments and blank lines are skipped, as PostgreSQL does.
func ParseHistory(b []byte) ([]HistoryEntry, error) {
	var out []HistoryEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("walfile: history line %d: want timeline and LSN", n)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || tli == 0 {
			return nil, fmt.Errorf("walfile: history line %d: bad timeline %q", n, f[0])
		}
		lsn, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("walfile: history line %d: %w", n, err)
		}
		e := HistoryEntry{Timeline: uint32(tli), SwitchLSN: lsn}
		if len(f) > 2 {
			e.Reason = strings.Join(f[2:], " ")
		}
		if k := len(out); k > 0 && (e.Timeline <= out[k-1].Timeline || e.SwitchLSN < out[k-1].SwitchLSN) {
			return nil, fmt.Errorf("walfile: history line %d: timelines must increase", n)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
