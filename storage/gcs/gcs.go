// Package gcs is the Store for Google Cloud Storage (and fake-gcs-server), built on
// cloud.google.com/go/storage with Application Default Credentials.
package gcs

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	gs "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/walship/walship/storage"
)

// Config selects the bucket and how to reach it.
type Config struct {
	Bucket string
	Prefix string
	// Endpoint is an emulator's base URL (http://127.0.0.1:4443); credentials are then not used.
	Endpoint string
	// JSONReads reads through the JSON API, which emulators need (the SDK's XML reads are routed
	// by host name). Set automatically with Endpoint.
	JSONReads bool
	// HTTPClient replaces the SDK's transport (tests inject faults). Only with Endpoint, since it
	// replaces authentication too.
	HTTPClient *http.Client
	// ResumableThreshold is the largest body sent in one (multipart) upload request, where the
	// server checks the CRC32C and MD5 sent with it (DefaultResumableThreshold). Larger bodies go
	// as a resumable upload in chunks of ChunkSize (default 16 MiB), each held in memory once.
	ResumableThreshold int64
	ChunkSize          int
	// PageSize is the most objects one List request asks for; 0 keeps the server's (1000 on GCS,
	// everything at once on fake-gcs-server).
	PageSize int
}

// Store is a GCS bucket (and name prefix).
type Store struct {
	cfg          Config
	prefix       storage.Prefix
	client       *gs.Client
	bucket       *gs.BucketHandle
	bucketExists atomic.Bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DefaultResumableThreshold is the largest body sent in one request: a 64 MiB WAL segment
// stored uncompressed (or incompressible) plus its frame fits with room to spare, so every WAL
// segment is one request whose checksums the server verifies, while a 1 GiB binlog is resumable.
// A single request streams the body (the writer's ChunkSize is 0: nothing is buffered), so it
// costs less memory than a resumable upload, which holds one chunk.
const DefaultResumableThreshold = 128 << 20

// New builds the client. The SDK's own retries are off: storage.Retry above every backend is the
// one retry policy.
func New(ctx context.Context, c Config) (*Store, error) {
	if c.Bucket == "" {
		return nil, errors.New("gcs: no bucket in the storage URL (gs://BUCKET/prefix)")
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = 16 << 20
	}
	if c.ResumableThreshold == 0 {
		c.ResumableThreshold = DefaultResumableThreshold
	}
	var opts []option.ClientOption
	if c.Endpoint != "" {
		ep := strings.TrimSuffix(c.Endpoint, "/")
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep
		}
		opts = append(opts, option.WithEndpoint(ep+"/storage/v1/"), option.WithoutAuthentication())
		c.JSONReads = true
	}
	if c.HTTPClient != nil {
		opts = append(opts, option.WithHTTPClient(c.HTTPClient))
	}
	if c.JSONReads {
		opts = append(opts, gs.WithJSONReads())
	}
	client, err := gs.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcs: %w: %w", storage.ErrCredentials, err)
	}
	client.SetRetry(gs.WithPolicy(gs.RetryNever))
	return &Store{cfg: c, prefix: storage.NewPrefix(c.Prefix), client: client, bucket: client.Bucket(c.Bucket)}, nil
}

func (s *Store) String() string { return s.prefix.URL("gs", s.cfg.Bucket) }

func (s *Store) name(key string) string { return s.prefix.Name(key) }

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, "put", key, body, meta, false)
}

// Create implements storage.Creator with ifGenerationMatch=0.
func (s *Store) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, "create", key, body, meta, true)
}

// put sends the body's CRC32C and MD5 so the server rejects a damaged single-request upload, and
// compares the CRC32C the server computed after every upload: resumable uploads are not checked
// by every server (fake-gcs-server ignores their hashes), so a mismatch deletes what was stored.
func (s *Store) put(ctx context.Context, op, key string, body io.ReadSeeker, meta map[string]string, create bool) error {
	if err := storage.CheckPut(key, meta); err != nil {
		return fmt.Errorf("gcs: %s %s: %w", op, key, err)
	}
	crc, sum, size, err := checksums(body)
	if err != nil {
		return fmt.Errorf("gcs: %s %s: %w", op, key, err)
	}
	obj := s.bucket.Object(s.name(key))
	if create {
		obj = obj.If(gs.Conditions{DoesNotExist: true})
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := obj.NewWriter(wctx)
	w.Metadata = meta
	w.ChunkSize = s.cfg.ChunkSize
	if size <= s.cfg.ResumableThreshold {
		w.ChunkSize = 0 // one request, streamed
	}
	w.SendCRC32C = true
	w.CRC32C = crc
	w.MD5 = sum
	if _, err := io.Copy(w, body); err != nil {
		cancel()
		w.Close()
		return fmt.Errorf("gcs: %s %s: %w", op, key, s.classify(ctx, err, true))
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("gcs: %s %s: %w", op, key, s.classify(ctx, err, true))
	}
	s.bucketExists.Store(true)
	if attrs := w.Attrs(); attrs != nil && attrs.CRC32C != crc {
		// Remove exactly the generation this call created, never a later writer's.
		s.bucket.Object(s.name(key)).If(gs.Conditions{GenerationMatch: attrs.Generation}).Delete(context.WithoutCancel(ctx))
		return fmt.Errorf("gcs: %s %s: %w: server crc32c %08x, sent %08x (object removed)", op, key, storage.ErrIntegrity, attrs.CRC32C, crc)
	}
	return nil
}

func checksums(body io.ReadSeeker) (crc uint32, sum []byte, size int64, err error) {
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return 0, nil, 0, err
	}
	c := crc32.New(castagnoli)
	m := md5.New()
	if size, err = io.Copy(io.MultiWriter(c, m), body); err != nil {
		return 0, nil, 0, err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return 0, nil, 0, err
	}
	return c.Sum32(), m.Sum(nil), size, nil
}

// Get implements storage.Store. The reader's attributes carry no metadata, so the object's
// attributes are read first and exactly that generation is opened: metadata and body always
// belong together, and a miss still costs one request.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, storage.Info{}, fmt.Errorf("gcs: get: %w", err)
	}
	obj := s.bucket.Object(s.name(key))
	a, err := obj.Attrs(ctx)
	if err != nil {
		return nil, storage.Info{}, fmt.Errorf("gcs: get %s: %w", key, s.classify(ctx, err, false))
	}
	r, err := obj.Generation(a.Generation).NewReader(ctx)
	if err != nil {
		return nil, storage.Info{}, fmt.Errorf("gcs: get %s: %w", key, s.downloadErr(ctx, obj, err))
	}
	s.bucketExists.Store(true)
	return r, storage.Info{Key: key, Size: a.Size, ModTime: a.Updated, Metadata: storage.LowerKeys(a.Metadata)}, nil
}

// GetRange implements storage.RangeGetter.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, fmt.Errorf("gcs: get: %w", err)
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	obj := s.bucket.Object(s.name(key))
	r, err := obj.NewRangeReader(ctx, offset, length)
	if err != nil {
		return nil, fmt.Errorf("gcs: get %s at %d: %w", key, offset, s.downloadErr(ctx, obj, err))
	}
	return r, nil
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, fmt.Errorf("gcs: stat: %w", err)
	}
	a, err := s.bucket.Object(s.name(key)).Attrs(ctx)
	if err != nil {
		return storage.Info{}, fmt.Errorf("gcs: stat %s: %w", key, s.classify(ctx, err, false))
	}
	s.bucketExists.Store(true)
	return storage.Info{Key: key, Size: a.Size, ModTime: a.Updated, Metadata: storage.LowerKeys(a.Metadata)}, nil
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	full := s.prefix.ListName(prefix)
	q := &gs.Query{Prefix: full, Projection: gs.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated"}); err != nil {
		return err
	}
	it := s.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = s.cfg.PageSize
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("gcs: list %q: %w", prefix, s.classify(ctx, err, true))
		}
		k, ok := s.prefix.Key(a.Name)
		if !ok {
			continue
		}
		if err := fn(storage.Info{Key: k, Size: a.Size, ModTime: a.Updated}); err != nil {
			return err
		}
	}
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return fmt.Errorf("gcs: delete: %w", err)
	}
	if err := s.bucket.Object(s.name(key)).Delete(ctx); err != nil {
		return fmt.Errorf("gcs: delete %s: %w", key, s.classify(ctx, err, false))
	}
	return nil
}

// errBare404 marks a 404 without the JSON error GCS sends with every API error: something other
// than GCS answered, so it says nothing about the object.
var errBare404 = errors.New("the server answered 404 without a GCS error (reason notFound), " +
	"so it did not come from Cloud Storage: check endpoint= (or STORAGE_EMULATOR_HOST) and any proxy or gateway in front of the store")

// classify is the one place SDK errors become storage sentinels. ErrNotExist needs both a 404
// that GCS itself explained (a JSON error with reason notFound) and a bucket known to exist: GCS
// (and fake-gcs-server) answers a missing bucket and a missing object with the same 404 on object
// requests, and "not found" must never stand in for "could not read the archive" (it would end
// PostgreSQL's recovery early). write is true for requests where a 404 can only mean the bucket.
// Downloads carry no JSON error and go through downloadErr.
func (s *Store) classify(ctx context.Context, err error, write bool) error {
	var sentinel error
	var gerr *googleapi.Error
	switch {
	case errors.As(err, &gerr) && gerr.Code == http.StatusNotFound:
		switch {
		case !explained(gerr):
			sentinel = errBare404
		case write || errors.Is(err, gs.ErrBucketNotExist):
			return s.noBucket(err)
		default:
			if sentinel = s.notFound(ctx); sentinel != storage.ErrNotExist {
				return sentinel // it carries the bucket check's answer
			}
		}
	case errors.Is(err, gs.ErrBucketNotExist):
		return s.noBucket(err)
	case errors.Is(err, gs.ErrObjectNotExist): // a download's 404, whose body the SDK dropped
		sentinel = errBare404
	case errors.As(err, &gerr):
		switch gerr.Code {
		case http.StatusPreconditionFailed, http.StatusConflict:
			sentinel = storage.ErrExist
		case http.StatusUnauthorized, http.StatusForbidden:
			sentinel = storage.ErrPermission
		case http.StatusBadRequest:
			if m := strings.ToLower(gerr.Message); strings.Contains(m, "crc32c") || strings.Contains(m, "md5") {
				sentinel = storage.ErrIntegrity
			}
		}
	}
	if sentinel == nil && strings.Contains(err.Error(), "could not find default credentials") {
		sentinel = storage.ErrCredentials
	}
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// explained reports whether a 404 carried GCS's own JSON error.
func explained(e *googleapi.Error) bool {
	for _, item := range e.Errors {
		if item.Reason == "notFound" {
			return true
		}
	}
	return false
}

func (s *Store) noBucket(err error) error {
	return fmt.Errorf("%w: bucket %s (create it, or fix the bucket name in the storage URL): %w", storage.ErrNoContainer, s.cfg.Bucket, err)
}

// downloadErr classifies a failed download. A download's 404 has no JSON error (the XML API's
// body is dropped by the SDK, the JSON API's media answer is plain text), so it is checked
// against the object's metadata, one extra request on a miss only: absent there is ErrNotExist,
// present means the 404 came from something else (a proxy, or a generation replaced meanwhile,
// which a retry reads afresh).
func (s *Store) downloadErr(ctx context.Context, obj *gs.ObjectHandle, err error) error {
	if !errors.Is(err, gs.ErrObjectNotExist) {
		return s.classify(ctx, err, false)
	}
	if _, aerr := obj.Attrs(ctx); aerr != nil {
		return s.classify(ctx, aerr, false)
	}
	return fmt.Errorf("%w: the object's metadata is readable but its download answered 404: %w", errBare404, err)
}

// notFound confirms a 404 is about the object, asking for the bucket once per Store.
func (s *Store) notFound(ctx context.Context) error {
	if s.bucketExists.Load() {
		return storage.ErrNotExist
	}
	_, err := s.bucket.Attrs(ctx)
	switch {
	case err == nil:
		s.bucketExists.Store(true)
		return storage.ErrNotExist
	case errors.Is(err, gs.ErrBucketNotExist):
		var gerr *googleapi.Error
		if errors.As(err, &gerr) && !explained(gerr) {
			return fmt.Errorf("%w: %w", errBare404, err)
		}
		return s.noBucket(err)
	}
	return fmt.Errorf("object not found, and the bucket could not be checked: %w", err)
}
