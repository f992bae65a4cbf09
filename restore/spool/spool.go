// Package spool is the prefetch spool's file format: a decoded, verified WAL file beside its
// checksum file, and serving one to PostgreSQL by hard link. It imports only the standard
// library, walfile and flock, so that wal-fetch can serve a spooled segment before the storage
// SDKs have initialised (cmd/walship/internal/fastfetch). That is also why it joins file paths
// with package path, initialised before package os, and not path/filepath, initialised after
// every other package whose import path sorts before its own: walship runs on Unix, where the
// two agree.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/walship/walship/internal/flock"
	"github.com/walship/walship/walfile"
)

// A spooled file NAME is the decoded content, verified in full by the prefetcher against the
// frame's length and digest (and the object's metadata); NAME.sum, written once NAME is in
// place, holds Magic, the CRC-32C of the content, its length, the file's stamp (the boot it
// was written in, its inode and its change time) and a CRC-32C of all that. Serving it then
// costs a check and a hard link while PostgreSQL's replay waits, instead of a GET, a
// decompression and a copy of 16 MiB. Anything that does not check out is fetched from storage
// again, so the spool needs no fsync.
//
// The check is the CRC of the whole content unless the stamp proves the content is still the
// bytes the prefetcher wrote: the same boot (no crash since, so nothing was torn), the same
// inode and change time (nothing wrote, truncated, replaced, linked or re-dated it since), and
// every page of it still in the page cache (so none was dropped and read back from disk: nothing
// else reads a spool file before it is served). Then the CRC, 2.5-4 ms of memory bandwidth for 16
// MiB while replay waits, would only read back the pages the prefetcher verified. A crash, a
// change, a page evicted under memory pressure or a second serve (the link changed the change
// time) each make the check the full CRC, which catches a torn file or a bad read from disk.
//
// The served segment stays in the spool (a second name of the file handed to PostgreSQL) until a
// later one is served: at the end of an archive recovery PostgreSQL asks again for the last
// segment it replayed, after the next one was missing, and that request is then answered
// locally instead of with a download. Nothing walship does writes to a spooled file once it is
// in place; if PostgreSQL writes to its copy (a standby's walreceiver reusing the file), the CRC
// no longer matches and the segment is fetched from storage.
const (
	Magic     = "walshipT"
	SumSuffix = ".sum"
	// The checksum file's fields after Magic, and its size.
	sumCRC, sumLen, sumBoot, sumIno, sumCtime, sumSelf = 8, 12, 20, 36, 44, 52
	sumSize                                            = sumSelf + 4
)

// Stamp identifies a spooled file as the prefetcher left it (see Magic).
type Stamp struct {
	Boot  [16]byte // the kernel's boot id; zero where there is none
	Ino   uint64
	Ctime int64 // nanoseconds
}

// trusted reports whether s, read from a checksum file, is the stamp of the file now.
func (s Stamp) trusted(now Stamp) bool {
	return s.Boot != [16]byte{} && s == now
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewCRC is the CRC-32C a checksum file holds, to compute while the spooled file is written.
func NewCRC() hash.Hash32 { return crc32.New(castagnoli) }

// ErrDamaged says a spooled file is not a complete, intact one.
var ErrDamaged = errors.New("damaged spool file")

// crcRead returns the CRC-32C of f's first size bytes, read 1 MiB at a time: io.Copy's 32 KiB
// would take 512 system calls for a 16 MiB segment while PostgreSQL's replay waits. (Over a
// populated mapping instead, as before, the check took 2.3 ms against 1.9 ms on a 2-core VM, and
// needed runtime/debug to survive a file truncated under it: see BenchmarkSpoolCRC.)
func crcRead(f *os.File, size int64) (uint32, error) {
	crc := crc32.New(castagnoli)
	_, err := io.CopyBuffer(crc, io.NewSectionReader(f, 0, size), make([]byte, 1<<20))
	return crc.Sum32(), err
}

// EncodeSum is the content of a spooled file's checksum file.
func EncodeSum(crc uint32, size int64, st Stamp) []byte {
	b := make([]byte, sumSize)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[sumCRC:], crc)
	binary.LittleEndian.PutUint64(b[sumLen:], uint64(size))
	copy(b[sumBoot:sumIno], st.Boot[:])
	binary.LittleEndian.PutUint64(b[sumIno:], st.Ino)
	binary.LittleEndian.PutUint64(b[sumCtime:], uint64(st.Ctime))
	binary.LittleEndian.PutUint32(b[sumSelf:], crc32.Checksum(b[:sumSelf], castagnoli))
	return b
}

// DecodeSum reads a checksum file's content: the content's CRC-32C and length, and the stamp.
func DecodeSum(b []byte) (crc uint32, size int64, st Stamp, err error) {
	if len(b) != sumSize || string(b[:len(Magic)]) != Magic ||
		binary.LittleEndian.Uint32(b[sumSelf:]) != crc32.Checksum(b[:sumSelf], castagnoli) {
		return 0, 0, st, fmt.Errorf("%w: its checksum file is damaged", ErrDamaged)
	}
	copy(st.Boot[:], b[sumBoot:sumIno])
	st.Ino = binary.LittleEndian.Uint64(b[sumIno:])
	st.Ctime = int64(binary.LittleEndian.Uint64(b[sumCtime:]))
	return binary.LittleEndian.Uint32(b[sumCRC:]), int64(binary.LittleEndian.Uint64(b[sumLen:])), st, nil
}

// Remove drops the spooled file p and its checksum file, that first (see Serve).
func Remove(p string) {
	os.Remove(p + SumSuffix)
	os.Remove(p)
}

// Serve checks the spooled file p against its checksum file and gives dest the same
// content, as a hard link (a copy where pg_wal is on another filesystem), returning the WAL page
// header of a segment and how the content was checked: "stamp" or "crc32c" (see Magic).
//
// The checksum file is read first: written last, it says the file is complete. Without it the
// file is not spooled (fs.ErrNotExist), whether a prefetcher is about to write it or died first.
func Serve(p, name, dest string) (*walfile.PageHeader, string, error) {
	b, err := os.ReadFile(p + SumSuffix)
	if err != nil {
		return nil, "", err
	}
	want, wantSize, stamp, err := DecodeSum(b)
	if err != nil {
		return nil, "", err
	}
	sf, err := os.Open(p)
	if err != nil {
		return nil, "", err
	}
	defer sf.Close()
	fi, err := sf.Stat()
	if err != nil {
		return nil, "", err
	}
	size := fi.Size()
	if size != wantSize {
		return nil, "", fmt.Errorf("%w: %d bytes, not the length its checksum file gives", ErrDamaged, size)
	}
	check := "stamp"
	if !stamp.trusted(StampOf(fi)) || !resident(sf, size) {
		check = "crc32c"
		got, err := crcRead(sf, size)
		if err != nil {
			return nil, "", err
		}
		if got != want {
			return nil, "", fmt.Errorf("%w: CRC-32C %08x, written as %08x", ErrDamaged, got, want)
		}
	}
	var hdr *walfile.PageHeader
	if k := walfile.Classify(name); k == walfile.Segment || k == walfile.Partial {
		h, err := ReadHeader(sf, name, size)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrDamaged, err)
		}
		hdr = &h
	}
	// A link cannot replace dest, so it is made beside dest and renamed over it.
	tmp := path.Join(path.Dir(dest), fmt.Sprintf(".%s.walship-link-%d", path.Base(dest), os.Getpid()))
	os.Remove(tmp)
	if err := os.Link(p, tmp); err == nil {
		if err := os.Rename(tmp, dest); err != nil {
			os.Remove(tmp)
			return nil, "", err
		}
		return hdr, check, nil
	}
	// pg_wal on another filesystem than the spool (or one without hard links): copy beside
	// dest, then rename.
	tf, err := os.CreateTemp(path.Dir(dest), "."+path.Base(dest)+".walship-*")
	if err != nil {
		return nil, "", err
	}
	_, err = io.Copy(tf, io.NewSectionReader(sf, 0, size))
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tf.Name(), dest)
	}
	if err != nil {
		os.Remove(tf.Name())
		return nil, "", err
	}
	return hdr, check, nil
}

// inFlightWait bounds how long a call waits for a prefetcher's download of the file it asks for.
const inFlightWait = 30 * time.Second

// sumGrace is how long after a spool file was written its checksum file may still be missing
// because the prefetcher is about to write it; an older file without one was left by a
// prefetcher that died in between, and nothing waits for it.
const sumGrace = time.Second

// AwaitInFlight waits while a running prefetcher is writing name into the spool (its temp file
// is there, or the file has just been put in place and its checksum file not yet), so that
// replay catching up with the prefetcher does not download the same segment twice, once in the
// foreground and once in the background. It returns once the checksum file is in place, the
// download has ended either way, or inFlightWait has passed; the caller then serves the spooled
// copy or fetches from storage as usual.
func AwaitInFlight(dir, name string) {
	final := path.Join(dir, name)
	deadline := time.Now().Add(inFlightWait)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(final + SumSuffix); err == nil {
			return
		}
		if !inFlight(dir, name) {
			fi, err := os.Stat(final)
			if err != nil || time.Since(fi.ModTime()) > sumGrace {
				return
			}
		}
		if !Running(dir) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// inFlight reports whether dir holds a temp file of name (".NAME-*"), which a prefetcher writes
// it into before renaming it.
func inFlight(dir, name string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+name+"-") {
			return true
		}
	}
	return false
}

// Running reports whether a prefetcher holds the lock of the spool directory dir
// (restore.Prefetch takes it).
func Running(dir string) bool { return flock.Held(path.Join(dir, ".lock")) }

// PositionFile, in the prefetch spool, holds the name of the segment wal-fetch was last asked for.
const PositionFile = ".position"

// ReadHeader reads the WAL page header at the start of f, which holds name (size bytes), and
// checks that it fits name (walfile.CheckHeader).
func ReadHeader(f *os.File, name string, size int64) (walfile.PageHeader, error) {
	buf := make([]byte, 40)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return walfile.PageHeader{}, fmt.Errorf("%s: reading the WAL page header: %v", name, err)
	}
	h, err := walfile.ParseHeader(buf)
	if err != nil {
		return h, fmt.Errorf("%s: %v", name, err)
	}
	return h, walfile.CheckHeader(name, h, size)
}
