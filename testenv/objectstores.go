package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3Server is a MinIO server.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:P
	Region    string
	AccessKey string
	SecretKey string
	proc      *process
	// httpClient trusts the server's certificate when it serves HTTPS.
	httpClient *http.Client
}

// MinIO starts a single-drive MinIO server.
func MinIO(t testing.TB) *S3Server {
	t.Helper()
	exe := bin(t, filepath.Join(CacheDir(), "bin", "minio"))
	dir := t.TempDir()
	port, cport := FreePort(t), FreePort(t)
	s := &S3Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Region: "us-east-1",
		AccessKey: "walshiptest", SecretKey: "walshiptest-secret-key"}
	cmd := exec.Command(exe, "server", filepath.Join(dir, "data"), "--quiet",
		"--address", fmt.Sprintf("127.0.0.1:%d", port), "--console-address", fmt.Sprintf("127.0.0.1:%d", cport))
	cmd.Env = append(cmd.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.proc = start(t, "minio", cmd, filepath.Join(dir, "minio.log"))
	s.proc.waitReady(t, httpReady(s.Endpoint+"/minio/health/ready", http.StatusOK))
	return s
}

// Client returns an S3 client for the server with explicit credentials, region and transport,
// independent of any AWS_* variables in the environment.
func (s *S3Server) Client() *s3.Client {
	hc := s.httpClient
	if hc == nil {
		hc = &http.Client{}
	}
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   hc,
	})
}

// NewBucket creates a bucket with a unique name.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(uniqueName("b"))
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("testenv: create bucket %s: %v", name, err)
	}
	return name
}

// NewLockedBucket creates a bucket with S3 Object Lock and a default compliance retention of
// days: nothing in it can be overwritten or deleted until then.
func (s *S3Server) NewLockedBucket(t testing.TB, days int32) string {
	t.Helper()
	name := strings.ToLower(uniqueName("lock"))
	c := s.Client()
	ctx := context.Background()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("testenv: create locked bucket: %v", err)
	}
	_, err := c.PutObjectLockConfiguration(ctx, &s3.PutObjectLockConfigurationInput{Bucket: aws.String(name),
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule: &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{
				Mode: types.ObjectLockRetentionModeCompliance, Days: aws.Int32(days)}},
		}})
	if err != nil {
		t.Fatalf("testenv: object lock configuration: %v", err)
	}
	return name
}

// Stop kills the server (tests of an unreachable store).
func (s *S3Server) Stop() { s.proc.kill() }

// GCSServer is a fake-gcs-server.
type GCSServer struct {
	Host string // 127.0.0.1:P, the value for STORAGE_EMULATOR_HOST
}

// FakeGCS starts fake-gcs-server in memory. -public-host equals Host so that the client's XML
// reads are routed (see shared/EMULATORS.md).
func FakeGCS(t testing.TB) *GCSServer {
	t.Helper()
	exe := bin(t, filepath.Join(CacheDir(), "bin", "fake-gcs-server"))
	dir := t.TempDir()
	port := FreePort(t)
	g := &GCSServer{Host: fmt.Sprintf("127.0.0.1:%d", port)}
	cmd := exec.Command(exe, "-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
		"-backend", "memory", "-public-host", g.Host, "-log-level", "error")
	p := start(t, "fake-gcs-server", cmd, filepath.Join(dir, "gcs.log"))
	p.waitReady(t, httpReady("http://"+g.Host+"/storage/v1/b", http.StatusOK))
	return g
}

// NewBucket creates a bucket with a unique name through the JSON API.
func (g *GCSServer) NewBucket(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(uniqueName("b"))
	resp, err := http.Post("http://"+g.Host+"/storage/v1/b?project=test", "application/json",
		strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
	if err != nil {
		t.Fatalf("testenv: create GCS bucket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testenv: create GCS bucket %s: HTTP %d", name, resp.StatusCode)
	}
	return name
}

// AzureServer is an Azurite blob server.
type AzureServer struct {
	Endpoint         string // http://127.0.0.1:P/devstoreaccount1
	Account          string
	Key              string
	ConnectionString string
}

// azuriteKey is Azurite's well-known development account key.
const azuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// Azurite starts Azurite's blob service. --skipApiVersionCheck is needed for azblob v1.8.3, and
// --loose is deliberately absent so checksum headers are enforced.
func Azurite(t testing.TB) *AzureServer {
	t.Helper()
	exe := bin(t, filepath.Join(CacheDir(), "azurite", "node_modules", ".bin", "azurite-blob"))
	dir := t.TempDir()
	port := FreePort(t)
	a := &AzureServer{Endpoint: fmt.Sprintf("http://127.0.0.1:%d/devstoreaccount1", port), Account: "devstoreaccount1", Key: azuriteKey}
	a.ConnectionString = fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", a.Account, a.Key, a.Endpoint)
	cmd := exec.Command(exe, "--skipApiVersionCheck", "--disableTelemetry", "--silent", "--blobHost", "127.0.0.1",
		"--blobPort", fmt.Sprint(port), "--location", filepath.Join(dir, "data"))
	p := start(t, "azurite", cmd, filepath.Join(dir, "azurite.log"))
	p.waitReady(t, httpReady(a.Endpoint+"?comp=list", 0))
	return a
}

// NewContainer creates a container with a unique name.
func (a *AzureServer) NewContainer(t testing.TB) string {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(a.ConnectionString, nil)
	if err != nil {
		t.Fatalf("testenv: azure client: %v", err)
	}
	name := strings.ToLower(uniqueName("c"))
	if _, err := c.CreateContainer(context.Background(), name, nil); err != nil {
		t.Fatalf("testenv: create container %s: %v", name, err)
	}
	return name
}
