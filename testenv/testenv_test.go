package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ready logs how long a server took to start, so a slow one shows in `go test -v`.
func ready(t *testing.T, what string, start time.Time) {
	t.Logf("%s ready in %s", what, time.Since(start).Round(time.Millisecond))
}

func TestMinIO(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := MinIO(t)
	ready(t, "minio", start)

	bucket := s.NewBucket(t)
	c := s.Client()
	ctx := context.Background()
	want := []byte("walship")
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b"),
		Body: bytes.NewReader(want)}); err != nil {
		t.Fatalf("put: %v", err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b")})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer out.Body.Close()
	got, err := io.ReadAll(out.Body)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get: got %q (%v), want %q", got, err, want)
	}
	if other := s.NewBucket(t); other == bucket {
		t.Fatalf("NewBucket returned %q twice", bucket)
	}
}

// TestMinIOTLS round-trips an object over HTTPS with a client that trusts only the returned CA.
func TestMinIOTLS(t *testing.T) {
	t.Parallel()
	s, ca := MinIOTLS(t)
	if !strings.HasPrefix(s.Endpoint, "https://") {
		t.Fatalf("endpoint %s is not https", s.Endpoint)
	}
	if _, err := os.Stat(ca); err != nil {
		t.Fatalf("CA file: %v", err)
	}
	bucket := s.NewBucket(t)
	ctx := context.Background()
	if _, err := s.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"),
		Body: bytes.NewReader([]byte("v"))}); err != nil {
		t.Fatalf("put over https: %v", err)
	}
	if _, err := plainHTTP.Get(s.Endpoint + "/minio/health/ready"); err == nil {
		t.Fatalf("a client without the CA trusted the self-signed certificate")
	}
}

// TestMinIOLockedBucket checks that a locked bucket refuses to delete what it holds.
func TestMinIOLockedBucket(t *testing.T) {
	t.Parallel()
	s := MinIO(t)
	bucket := s.NewLockedBucket(t, 1)
	c := s.Client()
	ctx := context.Background()
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"),
		Body: bytes.NewReader([]byte("v"))})
	if err != nil {
		t.Fatalf("put into a locked bucket: %v", err)
	}
	if put.VersionId == nil {
		t.Fatalf("put into a locked bucket: no version id, so versioning is off")
	}
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"),
		VersionId: put.VersionId}); err == nil {
		t.Fatalf("deleting a version under compliance retention succeeded")
	}
}

func TestFakeGCS(t *testing.T) {
	t.Parallel()
	start := time.Now()
	g := FakeGCS(t)
	ready(t, "fake-gcs-server", start)

	bucket := g.NewBucket(t)
	resp, err := plainHTTP.Get("http://" + g.Host + "/storage/v1/b?project=test")
	if err != nil {
		t.Fatalf("list buckets: %v", err)
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct{ Name string } `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("list buckets: %s: %v", resp.Status, err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != bucket {
		t.Fatalf("buckets: got %+v, want just %q", list.Items, bucket)
	}
}

func TestAzurite(t *testing.T) {
	t.Parallel()
	start := time.Now()
	a := Azurite(t)
	ready(t, "azurite", start)

	name := a.NewContainer(t)
	resp, err := plainHTTP.Get(a.Endpoint + "/" + name + "?restype=container")
	if err != nil {
		t.Fatalf("container properties: %v", err)
	}
	resp.Body.Close()
	// Unsigned, so refused, but refused as unauthorised rather than as a missing container.
	if resp.StatusCode == 404 {
		t.Fatalf("container %s: got 404 after NewContainer", name)
	}
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	start := time.Now()
	p := StartPostgres(t, PostgresOptions{DataChecksums: true, Conf: []string{"wal_level = replica"},
		Env: []string{"WALSHIP_TESTENV=yes"}})
	ready(t, "postgres (initdb + start)", start)

	if got := p.Psql(t, "select 1"); got != "1" {
		t.Fatalf("select 1: got %q, want 1", got)
	}
	for sql, want := range map[string]string{
		"show wal_level":      "replica",
		"show data_checksums": "on",
		"show port":           strconv.Itoa(p.Port),
	} {
		if got := p.Psql(t, sql); got != want {
			t.Errorf("%s: got %q, want %q", sql, got, want)
		}
	}
	if got := p.RunAs(t, "pg_controldata", "-D", p.DataDir); !strings.Contains(got, "in production") {
		t.Errorf("pg_controldata: state not in production:\n%s", got)
	}
	p.Stop(t)
	if got := p.RunAs(t, "pg_controldata", "-D", p.DataDir); !strings.Contains(got, "shut down") {
		t.Errorf("pg_controldata after Stop: not shut down:\n%s", got)
	}
}

// TestPostgresBaseBackup restores a pg_basebackup of one cluster as a second one, the way the
// recovery tests do, and restarts it after a crash.
func TestPostgresBaseBackup(t *testing.T) {
	t.Parallel()
	primary := StartPostgres(t, PostgresOptions{})
	primary.Psql(t, "create table t as select generate_series(1, 100) i")
	dir := EmptyDataDir(t)
	primary.RunAs(t, "pg_basebackup", "-D", dir, "-X", "stream", "--checkpoint=fast", "--no-sync")

	restored := NewPostgresFromDataDir(t, dir, PostgresOptions{})
	if restored.Port == primary.Port || restored.SocketDir == primary.SocketDir {
		t.Fatalf("restored cluster shares port %d or socket %s with its source", restored.Port, restored.SocketDir)
	}
	restored.Start(t)
	restored.WaitFor(t, "select count(*) from t", "100", 30*time.Second)
	restored.Psql(t, "insert into t values (101)")
	restored.Kill(t)
	restored.Start(t)
	if got := restored.Psql(t, "select count(*) from t"); got != "101" {
		t.Fatalf("rows after crash recovery: got %s, want 101", got)
	}
	if !strings.Contains(restored.Log(), "database system was interrupted") {
		t.Errorf("no crash recovery in the log:\n%s", restored.Log())
	}
}

func TestMariaDB(t *testing.T) {
	t.Parallel()
	start := time.Now()
	m := StartMariaDB(t, MariaDBOptions{})
	ready(t, "mariadb (install-db + start)", start)

	if got := m.SQL(t, "select 1"); got != "1" {
		t.Fatalf("select 1: got %q, want 1", got)
	}
	if got := m.SQL(t, "select @@log_bin, @@binlog_format"); got != "1\tROW" {
		t.Fatalf("binary log: got %q, want 1\\tROW", got)
	}
	m.SQL(t, "create database w; create table w.t (i int); insert into w.t values (1)")
	m.Stop(t)
	if log := lastLines(m.logPath, 5); !strings.Contains(log, "Shutdown complete") {
		t.Fatalf("Stop did not shut down cleanly; log ends:\n%s", log)
	}
	m.Start(t)
	m.SQL(t, "insert into w.t values (2)")
	m.Kill(t)
	m.Start(t)
	if got := m.SQL(t, "select count(*) from w.t"); got != "2" {
		t.Fatalf("rows after stop, kill and restarts: got %s, want 2", got)
	}
}

// TestRestartOnTakenPort takes a server's port while it is stopped: the restart must move to a free
// port instead of failing, as it must when FreePort's answer is taken before the server binds it.
func TestRestartOnTakenPort(t *testing.T) {
	t.Parallel()
	take := func(port int) {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("take port %d: %v", port, err)
		}
		t.Cleanup(func() { l.Close() })
	}

	p := StartPostgres(t, PostgresOptions{})
	p.Stop(t)
	old := p.Port
	take(old)
	p.Start(t)
	if p.Port == old || p.Psql(t, "show port") != strconv.Itoa(p.Port) {
		t.Errorf("postgres: port %d after restart with %d taken", p.Port, old)
	}

	m := StartMariaDB(t, MariaDBOptions{})
	m.Stop(t)
	old = m.Port
	take(old)
	m.Start(t)
	if m.Port == old || m.SQL(t, "select @@port") != strconv.Itoa(m.Port) {
		t.Errorf("mariadb: port %d after restart with %d taken", m.Port, old)
	}
}

// TestToxiproxy sends bytes through a proxy to a local listener, then takes the proxy down.
func TestToxiproxy(t *testing.T) {
	t.Parallel()
	start := time.Now()
	x := StartToxiproxy(t)
	ready(t, "toxiproxy", start)

	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}
	}()
	addr := x.Proxy(t, "echo", up.Addr().String())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("walship")); err != nil {
		t.Fatalf("write through proxy: %v", err)
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "walship" {
		t.Fatalf("echo through proxy: got %q (%v), want walship", got, err)
	}
	c.Close()
	if err := x.SetEnabled("echo", false); err != nil {
		t.Fatalf("disable proxy: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("dial succeeded through a disabled proxy")
	}
}
