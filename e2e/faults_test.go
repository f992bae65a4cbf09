package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/walship/walship/layout"
	"github.com/walship/walship/storage"
	"github.com/walship/walship/testenv"

	"github.com/zeebo/xxh3"
)

// archivedCluster runs a primary that archives a few segments through walship and returns it
// with the names of the archived segments.
func archivedCluster(t *testing.T, tg target, switches int) (*testenv.Postgres, []string) {
	pg := startPrimary(t, tg)
	var names []string
	for i := 0; i < switches; i++ {
		pg.Psql(t, fmt.Sprintf("create table t%d as select g, md5(g::text) from generate_series(1, 20000) g", i))
		names = append(names, switchAndWait(t, pg))
	}
	return pg, names
}

// damage rewrites an object's stored bytes in place (bit rot, a torn write, a swapped file),
// bypassing walship, keeping the metadata.
func damage(t *testing.T, st storage.Store, key string, f func([]byte) []byte) {
	t.Helper()
	rc, info, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	st.Delete(context.Background(), key)
	if err := st.Put(context.Background(), key, bytes.NewReader(f(b)), info.Metadata); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptionDetected damages random archived objects in several ways; every wal-fetch of a
// damaged one must fail without touching %p, verify must name every one, and the others must
// still restore, byte for byte. The counts are reported as FIGURES.
func TestCorruptionDetected(t *testing.T) {
	for _, mk := range []func(*testing.T) target{fileTarget, s3Target} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) {
			pg, names := archivedCluster(t, tg, 8) // 5 to damage, 3 to restore intact
			st := tg.store(t)
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
			frames := map[string][]byte{}
			for _, n := range names {
				key, _ := layout.WALKey(n)
				rc, _, _ := st.Get(context.Background(), key)
				frames[n], _ = io.ReadAll(rc)
				rc.Close()
			}
			kinds := []struct {
				name string
				f    func(n string, b []byte) []byte
			}{
				{"flip", func(_ string, b []byte) []byte { b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8)); return b }},
				{"truncate", func(_ string, b []byte) []byte { return b[:rng.IntN(len(b))] }},
				{"empty", func(string, []byte) []byte { return nil }},
				{"swap", func(n string, b []byte) []byte {
					for _, o := range names {
						if o != n {
							return frames[o]
						}
					}
					return nil
				}},
				{"append", func(_ string, b []byte) []byte { return append(b, 0) }},
			}
			damaged := map[string]string{}
			for i, k := range kinds {
				n := names[i]
				key, _ := layout.WALKey(n)
				damage(t, st, key, func(b []byte) []byte { return k.f(n, b) })
				damaged[n] = k.name
			}
			data := t.TempDir()
			os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
			dest := filepath.Join(data, "pg_wal", "RECOVERYXLOG")
			var fig figures
			fig.faults = len(damaged)
			for _, n := range names {
				os.WriteFile(dest, []byte("previous content"), 0o600)
				code, out := run(t, tg, data, "wal-fetch", "--prefetch", "0", "--retry-for", "1s", n, "pg_wal/RECOVERYXLOG")
				fig.ops++
				got, _ := os.ReadFile(dest)
				if kind, bad := damaged[n]; bad {
					if code == 0 || string(got) != "previous content" {
						fig.wrong++
					}
					if code != 200 || string(got) != "previous content" {
						t.Errorf("%s (%s): exit %d, %%p changed=%v; want 200 and %%p untouched: %s", n, kind, code, string(got) != "previous content", out)
					}
					continue
				}
				src, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", n))
				switch {
				case err != nil:
					t.Fatalf("source of %s: %v", n, err)
				case code != 0:
					fig.lost++
					t.Errorf("undamaged %s: exit %d: %s", n, code, out)
				case !bytes.Equal(got, src):
					fig.wrong++
					t.Errorf("undamaged %s: exit 0, but the restored bytes differ from pg_wal's", n)
				default:
					fig.verified++
				}
			}
			code, out := run(t, tg, data, "verify")
			fig.ops++
			unreported := 0
			for n, kind := range damaged {
				if !strings.Contains(out, "CORRUPT "+n) {
					unreported++
					t.Errorf("verify did not report %s (%s):\n%s", n, kind, out)
				}
			}
			if code != 1 || !strings.Contains(out, fmt.Sprintf("%d failed", len(damaged))) {
				t.Errorf("verify: exit %d, want 1 with %d failures:\n%s", code, len(damaged), out)
			}
			fig.wrong += unreported // verify passing a damaged object is a wrong success too
			fig.note = fmt.Sprintf("damage %v; verify reported %d of %d damaged", damaged, len(damaged)-unreported, len(damaged))
			fig.report(t)
		})
	}
}

// TestObjectLockBucket: walship never overwrites, so it works on a bucket that enforces
// write-once retention (S3 Object Lock, compliance mode): archive, identical re-push, fetch. A
// different segment or .history under an archived name is refused naming both checksums, the
// stored copy is still the one served, and no key ever gets a second version.
func TestObjectLockBucket(t *testing.T) {
	srv := testenv.MinIO(t)
	bucket := srv.NewLockedBucket(t, 1)
	url := fmt.Sprintf("s3://%s/archive?endpoint=%s&region=%s", bucket, srv.Endpoint, srv.Region)
	tg := target{name: "s3-object-lock", url: url, env: []string{"WALSHIP_STORAGE=" + url,
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_EC2_METADATA_DISABLED=true"}}
	pg, names := archivedCluster(t, tg, 2)
	orig, err := os.ReadFile(filepath.Join(pg.DataDir, "pg_wal", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	pg.Stop(t) // its pg_control is copied below, and must not be rewritten meanwhile
	// dataDir is a fresh data directory (own spool, no markers) with the cluster's pg_control,
	// which wal-push reads to check a .history file's system.
	control, err := os.ReadFile(filepath.Join(pg.DataDir, "global", "pg_control"))
	if err != nil {
		t.Fatal(err)
	}
	dataDir := func() string {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, "pg_wal"), 0o700)
		os.MkdirAll(filepath.Join(d, "global"), 0o700)
		os.WriteFile(filepath.Join(d, "global", "pg_control"), control, 0o600)
		return d
	}
	push := func(name string, content []byte) (int, string) {
		d := dataDir()
		os.WriteFile(filepath.Join(d, "pg_wal", name), content, 0o600)
		return run(t, tg, d, "wal-push", "pg_wal/"+name)
	}
	fetched := func(name string) []byte {
		t.Helper()
		d := dataDir()
		if code, out := run(t, tg, d, "wal-fetch", "--prefetch", "0", name, "pg_wal/RECOVERYXLOG"); code != 0 {
			t.Fatalf("fetch %s from a locked bucket: exit %d: %s", name, code, out)
		}
		b, _ := os.ReadFile(filepath.Join(d, "pg_wal", "RECOVERYXLOG"))
		return b
	}
	conflict := func(what, name string, stored, local []byte) {
		t.Helper()
		code, out := push(name, local)
		a, l := xxh3.Hash128(stored).Bytes(), xxh3.Hash128(local).Bytes()
		if code != 1 || !strings.Contains(out, hex.EncodeToString(a[:])) || !strings.Contains(out, hex.EncodeToString(l[:])) {
			t.Errorf("%s: different content under archived %s: exit %d, %q; want 1 naming archived xxh3 %x and local %x",
				what, name, code, out, a, l)
		}
		if got := fetched(name); !bytes.Equal(got, stored) {
			t.Errorf("%s: after the refused push, %s fetches %d bytes that differ from the archived copy", what, name, len(got))
		}
	}

	if code, out := push(names[0], orig); code != 0 {
		t.Fatalf("identical re-push into a locked bucket: %s", out)
	}
	for _, n := range names {
		if got := fetched(n); n == names[0] && !bytes.Equal(got, orig) {
			t.Fatalf("fetch %s from a locked bucket: %d bytes that differ from pg_wal's", n, len(got))
		}
	}
	diff := bytes.Clone(orig)
	diff[len(diff)/2] ^= 0xff // past the page header: still a segment of this cluster, by name and header
	conflict("segment", names[0], orig, diff)

	const hist = "00000002.history"
	first := []byte("1\t0/3000000\tno recovery target specified\n")
	if code, out := push(hist, first); code != 0 {
		t.Fatalf("push %s into a locked bucket: exit %d: %s", hist, code, out)
	}
	if code, out := push(hist, first); code != 0 {
		t.Fatalf("identical re-push of %s into a locked bucket: exit %d: %s", hist, code, out)
	}
	conflict("history", hist, first, []byte("1\t0/4000000\tno recovery target specified\n"))

	if code, out := run(t, tg, dataDir(), "verify"); code != 0 {
		t.Fatalf("verify on a locked bucket: %s", out)
	}
	versions := map[string]int{}
	p := s3.NewListObjectVersionsPaginator(srv.Client(), &s3.ListObjectVersionsInput{Bucket: aws.String(bucket), Prefix: aws.String("archive/")})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Versions {
			versions[aws.ToString(v.Key)]++
		}
		for _, m := range page.DeleteMarkers {
			t.Errorf("delete marker on %s: walship never deletes", aws.ToString(m.Key))
		}
	}
	if len(versions) == 0 {
		t.Fatal("no object versions listed under archive/; the check below proves nothing")
	}
	for k, n := range versions {
		if n != 1 {
			t.Errorf("%s has %d versions, want 1: walship wrote over it", k, n)
		}
	}
}
