// Package waltest makes synthetic WAL files with valid page headers for tests that need no
// running PostgreSQL.
package waltest

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/walship/walship/walfile"
)

// Segment returns the bytes of segment segno of timeline tli for system sysid.
func Segment(tli uint32, segno uint64, segSize uint32, sysid uint64, seed uint64) []byte {
	b := make([]byte, segSize)
	r := rand.New(rand.NewPCG(seed, segno))
	for page := 0; page < int(segSize)/8192; page++ {
		p := b[page*8192:]
		binary.LittleEndian.PutUint16(p, 0xD110)
		binary.LittleEndian.PutUint32(p[4:], tli)
		binary.LittleEndian.PutUint64(p[8:], segno*uint64(segSize)+uint64(page*8192))
		if page == 0 {
			binary.LittleEndian.PutUint16(p[2:], 0x0002)
			binary.LittleEndian.PutUint64(p[24:], sysid)
			binary.LittleEndian.PutUint32(p[32:], segSize)
			binary.LittleEndian.PutUint32(p[36:], 8192)
		}
		for i := 64; i < 8192; i += 64 {
			binary.LittleEndian.PutUint64(p[i:], r.Uint64()%1000)
		}
	}
	return b
}

// SystemID is the database system WALDir's pg_control names, and the one most tests' segments use.
const SystemID = 42

// Control returns a PostgreSQL 15 pg_control file (version 1300, CRC-32C at byte 288) for sysid.
func Control(sysid uint64) []byte {
	b := make([]byte, 8192)
	binary.LittleEndian.PutUint64(b, sysid)
	binary.LittleEndian.PutUint32(b[8:], 1300)
	binary.LittleEndian.PutUint32(b[12:], 202209061)
	binary.LittleEndian.PutUint32(b[228:], 16<<20)
	binary.LittleEndian.PutUint32(b[288:], crc32.Checksum(b[:288], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// WriteControl writes dataDir/global/pg_control for sysid.
func WriteControl(t testing.TB, dataDir string, sysid uint64) {
	if err := os.MkdirAll(filepath.Join(dataDir, "global"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "global", "pg_control"), Control(sysid), 0o600); err != nil {
		t.Fatal(err)
	}
}

// WALDir makes DATADIR/pg_wal/archive_status and DATADIR/global/pg_control (for SystemID),
// changes into DATADIR for the rest of the test and returns "pg_wal": PostgreSQL runs archive and
// restore commands in the data directory with %p relative to it, and walship refuses an absolute %p.
func WALDir(t testing.TB) string { return WALDirIn(t, t.TempDir()) }

// WALDirIn is WALDir with DATADIR in base.
func WALDirIn(t testing.TB, base string) string {
	data := filepath.Join(base, "data")
	if err := os.MkdirAll(filepath.Join(data, "pg_wal", "archive_status"), 0o755); err != nil {
		t.Fatal(err)
	}
	WriteControl(t, data, SystemID)
	t.Chdir(data)
	return "pg_wal"
}

// WriteSegment writes a segment into walDir, marks it ready, and returns its path.
func WriteSegment(t testing.TB, walDir string, tli uint32, segno uint64, segSize uint32, sysid uint64) string {
	name := walfile.SegmentName(tli, segno, segSize)
	p := filepath.Join(walDir, name)
	if err := os.WriteFile(p, Segment(tli, segno, segSize, sysid, sysid), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(walDir, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
