// Package object is the frame every stored object uses: a header naming the codec, the compressed
// payload, and a trailer with the raw length and XXH3-128 digest of the raw bytes. It encodes and decodes
// as streams in constant memory, and the decoder refuses anything that does not verify.
//
// Layout (all integers big-endian):
//
//	header  (8 bytes):  "WSHP" | version (1) | codec (1) | flags (1) |
//	                    check (1: low byte of the CRC-32C of the first 7 bytes)
//	payload:            the raw bytes compressed with the codec (a zstd, lz4 or gzip stream, or raw);
//	                    with flag 0x01 that stream is encrypted with age (filippo.io/age)
//	trailer (36 bytes): raw length (8) | XXH3-128 of the raw bytes (16) |
//	                    CRC-32C of the payload (4) |
//	                    CRC-32C of the header and the three fields above (4) | "WEND"
//
// The digest proves the raw bytes; the payload CRC makes every damaged byte of the stored object
// detectable, even one the decompressor would ignore (a padding bit of an entropy-coded block).
// XXH3-128 (github.com/zeebo/xxh3) guards against damage, the threat of an archive, at 25 GB/s
// on one core where SHA-256 gives 1.8 GB/s: 10 ms of CPU per 16 MiB segment saved on every push
// and every fetch. Tampering is for encryption to answer: age authenticates every chunk.
// Version 1 frames (SHA-256) were written by pre-release builds only and are refused.
//
// The codec lives in the header, not in the key, so a fetch is one GET whatever the codec was.
// The raw digest is also returned as object metadata (see Summary.Metadata) so that a second push
// of the same name can be compared without downloading.
package object

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"strconv"

	"filippo.io/age"
	"github.com/zeebo/xxh3"
)

// ErrCorrupt is returned for any object that fails to decode or verify: bad magic, unknown codec,
// truncated, damaged payload, wrong length or checksum, ciphertext that does not authenticate.
var ErrCorrupt = errors.New("corrupt object")

// ErrKey is returned when an encrypted object cannot be opened: no identity given, or none of
// the identities given matches. It is reported before any byte is decoded.
var ErrKey = errors.New("cannot decrypt object")

// flagAge marks a payload encrypted with age.
const flagAge = 0x01

const (
	version     = 2
	headerSize  = 8
	digestSize  = 16
	trailerSize = 8 + digestSize + 4 + 4 + 4
	// offsets in the trailer
	tDigest  = 8
	tPayCRC  = tDigest + digestSize
	tCRC     = tPayCRC + 4
	tEnd     = tCRC + 4
	magic    = "WSHP"
	endMagic = "WEND"
)

// Metadata keys written by Summary.Metadata.
const (
	MetaDigest  = "xxh3"
	MetaRawSize = "rawsize"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Summary describes the raw bytes a frame holds.
type Summary struct {
	RawSize int64
	Digest  Digest
}

// Digest is the XXH3-128 of raw bytes, big-endian.
type Digest [digestSize]byte

// NewHash returns the hash a Digest is made with; Sum(nil) is the Digest's bytes.
func NewHash() hash.Hash { return xxh3.New128() }

// DigestOf returns the Digest of a hash made by NewHash.
func DigestOf(h hash.Hash) Digest { return Digest(h.Sum(nil)) }

// Hex returns the raw digest in hexadecimal.
func (s Summary) Hex() string { return hex.EncodeToString(s.Digest[:]) }

// Metadata returns the per-object metadata to store alongside the frame.
func (s Summary) Metadata() map[string]string {
	return map[string]string{MetaDigest: s.Hex(), MetaRawSize: strconv.FormatInt(s.RawSize, 10)}
}

// SummaryFromMetadata reads back what Metadata wrote; ok is false when it is absent or malformed.
func SummaryFromMetadata(meta map[string]string) (s Summary, ok bool) {
	b, err := hex.DecodeString(meta[MetaDigest])
	if err != nil || len(b) != digestSize {
		return Summary{}, false
	}
	n, err := strconv.ParseInt(meta[MetaRawSize], 10, 64)
	if err != nil || n < 0 {
		return Summary{}, false
	}
	copy(s.Digest[:], b)
	s.RawSize = n
	return s, true
}

// Writer compresses raw bytes into a frame written to an underlying writer.
type Writer struct {
	dst    io.Writer
	crcw   *crcWriter
	enc    io.WriteCloser // the age stream, when encrypting
	header [headerSize]byte
	comp   io.WriteCloser
	digest hash.Hash
	n      int64
	closed bool
	err    error
}

// NewWriter writes the header and returns a Writer; Close writes the trailer.
func NewWriter(dst io.Writer, o Options) (*Writer, error) {
	c, ok := codecs[o.Codec]
	if !ok {
		return nil, fmt.Errorf("object: unknown codec %d", o.Codec)
	}
	w := &Writer{dst: dst, digest: NewHash()}
	copy(w.header[:], magic)
	w.header[4] = version
	w.header[5] = byte(o.Codec)
	if len(o.Recipients) > 0 {
		w.header[6] = flagAge
	}
	w.header[7] = headerCheck(w.header)
	if _, err := dst.Write(w.header[:]); err != nil {
		return nil, err
	}
	w.crcw = &crcWriter{w: dst}
	var payload io.Writer = w.crcw
	if len(o.Recipients) > 0 {
		enc, err := age.Encrypt(w.crcw, o.Recipients...)
		if err != nil {
			return nil, fmt.Errorf("object: encrypt: %w", err)
		}
		w.enc, payload = enc, enc
	}
	comp, err := c.compress(payload, o.level())
	if err != nil {
		return nil, err
	}
	w.comp = comp
	return w, nil
}

// Write compresses p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("object: write after close")
	}
	n, err := w.comp.Write(p)
	w.digest.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// ReadFrom compresses everything r yields; io.Copy uses it. A reader with its own buffers (an
// io.WriterTo, such as uncached.Reader's read-ahead) writes them in directly, as io.Copy would
// let it; any other is read through a kept copy buffer.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if wt, ok := r.(io.WriterTo); ok {
		if _, isFile := r.(*os.File); !isFile { // os.File's WriteTo is a generic copy back into ReadFrom
			return wt.WriteTo(w)
		}
	}
	buf, _ := copyBufs.get(newCopyBuf)
	defer copyBufs.put(buf)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close flushes the payload and writes the trailer. It does not close the destination.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		w.comp.Close() // releases the compressor (libzstd's context is C memory)
		return w.err
	}
	if err := w.comp.Close(); err != nil {
		w.err = err
		return err
	}
	if w.enc != nil {
		if err := w.enc.Close(); err != nil {
			w.err = err
			return err
		}
	}
	_, w.err = w.dst.Write(trailer(w.header, w.n, DigestOf(w.digest), w.crcw.crc))
	return w.err
}

// crcWriter computes the CRC-32C of the payload as it passes to the destination.
type crcWriter struct {
	w   io.Writer
	crc uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

// Summary returns the length and digest of the raw bytes written so far; complete after Close.
func (w *Writer) Summary() Summary { return Summary{RawSize: w.n, Digest: DigestOf(w.digest)} }

// headerCheck lets a reader trust the header (codec, flags) before it reaches the trailer.
func headerCheck(h [headerSize]byte) byte { return byte(crc32.Checksum(h[:7], castagnoli)) }

func trailer(header [headerSize]byte, n int64, sum Digest, payloadCRC uint32) []byte {
	t := make([]byte, trailerSize)
	binary.BigEndian.PutUint64(t, uint64(n))
	copy(t[tDigest:tPayCRC], sum[:])
	binary.BigEndian.PutUint32(t[tPayCRC:tCRC], payloadCRC)
	crc := crc32.Update(crc32.Checksum(header[:], castagnoli), castagnoli, t[:tCRC])
	binary.BigEndian.PutUint32(t[tCRC:tEnd], crc)
	copy(t[tEnd:], endMagic)
	return t
}

// Encode writes src to dst as one frame.
func Encode(dst io.Writer, src io.Reader, o Options) (Summary, error) {
	w, err := NewWriter(dst, o)
	if err != nil {
		return Summary{}, err
	}
	if _, err := w.ReadFrom(src); err != nil {
		return Summary{}, err
	}
	if err := w.Close(); err != nil {
		return Summary{}, err
	}
	return w.Summary(), nil
}

// Reader decompresses a frame. Its last Read returns io.EOF only after the raw length and digest
// matched the trailer; any mismatch or damage returns an error wrapping ErrCorrupt instead. Bytes
// returned before that are unverified: write them somewhere temporary and commit only on io.EOF.
type Reader struct {
	tail    *tailReader
	header  [headerSize]byte
	decomp  io.Reader
	release func()
	digest  hash.Hash
	n       int64
	err     error
	sum     Summary
}

// NewReader reads and checks the header of an unencrypted frame.
func NewReader(src io.Reader) (*Reader, error) { return NewReaderWith(src, nil) }

// NewReaderWith reads and checks the header; an encrypted frame is opened with one of ids (a
// key file may hold old and new keys across a rotation). A missing or wrong key fails here,
// before any byte is returned.
func NewReaderWith(src io.Reader, ids []age.Identity) (*Reader, error) {
	r := &Reader{tail: newTailReader(src), digest: NewHash()}
	if _, err := io.ReadFull(r.tail, r.header[:]); err != nil {
		return nil, corrupt("header: %v", err)
	}
	if string(r.header[:4]) != magic {
		return nil, corrupt("not a walship object (magic %q)", r.header[:4])
	}
	if r.header[7] != headerCheck(r.header) {
		return nil, corrupt("header damaged")
	}
	if r.header[4] == 1 {
		return nil, corrupt("frame version 1 (a pre-release format, with SHA-256 digests) is not read by this walship")
	}
	if r.header[4] != version {
		return nil, corrupt("unsupported frame version %d", r.header[4])
	}
	c, ok := codecs[Codec(r.header[5])]
	if !ok {
		return nil, corrupt("unknown codec %d", r.header[5])
	}
	if r.header[6]&^flagAge != 0 {
		return nil, corrupt("unknown header flags %02x", r.header[6])
	}
	r.tail.hashing = true
	var payload io.Reader = r.tail
	if r.header[6]&flagAge != 0 {
		if len(ids) == 0 {
			return nil, fmt.Errorf("%w: it is encrypted and no key was given (set WALSHIP_AGE_KEY_FILE)", ErrKey)
		}
		dec, err := age.Decrypt(r.tail, ids...)
		var noMatch *age.NoIdentityMatchError
		switch {
		case errors.As(err, &noMatch):
			return nil, fmt.Errorf("%w: none of the keys given matches (wrong WALSHIP_AGE_KEY_FILE?)", ErrKey)
		case err != nil && r.tail.srcErr != nil:
			return nil, r.tail.srcErr
		case err != nil:
			return nil, corrupt("encryption header: %v", err)
		}
		payload = dec
	}
	d, release, err := c.decompress(payload)
	if err != nil {
		return nil, corrupt("%s: %v", c.name, err)
	}
	r.decomp, r.release = d, release
	return r, nil
}

// Codec returns the codec named in the header.
func (r *Reader) Codec() Codec { return Codec(r.header[5]) }

func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.decomp.Read(p)
	return n, r.took(p[:n], err)
}

// maxWrite bounds what CopyTo hands dst in one Write, as its copy buffer does. A file written 1 MiB
// or more at a time gets its page cache in large folios, taken from the free 2 MiB blocks that a
// VM with free page reporting (this project's benchmark VM) has handed back to its host, and
// every page of them is faulted in again from the host: writing 1 GiB took 1.2-3.0 s of CPU in
// 1-2 MiB writes and 0.22-0.27 s in writes of 32-512 KiB (dd, after the memory sat free). A
// prefetcher writing its decoded 2 MiB frames whole spent 40 ms a segment in that copy.
const maxWrite = 256 << 10

// chunker is a decompressor that hands out its decoded bytes where they lie, sparing CopyTo a
// copy of the whole segment through its buffer (Decode of a corpus segment on one core: 9.0 ms
// with the copy, 8.5 without).
type chunker interface {
	// chunk returns the next decoded bytes, valid until the next call, or errNoChunk when
	// the rest must be read with Read.
	chunk() ([]byte, error)
}

var errNoChunk = errors.New("object: no chunks; use Read")

// took accounts for the decoded bytes b and the decompressor's err, as Read returns them: on
// the end of the payload it verifies the trailer (io.EOF when it holds), on any error it closes
// the reader. b must not be used after an error (it may lie in a released buffer).
func (r *Reader) took(b []byte, err error) error {
	r.digest.Write(b)
	r.n += int64(len(b))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		r.err = r.finish()
	case errors.Is(err, ErrCorrupt):
		r.err = err
	default:
		if r.tail.srcErr != nil {
			r.err = r.tail.srcErr // the source failed: not (necessarily) a corrupt object
		} else {
			r.err = corrupt("payload: %v", err)
		}
	}
	r.close()
	return r.err
}

// finish verifies the trailer once the payload is exhausted.
func (r *Reader) finish() error {
	var extra [1]byte
	if n, _ := r.tail.Read(extra[:]); n > 0 {
		return corrupt("data after the compressed payload")
	}
	if r.tail.srcErr != nil {
		return r.tail.srcErr
	}
	t, err := r.tail.trailer()
	if err != nil {
		return err
	}
	sum := DigestOf(r.digest)
	stored := binary.BigEndian.Uint32(t[tPayCRC:tCRC])
	want := trailer(r.header, int64(binary.BigEndian.Uint64(t)), Digest(t[tDigest:tPayCRC]), stored)
	if !bytes.Equal(t[tCRC:tEnd], want[tCRC:tEnd]) {
		return corrupt("trailer damaged")
	}
	if stored != r.tail.crc {
		return corrupt("payload crc32c %08x, trailer says %08x", r.tail.crc, stored)
	}
	if n := int64(binary.BigEndian.Uint64(t)); n != r.n {
		return corrupt("length %d, trailer says %d", r.n, n)
	}
	if !bytes.Equal(t[tDigest:tPayCRC], sum[:]) {
		return corrupt("xxh3 %x, trailer says %x", sum, t[tDigest:tPayCRC])
	}
	r.sum = Summary{RawSize: r.n, Digest: sum}
	return io.EOF
}

// Summary returns the verified length and digest; valid once Read has returned io.EOF.
func (r *Reader) Summary() Summary { return r.sum }

// Close releases the decompressor early, when the caller stops before io.EOF.
func (r *Reader) Close() error {
	if r.err == nil {
		r.err = errors.New("object: reader closed")
	}
	r.close()
	return nil
}

func (r *Reader) close() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
}

// Decode writes the verified raw bytes of the unencrypted frame in src to dst. dst receives bytes
// before verification ends; on error treat everything written as garbage.
func Decode(dst io.Writer, src io.Reader) (Summary, error) { return DecodeWith(dst, src, nil) }

// DecodeWith is Decode for frames that may be encrypted to one of ids.
func DecodeWith(dst io.Writer, src io.Reader, ids []age.Identity) (Summary, error) {
	r, err := NewReaderWith(src, ids)
	if err != nil {
		return Summary{}, err
	}
	return r.CopyTo(dst)
}

// CopyTo writes the rest of the verified raw bytes to dst and closes the reader.
func (r *Reader) CopyTo(dst io.Writer) (Summary, error) {
	defer r.Close()
	if c, ok := r.decomp.(chunker); ok && r.err == nil {
		for {
			b, err := c.chunk()
			if errors.Is(err, errNoChunk) {
				break // the rest through Read, below
			}
			if err := r.took(b, err); errors.Is(err, io.EOF) {
				return r.Summary(), nil
			} else if err != nil {
				return Summary{}, err
			}
			for len(b) > 0 {
				k := min(len(b), maxWrite)
				if _, werr := dst.Write(b[:k]); werr != nil {
					return Summary{}, werr
				}
				b = b[k:]
			}
		}
	}
	buf, _ := copyBufs.get(newCopyBuf)
	defer copyBufs.put(buf)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return Summary{}, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return r.Summary(), nil
		}
		if err != nil {
			return Summary{}, err
		}
	}
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// tailReader passes through everything but the last trailerSize bytes of its source, which it
// keeps for the trailer check, so the decompressor never sees the trailer.
type tailReader struct {
	src    io.Reader
	buf    []byte
	start  int
	end    int
	eof    bool
	srcErr error // a read error of the source (not EOF): transport, not corruption
	// hashing turns on the payload CRC once the header has been read.
	hashing bool
	crc     uint32
}

func newTailReader(src io.Reader) *tailReader {
	return &tailReader{src: src, buf: make([]byte, 128<<10)}
}

func (t *tailReader) fill() {
	for !t.eof && t.end-t.start <= trailerSize {
		if t.start > 0 {
			t.end = copy(t.buf, t.buf[t.start:t.end])
			t.start = 0
		}
		n, err := t.src.Read(t.buf[t.end:])
		t.end += n
		if errors.Is(err, io.EOF) {
			t.eof = true
		} else if err != nil {
			t.eof = true
			t.srcErr = err
		}
	}
}

func (t *tailReader) Read(p []byte) (int, error) {
	t.fill()
	avail := t.end - t.start - trailerSize
	if avail <= 0 {
		if t.srcErr != nil {
			return 0, t.srcErr
		}
		return 0, io.EOF
	}
	n := copy(p, t.buf[t.start:t.start+avail])
	if t.hashing {
		t.crc = crc32.Update(t.crc, castagnoli, p[:n])
	}
	t.start += n
	return n, nil
}

func (t *tailReader) trailer() ([]byte, error) {
	t.fill()
	if t.end-t.start != trailerSize {
		return nil, corrupt("truncated: no complete trailer")
	}
	tr := t.buf[t.start:t.end]
	if string(tr[tEnd:]) != endMagic {
		return nil, corrupt("truncated or damaged trailer")
	}
	return tr, nil
}
