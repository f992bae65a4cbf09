// Package s3 is the Store for Amazon S3 and S3-compatible servers (MinIO, Ceph, R2), built on
// aws-sdk-go-v2 with its standard credential chain.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/walship/walship/storage"
)

// DefaultPartSize is the multipart part size.
const DefaultPartSize = 16 << 20

// DefaultMultipartThreshold is the largest body sent in one PutObject: a 64 MiB WAL segment
// stored uncompressed (or incompressible) plus its frame fits with room to spare, so every WAL
// segment is one request, while a 1 GiB binlog goes multipart. PutObject streams the seekable
// body (the SDK reads it to checksum and sign it, then rewinds), so a single request costs no
// more memory than a multipart one, which holds up to two parts.
const DefaultMultipartThreshold = 128 << 20

// Config selects the bucket and how to reach it. Empty fields fall back to the SDK's defaults
// (environment, shared config files, web identity / IRSA, instance roles).
type Config struct {
	Bucket string
	Prefix string
	Region string
	// Endpoint is the base URL of an S3-compatible server, e.g. http://127.0.0.1:9000.
	Endpoint string
	// PathStyle addresses the bucket in the path instead of the host name, as most
	// S3-compatible servers need.
	PathStyle bool
	// AccessKey and SecretKey, when set, replace the credential chain.
	AccessKey, SecretKey, SessionToken string
	// SSE is the server-side encryption: "", "AES256", "aws:kms" or "aws:kms:dsse".
	SSE         string
	SSEKMSKeyID string
	// StorageClass, e.g. STANDARD_IA; empty keeps the bucket's default.
	StorageClass string
	// HTTPClient replaces the SDK's HTTP client (tests inject faults; custom CA bundles).
	HTTPClient *http.Client
	// MultipartThreshold is the largest body sent in one PutObject (DefaultMultipartThreshold;
	// at most S3's 5 GiB); larger bodies go multipart in parts of PartSize (DefaultPartSize).
	MultipartThreshold int64
	PartSize           int64
	// PageSize is the most keys one List request asks for; 0 keeps the service's (1000).
	PageSize int
}

// Store is an S3 bucket (and key prefix).
type Store struct {
	cfg    Config
	prefix storage.Prefix
	client *s3.Client
	// bucketSeen is set once the service has answered for the bucket (see headNotFound).
	bucketSeen atomic.Bool
}

// New builds the client without network I/O: credentials are resolved on the first request.
// The SDK's own retries are off; storage.Retry above every backend is the one retry policy.
func New(ctx context.Context, c Config) (*Store, error) {
	if c.Bucket == "" {
		return nil, errors.New("s3: no bucket in the storage URL (s3://BUCKET/prefix)")
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.MultipartThreshold == 0 {
		c.MultipartThreshold = DefaultMultipartThreshold
	}
	c.MultipartThreshold = min(c.MultipartThreshold, 5<<30)
	opts := []func(*config.LoadOptions) error{}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, c.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
		if c.HTTPClient != nil {
			o.HTTPClient = c.HTTPClient
		}
		o.Retryer = aws.NopRetryer{}
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return &Store{cfg: c, prefix: storage.NewPrefix(c.Prefix), client: client}, nil
}

func (s *Store) String() string { return s.prefix.URL("s3", s.cfg.Bucket) }

func (s *Store) name(key string) string { return s.prefix.Name(key) }

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, "put", key, body, meta, false)
}

// Create implements storage.Creator with If-None-Match: *, on single and multipart uploads alike
// (the condition is sent with CompleteMultipartUpload).
func (s *Store) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, "create", key, body, meta, true)
}

// put sends a CRC32C checksum with every request: the server recomputes it (and, over plain
// HTTP, the signed payload hash) and rejects a body that changed on the way.
func (s *Store) put(ctx context.Context, op, key string, body io.ReadSeeker, meta map[string]string, create bool) error {
	if err := storage.CheckPut(key, meta); err != nil {
		return fmt.Errorf("s3: %s %s: %w", op, key, err)
	}
	size, err := storage.Size(body)
	if err != nil {
		return fmt.Errorf("s3: %s %s: %w", op, key, err)
	}
	in := &s3.PutObjectInput{
		Bucket:            aws.String(s.cfg.Bucket),
		Key:               aws.String(s.name(key)),
		Body:              body,
		ContentLength:     aws.Int64(size),
		Metadata:          meta,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
	}
	if create {
		in.IfNoneMatch = aws.String("*")
	}
	if s.cfg.SSE != "" {
		in.ServerSideEncryption = types.ServerSideEncryption(s.cfg.SSE)
		if s.cfg.SSEKMSKeyID != "" {
			in.SSEKMSKeyId = aws.String(s.cfg.SSEKMSKeyID)
		}
	}
	if s.cfg.StorageClass != "" {
		in.StorageClass = types.StorageClass(s.cfg.StorageClass)
	}
	if size <= s.cfg.MultipartThreshold {
		_, err = s.client.PutObject(ctx, in)
	} else {
		up := manager.NewUploader(s.client, func(u *manager.Uploader) {
			u.PartSize = s.cfg.PartSize
			u.Concurrency = 2
			u.LeavePartsOnError = false
		})
		_, err = up.Upload(ctx, in)
	}
	if err != nil {
		return fmt.Errorf("s3: %s %s: %w", op, key, s.classify(ctx, err))
	}
	s.bucketSeen.Store(true)
	return nil
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, storage.Info{}, fmt.Errorf("s3: get: %w", err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.name(key))})
	if err != nil {
		return nil, storage.Info{}, fmt.Errorf("s3: get %s: %w", key, s.classify(ctx, err))
	}
	s.bucketSeen.Store(true)
	return out.Body, storage.Info{
		Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified), Metadata: storage.LowerKeys(out.Metadata),
	}, nil
}

// GetRange implements storage.RangeGetter.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, fmt.Errorf("s3: get: %w", err)
	}
	rng := fmt.Sprintf("bytes=%d-", offset)
	if length >= 0 {
		if length == 0 {
			return io.NopCloser(strings.NewReader("")), nil
		}
		rng = fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.name(key)), Range: aws.String(rng),
	})
	if err != nil {
		return nil, fmt.Errorf("s3: get %s %s: %w", key, rng, s.classify(ctx, err))
	}
	return out.Body, nil
}

// Stat implements storage.Store. HEAD answers a bare 404 both for a missing key and a missing
// bucket; classify tells them apart (see headNotFound).
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, fmt.Errorf("s3: stat: %w", err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.name(key))})
	if err != nil {
		return storage.Info{}, fmt.Errorf("s3: stat %s: %w", key, s.classify(ctx, err))
	}
	s.bucketSeen.Store(true)
	return storage.Info{
		Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified), Metadata: storage.LowerKeys(out.Metadata),
	}, nil
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	full := s.prefix.ListName(prefix)
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)}
	if s.cfg.PageSize > 0 {
		in.MaxKeys = aws.Int32(int32(min(s.cfg.PageSize, 1000)))
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3: list %q: %w", prefix, s.classify(ctx, err))
		}
		s.bucketSeen.Store(true)
		for _, o := range page.Contents {
			k, ok := s.prefix.Key(aws.ToString(o.Key))
			if !ok {
				continue
			}
			if err := fn(storage.Info{Key: k, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements storage.Store. S3 answers a delete of an absent key with success, so the
// object is looked up first to keep the ErrNotExist contract.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.Stat(ctx, key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.name(key))})
	if err != nil {
		return fmt.Errorf("s3: delete %s: %w", key, s.classify(ctx, err))
	}
	return nil
}

// errBare404 marks a 404 that carried no S3 error code where S3 always sends one (every request
// but HEAD): something other than S3 answered, so it says nothing about the object.
var errBare404 = errors.New("the server answered 404 without an S3 error code (NoSuchKey or NoSuchBucket), " +
	"so it did not come from S3: check endpoint= and force_path_style= in the storage URL, and any proxy or gateway in front of the store")

// errHeadNotFound marks HEAD's bodyless 404, which S3 sends for a missing key and a missing
// bucket alike; classify resolves it with headNotFound.
var errHeadNotFound = errors.New("HEAD answered 404")

// classify is the one place SDK errors become storage sentinels. The SDK error stays wrapped so
// its message (request id, status) reaches the log. ErrNotExist comes only from an explicit
// NoSuchKey, or from HEAD's 404 once the bucket is known to exist: walship must never report
// "not found" for an archive it could not read (it would end PostgreSQL's recovery early).
func (s *Store) classify(ctx context.Context, err error) error {
	switch sentinel := sentinelOf(err); sentinel {
	case nil:
		return err
	case errHeadNotFound:
		if herr := s.headNotFound(ctx); herr != storage.ErrNotExist {
			return herr // it carries the bucket check's answer, which says more than HEAD's
		}
		return fmt.Errorf("%w: %w", storage.ErrNotExist, err)
	case storage.ErrNoContainer:
		return s.noBucket(err)
	default:
		return fmt.Errorf("%w: %w", sentinel, err)
	}
}

func (s *Store) noBucket(err error) error {
	return fmt.Errorf("%w: bucket %s (create it, or fix the bucket name in the storage URL): %w", storage.ErrNoContainer, s.cfg.Bucket, err)
}

// headNotFound decides what a HEAD 404 means. The first time, it lists the store's prefix with
// MaxKeys=1: S3 answers that with an explicit NoSuchBucket for a missing bucket, and it needs only
// the permission walship's List already needs (HeadBucket wants s3:ListBucket on the whole bucket,
// which a policy scoped to the prefix refuses). Once the bucket has answered — here or in any
// successful request — later HEAD 404s cost nothing extra: a bucket does not vanish under a
// running archiver, and if it did, Get and Put would still report it (they get NoSuchBucket).
func (s *Store) headNotFound(ctx context.Context) error {
	if s.bucketSeen.Load() {
		return storage.ErrNotExist
	}
	_, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.prefix.ListName("")), MaxKeys: aws.Int32(1),
	})
	if err == nil {
		s.bucketSeen.Store(true)
		return storage.ErrNotExist
	}
	if sentinel := sentinelOf(err); sentinel == storage.ErrNoContainer {
		return s.noBucket(err)
	} else if sentinel != nil {
		err = fmt.Errorf("%w: %w", sentinel, err)
	}
	return fmt.Errorf("HEAD answered 404 and the bucket could not be checked: %w", err)
}

// sentinelOf maps an SDK error to a storage sentinel, errHeadNotFound or errBare404, or nil.
func sentinelOf(err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsb *types.NoSuchBucket
	var api smithy.APIError
	var resp *awshttp.ResponseError
	switch {
	case errors.As(err, &nsb):
		return storage.ErrNoContainer
	case errors.As(err, &nsk):
		return storage.ErrNotExist
	case errors.As(err, &nf):
		return errHeadNotFound
	case errors.As(err, &api):
		switch api.ErrorCode() {
		case "NoSuchBucket":
			return storage.ErrNoContainer
		case "NoSuchKey":
			return storage.ErrNotExist
		case "NotFound": // the SDK's name for a 404 whose body had no code
			return errBare404
		case "PreconditionFailed", "ConditionalRequestConflict":
			return storage.ErrExist
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
			"InvalidToken", "ExpiredToken", "AllAccessDisabled", "AccountProblem":
			return storage.ErrPermission
		case "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch", "BadDigest", "InvalidDigest":
			return storage.ErrIntegrity
		}
	}
	// The SDK has no error type for a credential chain that found nothing; its auth middleware
	// wraps the failure as "get identity: ...".
	if strings.Contains(err.Error(), "get identity: ") {
		return storage.ErrCredentials
	}
	if errors.As(err, &resp) {
		switch resp.HTTPStatusCode() {
		case http.StatusNotFound: // a 404 whose body was not even S3's XML
			return errBare404
		case http.StatusUnauthorized, http.StatusForbidden:
			return storage.ErrPermission
		case http.StatusPreconditionFailed:
			return storage.ErrExist
		}
	}
	return nil
}
