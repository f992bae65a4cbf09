package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkStartup is the weight of one walship process before it does any work: ms/op is the
// wall time of `walship version`. PostgreSQL starts one process per WAL file, and a wal-fetch
// call served from the prefetch spool then does little more than a hard link, so in a recovery
// this start-up is most of what replay waits for on each segment (cp's restore_command copies
// 16 MiB in about the same time). It also reports, from GODEBUG=inittrace=1 (median of 21
// calls), the package initialisation by who brings the packages in: init-ms-gcs, -s3 and -azure
// for the packages only that storage backend's SDK links in, init-ms-rest for the others (the Go
// runtime's own start-up is not in these).
//
//	go test -run x -bench Startup ./bench/
func BenchmarkStartup(b *testing.B) {
	if owners == nil { // the benchmark function runs once per b.N tried: go list once
		owners = initOwners(b)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(walship, "version").CombinedOutput(); err != nil {
			b.Fatalf("walship version: %v\n%s", err, out)
		}
	}
	b.StopTimer()
	sums := map[string][]float64{}
	for range 21 {
		cmd := exec.Command(walship, "version")
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("walship version: %v\n%s", err, stderr.Bytes())
		}
		ms, err := initTimes(stderr.Bytes())
		if err != nil {
			b.Fatal(err)
		}
		by := map[string]float64{}
		for pkg, t := range ms {
			by[owners(pkg)] += t
		}
		for _, g := range initGroups {
			sums[g] = append(sums[g], by[g])
		}
	}
	for _, g := range initGroups {
		b.ReportMetric(summarize(sums[g]).med, "init-ms-"+g)
	}
}

// owners is initOwners' answer, kept between BenchmarkStartup's runs.
var owners func(pkg string) string

// initGroups are the groups BenchmarkStartup reports package initialisation by.
var initGroups = []string{"gcs", "s3", "azure", "rest"}

// initOwners returns which group of initGroups each package of the binary belongs to: a
// backend's group holds the packages that only that backend (storage/gcs, s3 or azure) imports,
// directly or not; "rest" holds the others, the Go runtime and standard library among them.
func initOwners(b *testing.B) func(pkg string) string {
	tags, err := os.ReadFile("../scripts/build-tags")
	if err != nil {
		b.Fatal(err)
	}
	deps := func(pkgs ...string) map[string]bool {
		args := append([]string{"list", "-deps", "-tags", strings.TrimSpace(string(tags))}, pkgs...)
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			b.Fatalf("go list: %v", err)
		}
		m := map[string]bool{}
		for _, p := range strings.Fields(string(out)) {
			m[p] = true
		}
		return m
	}
	const mod = "github.com/walship/walship/"
	backends := map[string]map[string]bool{}
	for _, g := range []string{"gcs", "s3", "azure"} {
		backends[g] = deps(mod + "storage/" + g)
	}
	// Everything but the backends, and the packages that import them (open and the command).
	var others []string
	for p := range deps(mod + "cmd/walship") {
		if strings.HasPrefix(p, mod) && !strings.HasPrefix(p, mod+"storage/") && p != mod+"cmd/walship" {
			others = append(others, p)
		}
	}
	rest := deps(append(others, mod+"storage/file")...)
	return func(pkg string) string {
		var in []string
		for _, g := range []string{"gcs", "s3", "azure"} {
			if backends[g][pkg] {
				in = append(in, g)
			}
		}
		if len(in) == 1 && !rest[pkg] {
			return in[0]
		}
		return "rest"
	}
}

// initTimes reads GODEBUG=inittrace=1 output ("init PKG @T ms, D ms clock, ...") into each
// package's clock milliseconds.
func initTimes(trace []byte) (map[string]float64, error) {
	ms := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(trace))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 7 || f[0] != "init" || f[6] != "clock," {
			continue
		}
		d, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			return nil, fmt.Errorf("inittrace line %q: %v", sc.Text(), err)
		}
		ms[f[1]] += d
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no inittrace lines in the output of walship version:\n%s", trace)
	}
	return ms, nil
}

// TestInitTimes reads the lines of GODEBUG=inittrace=1 and nothing else.
func TestInitTimes(t *testing.T) {
	trace := "init runtime @0.009 ms, 0.044 ms clock, 0 bytes, 0 allocs\n" +
		"walship dev go1.26.8 linux/amd64\n" +
		"init cloud.google.com/go/storage @5.1 ms, 0.092 ms clock, 75136 bytes, 1034 allocs\n"
	ms, err := initTimes([]byte(trace))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for p, d := range ms {
		got = append(got, fmt.Sprintf("%s=%g", p, d))
	}
	slices.Sort(got)
	if want := "cloud.google.com/go/storage=0.092 runtime=0.044"; strings.Join(got, " ") != want {
		t.Errorf("got %s, want %s", strings.Join(got, " "), want)
	}
}
