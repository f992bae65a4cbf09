package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
)

// Toxiproxy is a fault-injecting TCP proxy (github.com/Shopify/toxiproxy) driven over its REST API.
type Toxiproxy struct {
	api string
}

// StartToxiproxy starts toxiproxy-server on a free port.
func StartToxiproxy(t testing.TB) *Toxiproxy {
	t.Helper()
	exe := bin(t, filepath.Join(CacheDir(), "bin", "toxiproxy-server"))
	port := FreePort(t)
	x := &Toxiproxy{api: fmt.Sprintf("http://127.0.0.1:%d", port)}
	p := start(t, "toxiproxy", exec.Command(exe, "-host", "127.0.0.1", "-port", fmt.Sprint(port)), filepath.Join(t.TempDir(), "toxiproxy.log"))
	p.waitReady(t, httpReady(x.api+"/version", http.StatusOK))
	return x
}

func (x *Toxiproxy) call(method, path string, body any) error {
	var b bytes.Buffer
	if body != nil {
		json.NewEncoder(&b).Encode(body)
	}
	req, err := http.NewRequest(method, x.api+path, &b)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("toxiproxy %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return nil
}

// Proxy creates a proxy named name to upstream (host:port) and returns its listen address.
func (x *Toxiproxy) Proxy(t testing.TB, name, upstream string) string {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	if err := x.call(http.MethodPost, "/proxies", map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true}); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return listen
}

// SetEnabled takes the proxy down (refusing and cutting connections) or brings it back.
func (x *Toxiproxy) SetEnabled(name string, on bool) error {
	return x.call(http.MethodPost, "/proxies/"+name, map[string]any{"enabled": on})
}

// AddToxic adds a toxic (latency, bandwidth, timeout, reset_peer, slicer, limit_data…) to the
// downstream or upstream direction.
func (x *Toxiproxy) AddToxic(proxy, name, typ, stream string, attrs map[string]int) error {
	return x.call(http.MethodPost, "/proxies/"+proxy+"/toxics",
		map[string]any{"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs})
}

// RemoveToxic removes a toxic.
func (x *Toxiproxy) RemoveToxic(proxy, name string) error {
	return x.call(http.MethodDelete, "/proxies/"+proxy+"/toxics/"+name, nil)
}
