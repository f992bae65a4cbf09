// Package open turns a storage URL into a ready Store wrapped in the retry decorator. It sits one
// floor above the backends, which import package storage and so cannot be imported by it.
package open

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/azure"
	"github.com/walship/walship/storage/file"
	"github.com/walship/walship/storage/gcs"
	"github.com/walship/walship/storage/s3"
)

// Options carry what the command line knows: the environment and the logger.
type Options struct {
	// Getenv reads the environment; nil reads nothing (the SDKs still read theirs).
	Getenv func(string) string
	Logger *slog.Logger
	Retry  storage.RetryPolicy
	// Lazy defers building the backend (the SDK client, its configuration and credential chain)
	// to the first request, for commands that often need none: a wal-push answered by a marker, a
	// wal-fetch served from the spool. The URL is still checked at once; what fails later while
	// building is returned by that request, wrapped in ErrSetup.
	Lazy bool
}

// Schemes lists the accepted URL forms, for help texts.
const Schemes = "file:///abs/path (or just /abs/path), s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix"

// Open parses rawURL, builds the backend without network I/O (or, with o.Lazy, on first use), and
// wraps it in storage.Retry.
func Open(ctx context.Context, rawURL string, o Options) (storage.Store, error) {
	name, build, err := backend(ctx, rawURL, o)
	if err != nil {
		return nil, err
	}
	p := o.Retry
	if p.Logger == nil {
		p.Logger = o.Logger
	}
	open := func() (storage.Store, error) {
		s, err := build()
		if err != nil {
			return nil, err
		}
		return storage.Retry(s, p), nil
	}
	if o.Lazy {
		return &lazy{name: name, open: open}, nil
	}
	return open()
}

// query returns the URL's query options after checking that each is known: a misspelt option
// must not be silently ignored.
func query(u *url.URL, known ...string) (url.Values, error) {
	q := u.Query()
	var unknown []string
	for k := range q {
		found := false
		for _, kn := range known {
			found = found || k == kn
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("storage URL %s: unknown option %q (known for %s://: %s)",
			redact(u), unknown[0], u.Scheme, strings.Join(known, ", "))
	}
	return q, nil
}

// backend checks rawURL and returns the name the backend will give itself (its String) and the
// function that builds it; only that function builds SDK clients or reads credentials.
func backend(ctx context.Context, rawURL string, o Options) (string, func() (storage.Store, error), error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if rawURL == "" {
		return "", nil, fmt.Errorf("no storage given: set --storage or WALSHIP_STORAGE to %s", Schemes)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		// A bare absolute path is a directory for the file backend, the default scheme, taken
		// literally (a "?" or "#" in it is part of the name). One with an "@" is refused: it
		// may be a mistyped URL with credentials, which errors and logs must not echo.
		if filepath.IsAbs(rawURL) && !strings.Contains(rawURL, "@") {
			return "file://" + filepath.Clean(rawURL), func() (storage.Store, error) { return file.New(rawURL) }, nil
		}
		return "", nil, fmt.Errorf("storage URL %q is not a URL: use %s", redactRaw(rawURL), Schemes)
	}
	if u.User != nil {
		return "", nil, fmt.Errorf("storage URL %s: credentials in the URL are not accepted; use the backend's environment variables", redact(u))
	}
	prefix := strings.Trim(u.Path, "/")
	switch u.Scheme {
	case "file":
		if _, err := query(u); err != nil {
			return "", nil, err
		}
		if u.Host != "" && u.Host != "localhost" {
			return "", nil, fmt.Errorf("storage URL %s: a file URL needs an absolute path, file:///path (three slashes)", redact(u))
		}
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return "", nil, fmt.Errorf("storage URL %s: a file URL needs an absolute path, file:///path", redact(u))
		}
		return "file://" + filepath.Clean(u.Path), func() (storage.Store, error) { return file.New(u.Path) }, nil
	case "s3":
		q, err := query(u, "endpoint", "region", "force_path_style", "sse", "sse_kms_key_id", "storage_class", "ca_file")
		if err != nil {
			return "", nil, err
		}
		if u.Host == "" {
			return "", nil, fmt.Errorf("storage URL %s: no bucket (s3://BUCKET/prefix)", redact(u))
		}
		c := s3.Config{
			Bucket: u.Host, Prefix: prefix, Region: q.Get("region"), Endpoint: q.Get("endpoint"),
			SSE: q.Get("sse"), SSEKMSKeyID: q.Get("sse_kms_key_id"), StorageClass: q.Get("storage_class"),
		}
		// S3-compatible servers are addressed by path; AWS itself by virtual host.
		c.PathStyle = c.Endpoint != "" || getenv("AWS_ENDPOINT_URL_S3") != "" || getenv("AWS_ENDPOINT_URL") != ""
		if v := q.Get("force_path_style"); v != "" {
			if c.PathStyle, err = strconv.ParseBool(v); err != nil {
				return "", nil, fmt.Errorf("storage URL %s: force_path_style=%q is not true or false", redact(u), v)
			}
		}
		switch c.SSE {
		case "", "AES256", "aws:kms", "aws:kms:dsse":
		default:
			return "", nil, fmt.Errorf("storage URL %s: sse=%q: use AES256, aws:kms or aws:kms:dsse", redact(u), c.SSE)
		}
		if c.Endpoint != "" {
			if eu, err := url.Parse(c.Endpoint); err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
				return "", nil, fmt.Errorf("storage URL %s: endpoint=%q must be an http:// or https:// URL", redact(u), redactRaw(c.Endpoint))
			}
		}
		if ca := q.Get("ca_file"); ca != "" {
			if c.HTTPClient, err = caClient(ca); err != nil {
				return "", nil, err
			}
		}
		return storage.NewPrefix(prefix).URL("s3", u.Host), func() (storage.Store, error) { return s3.New(ctx, c) }, nil
	case "gs":
		q, err := query(u, "endpoint", "ca_file")
		if err != nil {
			return "", nil, err
		}
		if u.Host == "" {
			return "", nil, fmt.Errorf("storage URL %s: no bucket (gs://BUCKET/prefix)", redact(u))
		}
		c := gcs.Config{Bucket: u.Host, Prefix: prefix, Endpoint: q.Get("endpoint"), JSONReads: getenv("STORAGE_EMULATOR_HOST") != ""}
		if ca := q.Get("ca_file"); ca != "" {
			if c.Endpoint == "" {
				return "", nil, fmt.Errorf("storage URL %s: ca_file= needs endpoint= for gs:// (Google's own endpoint uses public roots)", redact(u))
			}
			if c.HTTPClient, err = caClient(ca); err != nil {
				return "", nil, err
			}
		}
		return storage.NewPrefix(prefix).URL("gs", u.Host), func() (storage.Store, error) { return gcs.New(ctx, c) }, nil
	case "azblob", "azure":
		q, err := query(u, "endpoint", "account", "ca_file")
		if err != nil {
			return "", nil, err
		}
		if u.Host == "" {
			return "", nil, fmt.Errorf("storage URL %s: no container (azblob://CONTAINER/prefix)", redact(u))
		}
		c := azure.Config{
			Container: u.Host, Prefix: prefix, Endpoint: q.Get("endpoint"),
			ConnectionString: getenv("AZURE_STORAGE_CONNECTION_STRING"),
			Account:          q.Get("account"),
		}
		if c.Account == "" {
			c.Account = getenv("AZURE_STORAGE_ACCOUNT")
		}
		if c.ConnectionString == "" {
			c.Key = getenv("AZURE_STORAGE_KEY")
		}
		if c.ConnectionString == "" && c.Account == "" {
			return "", nil, fmt.Errorf("storage URL %s: no Azure account: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT (with AZURE_STORAGE_KEY or an Azure identity), or ?account=", redact(u))
		}
		if ca := q.Get("ca_file"); ca != "" {
			if c.HTTPClient, err = caClient(ca); err != nil {
				return "", nil, err
			}
		}
		return storage.NewPrefix(prefix).URL("azblob", u.Host), func() (storage.Store, error) { return azure.New(ctx, c) }, nil
	}
	return "", nil, fmt.Errorf("storage URL %s: unknown scheme %q: use %s", redact(u), u.Scheme, Schemes)
}

// redactRaw hides whatever precedes the last "@" of a string that did not parse as a URL: it may
// be a user name and password.
func redactRaw(s string) string {
	i := strings.LastIndex(s, "@")
	if i < 0 {
		return s
	}
	start := strings.Index(s, "://")
	if start < 0 || start > i {
		start = 0
	} else {
		start += 3
	}
	return s[:start] + "REDACTED" + s[i:]
}

// redact drops anything secret-looking from a URL before it reaches an error message: the user
// information, the query (an endpoint= may carry its own), the fragment (no storage URL has one),
// and whatever precedes an "@" left anywhere else ("s3:key:secret@bucket" parses with no user
// information at all, "a:/key:secret@x" as a path).
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment, c.RawFragment = "", ""
	c.Opaque = redactRaw(c.Opaque)
	return redactRaw(c.String())
}
