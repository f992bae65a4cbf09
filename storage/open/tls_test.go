package open

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePEM writes the certificates of der as a PEM file and returns its path.
func writePEM(t *testing.T, der ...[]byte) string {
	t.Helper()
	var b strings.Builder
	for _, d := range der {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// otherCA is a self-signed certificate that signed nothing the test servers use.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "another CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func get(t *testing.T, c *http.Client, url string) error {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// TestCAFileVerifies checks that ca_file adds trust without removing a check: the server whose
// certificate the file holds is trusted, under the names of that certificate only; a server
// signed by anyone else is refused.
func TestCAFileVerifies(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]

	c, err := caClient(writePEM(t, srv.Certificate().Raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := get(t, c, "https://127.0.0.1"+port); err != nil {
		t.Fatalf("the server of ca_file's certificate: %v", err)
	}
	// httptest's certificate names example.com, 127.0.0.1 and ::1, not localhost.
	var hostErr x509.HostnameError
	if err := get(t, c, "https://localhost"+port); !errors.As(err, &hostErr) {
		t.Fatalf("a name the certificate does not hold: %v, want a host name error", err)
	}

	c, err = caClient(writePEM(t, otherCA(t)))
	if err != nil {
		t.Fatal(err)
	}
	var authErr x509.UnknownAuthorityError
	if err := get(t, c, "https://127.0.0.1"+port); !errors.As(err, &authErr) {
		t.Fatalf("a server ca_file did not sign: %v, want an unknown authority error", err)
	}
}

// TestCAFileKeepsSystemRoots checks that a server signed by a system root is still trusted with
// a ca_file that does not hold its authority. The system roots are loaded once per process, so
// the check runs in a child whose SSL_CERT_FILE makes the test server's certificate a system root.
func TestCAFileKeepsSystemRoots(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	if os.Getenv("WALSHIP_TLS_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCAFileKeepsSystemRoots$", "-test.v")
		cmd.Env = append(os.Environ(), "WALSHIP_TLS_CHILD=1", "SSL_CERT_FILE="+writePEM(t, srv.Certificate().Raw), "SSL_CERT_DIR=/nonexistent")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	// In the child the server is a new one, with the same certificate (httptest's is fixed).
	c, err := caClient(writePEM(t, otherCA(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := get(t, c, srv.URL); err != nil {
		t.Fatalf("a server signed by a system root, with an unrelated ca_file: %v", err)
	}
}
