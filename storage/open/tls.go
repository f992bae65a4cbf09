package open

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
)

// caClient returns an HTTP client that trusts the PEM certificates in caFile plus the system
// roots. Verification stays on: the option adds trust, it never removes checks.
//
// The server's chain is verified against caFile's certificates first and against the system
// roots only when that fails. Loading the system roots parses every certificate of the system
// bundle, about 10 ms of CPU, which each wal-push and wal-fetch call (a process of its own) would
// otherwise pay even when caFile's certificate is the one the server uses, as it is with a
// self-signed endpoint.
func caClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file=%s: %w", caFile, err)
	}
	own := x509.NewCertPool()
	if !own.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file=%s: no PEM certificate in the file", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The built-in verification takes one root pool; verifyChain does the same checks (the
		// chain to a trusted root, validity, the server's name) against two pools in turn.
		// VerifyConnection runs on every handshake, resumed ones included.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyChain(cs, own) },
	}
	return &http.Client{Transport: tr}, nil
}

// verifyChain verifies the server's certificate chain for the name dialled, against own and
// then against the system roots.
func verifyChain(cs tls.ConnectionState, own *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	opts := x509.VerifyOptions{DNSName: cs.ServerName, Intermediates: x509.NewCertPool(), Roots: own}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	_, err := leaf.Verify(opts)
	if err == nil {
		return nil
	}
	opts.Roots = nil // the system roots
	if _, sysErr := leaf.Verify(opts); sysErr == nil {
		return nil
	}
	// The error against ca_file names what is wrong with the certificate the user meant to trust
	// (another authority, another host name, expired).
	return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
}
