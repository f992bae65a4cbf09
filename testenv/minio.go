package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3Server is a MinIO server with one drive, reachable with static credentials.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:P, or https:// from MinIOTLS
	Region    string // us-east-1: the SDK refuses to sign without a region
	AccessKey string
	SecretKey string

	proc       *process
	httpClient *http.Client // trusts the server's certificate; nil for plain HTTP
}

// MinIO starts a single-drive MinIO server from CacheDir()/bin/minio. The binary is built from
// source by scripts/install-test-deps (MinIO publishes no module release).
func MinIO(t testing.TB) *S3Server {
	t.Helper()
	return startMinIO(t, "", nil)
}

// startMinIO starts MinIO, serving HTTPS with the certificate in certsDir if it is not empty;
// client must then trust that certificate, and is used to poll readiness and by Client.
func startMinIO(t testing.TB, certsDir string, client *http.Client) *S3Server {
	t.Helper()
	exe := cacheBin(t, "minio")
	dir := t.TempDir()
	scheme, args := "http", []string{"server", filepath.Join(dir, "data"), "--quiet"}
	if certsDir != "" {
		scheme, args = "https", append(args, "--certs-dir", certsDir)
	}
	readyClient := plainHTTP
	if client != nil {
		readyClient = client
	}
	s := &S3Server{Region: "us-east-1", AccessKey: "walshiptest", SecretKey: "walshiptest-secret-key",
		httpClient: client}
	s.proc = serve(t, "minio", filepath.Join(dir, "minio.log"), func() (*exec.Cmd, func() bool) {
		port, console := FreePort(t), FreePort(t)
		s.Endpoint = fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
		cmd := exec.Command(exe, append(args, "--address", fmt.Sprintf("127.0.0.1:%d", port),
			"--console-address", fmt.Sprintf("127.0.0.1:%d", console))...)
		// MINIO_UPDATE=off keeps it from looking for a newer release on the network.
		cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off")
		healthy := httpStatus(readyClient, s.Endpoint+"/minio/health/ready", http.StatusOK)
		return cmd, func() bool { return healthy() && s.servesS3() }
	})
	return s
}

// servesS3 reports whether a signed S3 request succeeds. /minio/health/ready can answer 200
// while the object layer is still starting: a request then fails with 503
// XMinioServerNotInitialized (seen in CI on the first GetObject after start).
func (s *S3Server) servesS3() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := s.Client().ListBuckets(ctx, &s3.ListBucketsInput{})
	return err == nil
}

// Client returns an S3 client for the server. Credentials, region, endpoint and HTTP client are
// all explicit, so no AWS_* variable or ~/.aws file of the machine can change what a test does
// (AWS_CA_BUNDLE, set here, breaks a default client given its own http.Client).
func (s *S3Server) Client() *s3.Client {
	hc := s.httpClient
	if hc == nil {
		hc = &http.Client{}
	}
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true, // http://localhost:P would otherwise become bucket.localhost
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   hc,
		// Every ranged GET would otherwise log to stderr that it has no checksum to validate.
		DisableLogOutputChecksumValidationSkipped: true,
	})
}

// NewBucket creates a bucket no other test uses and returns its name.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := uniqueName("walship")
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("testenv: minio: create bucket %s: %v", name, err)
	}
	return name
}

// NewLockedBucket creates a bucket with S3 Object Lock on and a default retention of days in
// compliance mode, the strictest write-once setting: no version can be deleted or overwritten in
// place until it expires, not even by the root user. It proves that a writer never needs to.
func (s *S3Server) NewLockedBucket(t testing.TB, days int32) string {
	t.Helper()
	name := uniqueName("walship-locked")
	ctx := context.Background()
	c := s.Client()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name),
		ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("testenv: minio: create locked bucket %s: %v", name, err)
	}
	if _, err := c.PutObjectLockConfiguration(ctx, &s3.PutObjectLockConfigurationInput{
		Bucket: aws.String(name),
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule: &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{
				Mode: types.ObjectLockRetentionModeCompliance, Days: aws.Int32(days)}},
		},
	}); err != nil {
		t.Fatalf("testenv: minio: set object lock on %s: %v", name, err)
	}
	return name
}

// Kill stops the server at once, for tests of a store that stops answering.
func (s *S3Server) Kill(t testing.TB) {
	t.Helper()
	s.proc.kill()
}
