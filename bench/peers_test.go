package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/walship/walship/testenv"
)

// lab is what every tool of the comparison shares: the corpus and one MinIO serving HTTPS with a
// self-signed certificate (pgBackRest's S3 client speaks only HTTPS), with one bucket.
type lab struct {
	c      corpus
	minio  *testenv.S3Server
	ca     string // the certificate MinIO serves, trusted explicitly by every tool
	bucket string
	port   string
	work   string // postgres-owned scratch for repositories, spools and configurations
}

func newLab(b *testing.B, c corpus) *lab {
	srv, ca := testenv.MinIOTLS(b)
	l := &lab{c: c, minio: srv, ca: ca, bucket: srv.NewBucket(b), work: testenv.PostgresOwnedDir(b)}
	l.port = srv.Endpoint[strings.LastIndex(srv.Endpoint, ":")+1:]
	// The postgres user runs restore_command during recovery and must read the certificate.
	dst := filepath.Join(l.work, "ca.pem")
	mustRun(b, "cp", ca, dst)
	os.Chmod(dst, 0o644)
	l.ca = dst
	return l
}

// dir makes a fresh directory under the lab's scratch, owned by postgres, readable by all.
func (l *lab) dir(b *testing.B, name string) string {
	d, err := os.MkdirTemp(l.work, name+"-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(d, 0o755)
	testenv.ChownPostgres(b, d)
	return d
}

// storedUnder sums the sizes of the objects under prefix in the lab's bucket.
func (l *lab) storedUnder(b *testing.B, prefix string) int64 {
	var n int64
	p := s3.NewListObjectsV2Paginator(l.minio.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(l.bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			b.Fatalf("bench: list %s: %v", prefix, err)
		}
		for _, o := range page.Contents {
			n += aws.ToInt64(o.Size)
		}
	}
	return n
}

// tool is one archiver, in one configuration, as PostgreSQL would call it.
type tool struct {
	name        string
	compression string
	// open makes a new, empty archive for one run.
	open func(b *testing.B, l *lab) archive
}

// archive is one empty archive of a tool. Commands run with the data directory as their
// working directory and %p relative to it, as PostgreSQL runs them.
type archive struct {
	env []string
	// push is the archive_command for walPath ("pg_wal/NAME") in dataDir.
	push func(dataDir, walPath string) []string
	// fetch is the restore_command for name into dst; spool is a fresh directory per run, for
	// the tools that prefetch.
	fetch func(dataDir, name, dst, spool string) []string
	// stored is how many bytes the archive holds.
	stored func() int64
}

// restoreCommand is fetch as a restore_command line for postgresql.conf.
func (a archive) restoreCommand(dataDir, spool string) string {
	argv := a.fetch(dataDir, "%f", "%p", spool)
	for i, s := range argv {
		if s != "%f" && s != "%p" {
			argv[i] = "'" + s + "'"
		}
	}
	return strings.ReplaceAll(strings.Join(argv, " "), "'", "''")
}

// cpTool is the limit: cp of each segment into a local directory and an fsync of the copy.
var cpTool = tool{name: "cp+fsync", compression: "none", open: func(b *testing.B, l *lab) archive {
	repo := l.dir(b, "cp")
	return archive{
		push: func(_, p string) []string {
			return []string{"/bin/sh", "-c", `cp "$0" "$1/" && sync "$1/${0##*/}"`, p, repo}
		},
		fetch:  func(_, name, dst, _ string) []string { return []string{"cp", filepath.Join(repo, name), dst} },
		stored: func() int64 { return duBytes(repo) },
	}
}}

// walshipTool archives to file:// or, with s3 set, to the lab's MinIO.
func walshipTool(name string, s3 bool, pushArgs ...string) tool {
	return tool{name: name, compression: "zstd (default level)", open: func(b *testing.B, l *lab) archive {
		var url string
		var stored func() int64
		var env []string
		if s3 {
			prefix := filepath.Base(l.dir(b, "walship"))
			url = fmt.Sprintf("s3://%s/%s?endpoint=%s&ca_file=%s", l.bucket, prefix, l.minio.Endpoint, l.ca)
			stored = func() int64 { return l.storedUnder(b, prefix+"/") }
			env = []string{"AWS_ACCESS_KEY_ID=" + l.minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + l.minio.SecretKey,
				"AWS_REGION=" + l.minio.Region, "AWS_EC2_METADATA_DISABLED=true"}
		} else {
			repo := l.dir(b, "walship-file")
			url = "file://" + repo
			stored = func() int64 { return duBytes(repo) }
		}
		return archive{
			env: env,
			push: func(_, p string) []string {
				return append(append([]string{walship, "wal-push", "--storage", url}, pushArgs...), p)
			},
			fetch: func(_, name, dst, spool string) []string {
				return []string{walship, "wal-fetch", "--storage", url, "--spool-dir", spool, name, dst}
			},
			stored: stored,
		}
	}}
}

// pgbackrestTool archives with pgBackRest to a posix repository or to the lab's MinIO, with zstd
// at pgBackRest's default level (3), synchronously or with archive-async=y and two processes
// (one per core here). Each archive is a stanza of its own, created offline from the base
// backup's pg_control.
func pgbackrestTool(name string, s3repo, async bool) tool {
	return tool{name: name, compression: "zstd level 3 (pgBackRest default)", open: func(b *testing.B, l *lab) archive {
		base := l.dir(b, "pgbackrest")
		conf := []string{"[global]", "compress-type=zst", "log-level-console=warn", "log-level-file=off",
			"lock-path=" + filepath.Join(base, "lock")}
		var stored func() int64
		if s3repo {
			conf = append(conf, "repo1-type=s3", "repo1-path=/"+filepath.Base(base), "repo1-s3-bucket="+l.bucket,
				// pgBackRest 2.45 matches the certificate by DNS name only, not by IP address.
				"repo1-s3-endpoint=localhost", "repo1-storage-port="+l.port, "repo1-s3-region="+l.minio.Region,
				"repo1-s3-key="+l.minio.AccessKey, "repo1-s3-key-secret="+l.minio.SecretKey,
				"repo1-s3-uri-style=path", "repo1-storage-ca-file="+l.ca)
			stored = func() int64 { return l.storedUnder(b, filepath.Base(base)+"/archive/") }
		} else {
			repo := filepath.Join(base, "repo")
			conf = append(conf, "repo1-type=posix", "repo1-path="+repo)
			stored = func() int64 { return duBytes(filepath.Join(repo, "archive")) }
		}
		if async {
			conf = append(conf, "archive-async=y", "process-max=2")
		}
		conf = append(conf, "[bench]", "pg1-path="+l.c.backup)
		path := filepath.Join(base, "pgbackrest.conf")
		if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		run := func(dataDir, spool string, cmd ...string) []string {
			argv := []string{"pgbackrest", "--config=" + path, "--stanza=bench", "--pg1-path=" + dataDir}
			if async {
				argv = append(argv, "--spool-path="+spool)
			}
			return append(argv, cmd...)
		}
		stanza := exec.Command("pgbackrest", "--config="+path, "--stanza=bench", "--no-online", "stanza-create")
		if out, err := stanza.CombinedOutput(); err != nil {
			b.Fatalf("bench: pgbackrest stanza-create: %v\n%s", err, out)
		}
		// Each push run gets its own spool under the data directory's parent.
		return archive{
			push: func(dataDir, p string) []string {
				return run(dataDir, filepath.Join(filepath.Dir(dataDir), "pgbackrest-spool"), "archive-push", p)
			},
			// The postgres user runs restore_command, so the fetch's locks go to its own spool.
			fetch: func(dataDir, name, dst, spool string) []string {
				return run(dataDir, spool, "--lock-path="+filepath.Join(spool, "lock"), "archive-get", name, dst)
			},
			stored: stored,
		}
	}}
}

// barmanTool archives with barman-cloud to the lab's MinIO. barman-cloud 3.4 offers gzip, bzip2
// and snappy, not zstd: gzip is its usual choice.
var barmanTool = tool{name: "barman-cloud s3", compression: "gzip (barman-cloud 3.4 has no zstd)", open: func(b *testing.B, l *lab) archive {
	prefix := filepath.Base(l.dir(b, "barman"))
	dest := "s3://" + l.bucket + "/" + prefix
	endpoint := "--endpoint-url=https://127.0.0.1:" + l.port
	return archive{
		env: []string{"AWS_ACCESS_KEY_ID=" + l.minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + l.minio.SecretKey,
			"AWS_DEFAULT_REGION=" + l.minio.Region, "AWS_CA_BUNDLE=" + l.ca, "AWS_EC2_METADATA_DISABLED=true"},
		push: func(_, p string) []string {
			return []string{"barman-cloud-wal-archive", endpoint, "--gzip", dest, "bench", p}
		},
		fetch: func(_, name, dst, _ string) []string {
			return []string{"barman-cloud-wal-restore", endpoint, dest, "bench", name, dst}
		},
		stored: func() int64 { return l.storedUnder(b, prefix+"/") },
	}
}}
