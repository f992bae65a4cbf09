// Package azure is the Store for Azure Blob Storage (and Azurite), built on azblob.
package azure

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/walship/walship/storage"
)

// Config selects the container and how to reach it.
type Config struct {
	Container string
	Prefix    string
	// ConnectionString, else Account with Key (shared key), else Account with the default
	// Azure credential chain (environment, workload identity, managed identity, Azure CLI).
	ConnectionString string
	Account, Key     string
	// Endpoint is the account URL, e.g. http://127.0.0.1:10000/devstoreaccount1 for Azurite;
	// default https://ACCOUNT.blob.core.windows.net.
	Endpoint string
	// HTTPClient replaces the transport (tests inject faults).
	HTTPClient *http.Client
	// BlockThreshold: bodies above it are staged in blocks of BlockSize (defaults 256 MiB and
	// 16 MiB); at or below it, one Put Blob.
	BlockThreshold, BlockSize int64
	// PageSize is the most blobs one List request asks for; 0 keeps the service's (5000).
	PageSize int
}

// Store is an Azure container (and blob name prefix).
type Store struct {
	cfg       Config
	prefix    storage.Prefix
	container *container.Client
}

// New builds the client without network I/O. azcore's own retries are off: storage.Retry above
// every backend is the one retry policy.
func New(ctx context.Context, c Config) (*Store, error) {
	if c.Container == "" {
		return nil, errors.New("azure: no container in the storage URL (azblob://CONTAINER/prefix)")
	}
	if c.BlockThreshold == 0 {
		c.BlockThreshold = 256 << 20
	}
	if c.BlockSize == 0 {
		c.BlockSize = 16 << 20
	}
	opts := &azblob.ClientOptions{}
	opts.Retry = policy.RetryOptions{MaxRetries: -1}
	if c.HTTPClient != nil {
		opts.Transport = c.HTTPClient
	}
	endpoint := strings.TrimSuffix(c.Endpoint, "/")
	if endpoint == "" && c.Account != "" {
		endpoint = "https://" + c.Account + ".blob.core.windows.net"
	}
	var client *azblob.Client
	var err error
	switch {
	case c.ConnectionString != "":
		client, err = azblob.NewClientFromConnectionString(c.ConnectionString, opts)
	case c.Account != "" && c.Key != "":
		var cred *azblob.SharedKeyCredential
		if cred, err = azblob.NewSharedKeyCredential(c.Account, c.Key); err == nil {
			client, err = azblob.NewClientWithSharedKeyCredential(endpoint+"/", cred, opts)
		}
	case c.Account != "":
		var cred *azidentity.DefaultAzureCredential
		if cred, err = azidentity.NewDefaultAzureCredential(nil); err == nil {
			client, err = azblob.NewClient(endpoint+"/", cred, opts)
		}
	default:
		return nil, fmt.Errorf("azure: %w: set a connection string, or an account with a key or an Azure identity", storage.ErrCredentials)
	}
	if err != nil {
		return nil, fmt.Errorf("azure: %w: %w", storage.ErrCredentials, err)
	}
	return &Store{cfg: c, prefix: storage.NewPrefix(c.Prefix), container: client.ServiceClient().NewContainerClient(c.Container)}, nil
}

func (s *Store) String() string { return s.prefix.URL("azblob", s.cfg.Container) }

func (s *Store) name(key string) string { return s.prefix.Name(key) }

func (s *Store) blob(key string) *blockblob.Client {
	return s.container.NewBlockBlobClient(s.name(key))
}

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, "put", key, body, meta, false)
}

// Create implements storage.Creator with If-None-Match: *.
func (s *Store) Create(ctx context.Context, key string, body io.ReadSeeker, meta map[string]string) error {
	return s.put(ctx, "create", key, body, meta, true)
}

// put sends Content-MD5 with every request so the service rejects a damaged body. Large bodies
// are staged block by block (each with its MD5) and committed with the caller's conditions —
// never through UploadBuffer/UploadFile, which drop them above 256 MiB (azblob v1.8.3).
func (s *Store) put(ctx context.Context, op, key string, body io.ReadSeeker, meta map[string]string, create bool) error {
	if err := storage.CheckPut(key, meta); err != nil {
		return fmt.Errorf("azure: %s %s: %w", op, key, err)
	}
	size, err := storage.Size(body)
	if err != nil {
		return fmt.Errorf("azure: %s %s: %w", op, key, err)
	}
	var cond *blob.AccessConditions
	if create {
		cond = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	}
	md := make(map[string]*string, len(meta))
	for k, v := range meta {
		md[k] = to.Ptr(v)
	}
	if size > s.cfg.BlockThreshold {
		err = s.putBlocks(ctx, key, body, md, cond)
	} else {
		err = s.putOne(ctx, key, body, md, cond)
	}
	if err != nil {
		return fmt.Errorf("azure: %s %s: %w", op, key, s.classify(err))
	}
	return nil
}

func (s *Store) putOne(ctx context.Context, key string, body io.ReadSeeker, md map[string]*string, cond *blob.AccessConditions) error {
	h := md5.New()
	if _, err := io.Copy(h, body); err != nil {
		return err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sum := h.Sum(nil)
	resp, err := s.blob(key).Upload(ctx, nopCloser{body}, &blockblob.UploadOptions{
		Metadata: md, AccessConditions: cond, TransactionalValidation: blob.TransferValidationTypeMD5(sum),
	})
	if err != nil {
		return err
	}
	if len(resp.ContentMD5) > 0 && !bytes.Equal(resp.ContentMD5, sum) {
		return fmt.Errorf("%w: service computed MD5 %x, sent %x", storage.ErrIntegrity, resp.ContentMD5, sum)
	}
	return nil
}

// putBlocks stages the body in blocks read one at a time into a reused buffer (constant memory),
// then commits them under the caller's access conditions. Block IDs carry a random per-upload
// prefix: the service keeps uncommitted blocks per blob name, so two uploads racing to create the
// same key with predictable IDs would overwrite each other's staged blocks, and the winning commit
// could stitch two bodies together.
func (s *Store) putBlocks(ctx context.Context, key string, body io.ReadSeeker, md map[string]*string, cond *blob.AccessConditions) error {
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return err
	}
	bb := s.blob(key)
	buf := make([]byte, s.cfg.BlockSize)
	var upload [16]byte
	if _, err := rand.Read(upload[:]); err != nil {
		return err
	}
	var ids []string
	for i := 0; ; i++ {
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			id := base64.StdEncoding.EncodeToString(fmt.Appendf(upload[:len(upload):len(upload)], "%08d", i))
			sum := md5.Sum(buf[:n])
			if _, serr := bb.StageBlock(ctx, id, nopCloser{bytes.NewReader(buf[:n])}, &blockblob.StageBlockOptions{
				TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
			}); serr != nil {
				return serr
			}
			ids = append(ids, id)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	_, err := bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{Metadata: md, AccessConditions: cond})
	return err
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

// Get implements storage.Store: one request returns body, size and metadata.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, storage.Info{}, fmt.Errorf("azure: get: %w", err)
	}
	resp, err := s.blob(key).DownloadStream(ctx, nil)
	if err != nil {
		return nil, storage.Info{}, fmt.Errorf("azure: get %s: %w", key, s.classify(err))
	}
	info := storage.Info{Key: key, Size: deref(resp.ContentLength), ModTime: deref(resp.LastModified), Metadata: lower(resp.Metadata)}
	return resp.Body, info, nil
}

// GetRange implements storage.RangeGetter.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, fmt.Errorf("azure: get: %w", err)
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if length < 0 {
		length = 0 // the SDK's "to the end"
	}
	resp, err := s.blob(key).DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: offset, Count: length}})
	if err != nil {
		return nil, fmt.Errorf("azure: get %s at %d: %w", key, offset, s.classify(err))
	}
	return resp.Body, nil
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, fmt.Errorf("azure: stat: %w", err)
	}
	p, err := s.blob(key).GetProperties(ctx, nil)
	if err != nil {
		return storage.Info{}, fmt.Errorf("azure: stat %s: %w", key, s.classify(err))
	}
	return storage.Info{Key: key, Size: deref(p.ContentLength), ModTime: deref(p.LastModified), Metadata: lower(p.Metadata)}, nil
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	full := s.prefix.ListName(prefix)
	opts := &container.ListBlobsFlatOptions{Prefix: &full}
	if s.cfg.PageSize > 0 {
		opts.MaxResults = to.Ptr(int32(min(s.cfg.PageSize, 5000)))
	}
	pager := s.container.NewListBlobsFlatPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("azure: list %q: %w", prefix, s.classify(err))
		}
		for _, b := range page.Segment.BlobItems {
			k, ok := s.prefix.Key(deref(b.Name))
			if !ok {
				continue
			}
			info := storage.Info{Key: k}
			if b.Properties != nil {
				info.Size = deref(b.Properties.ContentLength)
				info.ModTime = deref(b.Properties.LastModified)
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return fmt.Errorf("azure: delete: %w", err)
	}
	if _, err := s.blob(key).Delete(ctx, nil); err != nil {
		return fmt.Errorf("azure: delete %s: %w", key, s.classify(err))
	}
	return nil
}

// errBare404 marks a 404 without the x-ms-error-code header the service sends with every error
// (HEAD included): something other than Azure answered, so it says nothing about the blob.
var errBare404 = errors.New("the server answered 404 without an Azure error code (BlobNotFound or ContainerNotFound), " +
	"so it did not come from Azure Blob Storage: check endpoint= (or the connection string's BlobEndpoint) and any proxy or gateway in front of the store")

// classify is the one place SDK errors become storage sentinels. ErrNotExist comes only from the
// service's explicit BlobNotFound, which it sends on HEAD too (in x-ms-error-code): walship must
// never report "not found" for an archive it could not read (it would end PostgreSQL's recovery
// early), so ContainerNotFound, any other 404 code and a 404 without a code are errors.
func (s *Store) classify(err error) error {
	var sentinel error
	var re *azcore.ResponseError
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.ContainerBeingDeleted):
		return fmt.Errorf("%w: container %s (create it, or fix the container name in the storage URL): %w",
			storage.ErrNoContainer, s.cfg.Container, err)
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		sentinel = storage.ErrNotExist
	case bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet):
		sentinel = storage.ErrExist
	case bloberror.HasCode(err, bloberror.MD5Mismatch):
		sentinel = storage.ErrIntegrity
	case bloberror.HasCode(err, bloberror.AuthenticationFailed, bloberror.AuthorizationFailure,
		bloberror.AuthorizationPermissionMismatch, bloberror.InsufficientAccountPermissions):
		sentinel = storage.ErrPermission
	case errors.As(err, &re):
		switch {
		case re.StatusCode == http.StatusBadRequest && strings.Contains(strings.ToLower(re.Error()), "md5"):
			sentinel = storage.ErrIntegrity // Azurite answers InvalidOperation here
		case re.StatusCode == http.StatusNotFound && re.ErrorCode == "":
			sentinel = errBare404
		case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
			sentinel = storage.ErrPermission
		}
	}
	var authErr *azidentity.AuthenticationFailedError
	if sentinel == nil && (errors.As(err, &authErr) || strings.Contains(err.Error(), "DefaultAzureCredential")) {
		sentinel = storage.ErrCredentials
	}
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// lower returns metadata with lowercase keys: the service canonicalises their case differently
// per API (GetProperties "Sha256", listings "sha256").
func lower(m map[string]*string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = deref(v)
	}
	return out
}
