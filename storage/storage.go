// Package storage defines the Store every backend implements, the errors they return, and the
// decorators (retry, fault injection) that wrap any Store.
//
// Backends live in sub-packages (file, s3, gcs, azure, mem); each imports only this package and its
// own SDK, and none builds object keys: keys come from package layout.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Errors returned by every Store. Callers test them with errors.Is; backends wrap them with the
// SDK's error so the cause stays visible.
var (
	// ErrNotExist: the key is not in the store. Only returned when the store answered that the
	// object is absent; a store that could not be read returns some other error.
	ErrNotExist = errors.New("object does not exist")
	// ErrExist: Create found the key already present (or lost a race for it).
	ErrExist = errors.New("object already exists")
	// ErrPermission: the store refused the credentials or the request (401/403).
	ErrPermission = errors.New("access denied")
	// ErrCredentials: no usable credentials could be found or obtained for the store.
	ErrCredentials = errors.New("no usable credentials")
	// ErrNoContainer: the bucket or container named in the URL does not exist.
	ErrNoContainer = errors.New("bucket or container does not exist")
	// ErrIntegrity: the store rejected an upload because its checksum did not match the bytes it
	// received (corruption in transit), or reported a checksum that differs from what was sent.
	ErrIntegrity = errors.New("checksum mismatch in transit")
	// ErrUnsupported: an optional capability is not offered by the store.
	ErrUnsupported = errors.New("not supported by this store")
	// ErrInvalid: the request itself is malformed (bad key or metadata); retrying cannot help.
	ErrInvalid = errors.New("invalid request")
)

// Info describes a stored object.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
	// Metadata holds the per-object metadata given to Put/Create. Keys are lowercase; List may
	// leave it nil on backends whose listing does not return metadata.
	Metadata map[string]string
}

// Store is a flat namespace of immutable-by-convention objects under a prefix.
//
// Keys are slash-separated relative paths built by package layout; a key is never also the
// "directory" of other keys. Metadata keys are lowercase ASCII letters and digits starting with
// a letter (the common subset of S3, GCS and Azure metadata names); values are printable ASCII.
type Store interface {
	// Put stores body under key, replacing any existing object. It returns only once the object is
	// durable. body is rewound with Seek before each attempt, so a retry can resend it.
	Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error
	// Get opens the object for reading. The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat returns the object's Info, with Metadata.
	Stat(ctx context.Context, key string) (Info, error)
	// List calls fn for every object whose key starts with prefix, in lexical key order.
	// An error returned by fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Delete removes the object. Deleting an absent key returns ErrNotExist.
	Delete(ctx context.Context, key string) error
	// String names the store for logs and errors, without credentials.
	String() string
}

// Creator is the optional create-if-absent capability: Create stores body under key only if no
// object exists there, atomically with respect to concurrent creators, and returns ErrExist
// otherwise. The existing object is never modified. This is how WAL is never overwritten.
type Creator interface {
	Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error
}

// RangeGetter is the optional ranged-read capability: length bytes from offset (length < 0 reads
// to the end).
type RangeGetter interface {
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Wrapper is implemented by decorators so capabilities of the store they wrap stay reachable.
type Wrapper interface {
	Unwrap() Store
}

// Create stores body under key only if the key is absent. It uses the first Creator found along
// the Unwrap chain; a store with none returns ErrUnsupported rather than falling back to a
// check-then-put race that could overwrite WAL.
func Create(ctx context.Context, s Store, key string, body io.ReadSeeker, meta map[string]string) error {
	for st := s; st != nil; st = unwrap(st) {
		if c, ok := st.(Creator); ok {
			return c.Create(ctx, key, body, meta)
		}
	}
	return fmt.Errorf("%s: create %s: %w", s, key, ErrUnsupported)
}

// GetRange reads part of an object, using a RangeGetter along the Unwrap chain when there is one
// and otherwise reading the whole object and discarding what lies outside the range.
func GetRange(ctx context.Context, s Store, key string, offset, length int64) (io.ReadCloser, error) {
	for st := s; st != nil; st = unwrap(st) {
		if g, ok := st.(RangeGetter); ok {
			return g.GetRange(ctx, key, offset, length)
		}
	}
	rc, _, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, offset); err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, err
	}
	if length < 0 {
		return rc, nil
	}
	return readCloser{io.LimitReader(rc, length), rc}, nil
}

func unwrap(s Store) Store {
	if w, ok := s.(Wrapper); ok {
		return w.Unwrap()
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// Size returns the length of a ReadSeeker and rewinds it to the start.
func Size(body io.ReadSeeker) (int64, error) {
	n, err := body.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return n, nil
}

// CheckMetadata reports whether meta uses only keys and values every backend can store.
func CheckMetadata(meta map[string]string) error {
	for k, v := range meta {
		if k == "" || k[0] < 'a' || k[0] > 'z' || strings.IndexFunc(k, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) >= 0 {
			return fmt.Errorf("%w: metadata key %q: use lowercase letters and digits, starting with a letter", ErrInvalid, k)
		}
		if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			return fmt.Errorf("%w: metadata %s: value must be printable ASCII", ErrInvalid, k)
		}
	}
	return nil
}

// CheckKey reports whether key is a relative slash path with no empty, "." or ".." element.
func CheckKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("%w: key %q", ErrInvalid, key)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." || strings.ContainsAny(el, "\x00\\") {
			return fmt.Errorf("%w: key %q", ErrInvalid, key)
		}
	}
	return nil
}

// Prefix is the part of a storage URL's path below the bucket; backends use it to turn keys into
// object names and back, so every backend lays an archive out the same way.
type Prefix string

// NewPrefix trims slashes from a URL path.
func NewPrefix(p string) Prefix { return Prefix(strings.Trim(p, "/")) }

// Name is the object name of key.
func (p Prefix) Name(key string) string {
	if p == "" {
		return key
	}
	return string(p) + "/" + key
}

// ListName is the object-name prefix that lists keys starting with keyPrefix.
func (p Prefix) ListName(keyPrefix string) string {
	if p == "" {
		return keyPrefix
	}
	return string(p) + "/" + keyPrefix
}

// Key is the inverse of Name; ok is false for names outside the prefix and "directory" markers.
func (p Prefix) Key(name string) (key string, ok bool) {
	if p != "" {
		rest, found := strings.CutPrefix(name, string(p)+"/")
		if !found {
			return "", false
		}
		name = rest
	}
	return name, name != "" && !strings.HasSuffix(name, "/")
}

// URL renders scheme://bucket/prefix for logs and errors.
func (p Prefix) URL(scheme, bucket string) string {
	if p == "" {
		return scheme + "://" + bucket
	}
	return scheme + "://" + bucket + "/" + string(p)
}

// LowerKeys returns metadata with lowercase keys (services differ in the case they return).
func LowerKeys(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// CheckPut validates the key and metadata of a Put or Create.
func CheckPut(key string, meta map[string]string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	return CheckMetadata(meta)
}
