package testenv

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func timed(t *testing.T, what string) func() {
	start := time.Now()
	return func() { t.Logf("%s ready in %s", what, time.Since(start).Round(time.Millisecond)) }
}

func TestMinIO(t *testing.T) {
	done := timed(t, "minio")
	s := MinIO(t)
	done()
	b := s.NewBucket(t)
	c := s.Client()
	ctx := context.Background()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b), Key: aws.String("k"), Body: bytes.NewReader([]byte("v"))}); err != nil {
		t.Fatal(err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	if string(got) != "v" {
		t.Fatalf("got %q", got)
	}
}

func TestFakeGCS(t *testing.T) {
	done := timed(t, "fake-gcs-server")
	g := FakeGCS(t)
	done()
	if g.NewBucket(t) == "" {
		t.Fatal("no bucket")
	}
}

func TestAzurite(t *testing.T) {
	done := timed(t, "azurite")
	a := Azurite(t)
	done()
	if a.NewContainer(t) == "" {
		t.Fatal("no container")
	}
}

func TestPostgres(t *testing.T) {
	done := timed(t, "postgres (initdb + start)")
	p := StartPostgres(t, PostgresOptions{Conf: []string{"wal_level = replica"}})
	done()
	if got := p.Psql(t, "select 1"); got != "1" {
		t.Fatalf("select 1: %q", got)
	}
	if got := p.Psql(t, "show wal_level"); got != "replica" {
		t.Fatalf("conf not applied: wal_level %q", got)
	}
	p.Stop(t)
}

func TestMariaDB(t *testing.T) {
	done := timed(t, "mariadb")
	m := StartMariaDB(t, MariaDBOptions{})
	done()
	if got := m.SQL(t, "select 1"); got != "1" {
		t.Fatalf("select 1: %q", got)
	}
	if got := m.SQL(t, "select @@log_bin"); got != "1" {
		t.Fatalf("binary log off: %q", got)
	}
}
