package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

// AzureServer is Azurite's blob service with its well-known development account.
type AzureServer struct {
	Endpoint         string // http://127.0.0.1:P/devstoreaccount1
	Account          string
	Key              string
	ConnectionString string

	proc *process
}

// Azurite's fixed development account, the same in every Azurite install.
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite starts azurite-blob from CacheDir()/azurite (an npm install). --skipApiVersionCheck is
// required because azblob sends an API version newer than Azurite knows. --loose is deliberately
// absent: it makes Azurite ignore checksum headers, which the integrity tests rely on.
func Azurite(t testing.TB) *AzureServer {
	t.Helper()
	exe := bin(t, filepath.Join(CacheDir(), "azurite", "node_modules", ".bin", "azurite-blob"))
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("testenv: node not found in PATH (Azurite needs it): run scripts/install-test-deps")
	}
	dir := t.TempDir()
	a := &AzureServer{Account: azuriteAccount, Key: azuriteKey}
	a.proc = serve(t, "azurite", filepath.Join(dir, "azurite.log"), func() (*exec.Cmd, func() bool) {
		port := FreePort(t)
		a.Endpoint = fmt.Sprintf("http://127.0.0.1:%d/%s", port, a.Account)
		a.ConnectionString = fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
			a.Account, a.Key, a.Endpoint)
		cmd := exec.Command(exe, "--skipApiVersionCheck", "--disableTelemetry", "--silent",
			"--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port), "--location", filepath.Join(dir, "data"))
		return cmd, azuriteReady(fmt.Sprintf("127.0.0.1:%d", port), a.Endpoint+"?comp=list")
	})
	return a
}

// azuriteReady checks the port first, which is cheap while node is still loading, then that an
// HTTP request gets an answer: any status will do, since an unsigned request is refused.
func azuriteReady(addr, url string) func() bool {
	answers := httpReady(url, 0)
	return func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return answers()
	}
}

// NewContainer creates a container no other test uses and returns its name.
func (a *AzureServer) NewContainer(t testing.TB) string {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(a.ConnectionString,
		&azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: &http.Client{}}})
	if err != nil {
		t.Fatalf("testenv: azurite: client: %v", err)
	}
	name := uniqueName("walship")
	if _, err := c.CreateContainer(context.Background(), name, nil); err != nil {
		t.Fatalf("testenv: azurite: create container %s: %v", name, err)
	}
	return name
}

// Kill stops the server at once, for tests of a store that stops answering.
func (a *AzureServer) Kill(t testing.TB) {
	t.Helper()
	a.proc.kill()
}
