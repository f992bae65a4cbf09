package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 (its own CA) and its key into dir as
// public.crt and private.key, MinIO's names, and returns the certificate's path.
func selfSigned(t testing.TB, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "walship test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	crt := filepath.Join(dir, "public.crt")
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "private.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return crt
}

// MinIOTLS starts MinIO serving HTTPS with a self-signed certificate; CAFile is that certificate.
func MinIOTLS(t testing.TB) (*S3Server, string) {
	t.Helper()
	exe := bin(t, filepath.Join(CacheDir(), "bin", "minio"))
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	os.MkdirAll(certs, 0o700)
	ca := selfSigned(t, certs)
	port, cport := FreePort(t), FreePort(t)
	s := &S3Server{Endpoint: fmt.Sprintf("https://127.0.0.1:%d", port), Region: "us-east-1",
		AccessKey: "walshiptest", SecretKey: "walshiptest-secret-key"}
	cmd := exec.Command(exe, "server", filepath.Join(dir, "data"), "--quiet", "--certs-dir", certs,
		"--address", fmt.Sprintf("127.0.0.1:%d", port), "--console-address", fmt.Sprintf("127.0.0.1:%d", cport))
	cmd.Env = append(cmd.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.proc = start(t, "minio (tls)", cmd, filepath.Join(dir, "minio.log"))
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(b)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	s.proc.waitReady(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/minio/health/ready", nil)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	s.httpClient = client
	return s, ca
}
