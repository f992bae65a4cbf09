package azure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/azure"
	"github.com/walship/walship/storage/storagetest"
	"github.com/walship/walship/testenv"
)

// listPage is the conformance suite's list page size: small, so 1050 keys take 11 pages.
const listPage = 100

func TestConformanceAzurite(t *testing.T) {
	srv := testenv.Azurite(t)
	newStore := func(t *testing.T, hc *http.Client) storage.Store {
		s, err := azure.New(context.Background(), azure.Config{Container: srv.NewContainer(t), Prefix: "suite",
			ConnectionString: srv.ConnectionString, HTTPClient: hc, PageSize: listPage})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	storagetest.Run(t, storagetest.Options{
		New:      func(t *testing.T) storage.Store { return newStore(t, &http.Client{}) },
		PageSize: listPage,
		NewHTTP: func(t *testing.T, rt http.RoundTripper) storage.Store {
			return newStore(t, &http.Client{Transport: rt})
		},
	})
}

// TestBlocks exercises the staged-block path: content, metadata, create conflict kept, and
// corruption of one block refused.
func TestBlocks(t *testing.T) {
	srv := testenv.Azurite(t)
	ctx := context.Background()
	mk := func(hc *http.Client) *azure.Store {
		s, err := azure.New(ctx, azure.Config{Container: srv.NewContainer(t), Account: srv.Account, Key: srv.Key,
			Endpoint: srv.Endpoint, HTTPClient: hc, BlockThreshold: 1 << 20, BlockSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := mk(&http.Client{})
	first, second := storagetest.Random(5<<20+123), storagetest.Random(5<<20)
	if err := s.Create(ctx, "big", bytes.NewReader(first), map[string]string{"sha256": "one"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "big", bytes.NewReader(second), nil); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("second block create: got %v, want ErrExist", err)
	}
	if got := storagetest.ReadAll(t, s, "big"); !bytes.Equal(got, first) {
		t.Fatal("block create overwrote the first blob")
	}
	if info, _ := s.Stat(ctx, "big"); info.Metadata["sha256"] != "one" {
		t.Fatalf("metadata after block commit: %v", info.Metadata)
	}
	bad := mk(&http.Client{Transport: &storagetest.CorruptingTransport{Base: http.DefaultTransport, MinBody: 4096}})
	if err := bad.Create(ctx, "big", bytes.NewReader(first), nil); !errors.Is(err, storage.ErrIntegrity) {
		t.Fatalf("corrupted block: got %v, want ErrIntegrity", err)
	}
	if _, err := bad.Stat(ctx, "big"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("corrupted block upload left a blob: %v", err)
	}
}

func TestErrors(t *testing.T) {
	srv := testenv.Azurite(t)
	ctx := context.Background()
	missing, _ := azure.New(ctx, azure.Config{Container: "nosuchcontainer", ConnectionString: srv.ConnectionString})
	if _, _, err := missing.Get(ctx, "x"); !errors.Is(err, storage.ErrNoContainer) || errors.Is(err, storage.ErrNotExist) {
		t.Errorf("get in missing container: got %v, want ErrNoContainer only", err)
	}
	if err := missing.Put(ctx, "x", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrNoContainer) {
		t.Errorf("put in missing container: got %v, want ErrNoContainer", err)
	}
	wrong, _ := azure.New(ctx, azure.Config{Container: srv.NewContainer(t), Account: srv.Account,
		Key: "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=", Endpoint: srv.Endpoint})
	if _, _, err := wrong.Get(ctx, "x"); !errors.Is(err, storage.ErrPermission) {
		t.Errorf("wrong key: got %v, want ErrPermission", err)
	}
	if _, err := azure.New(ctx, azure.Config{Container: "c"}); !errors.Is(err, storage.ErrCredentials) {
		t.Errorf("no credentials: got %v, want ErrCredentials", err)
	}
}

// TestConcurrentBlockCreate races block-path creates of one key: exactly one wins, and the blob is
// exactly that writer's body (never blocks of two uploads stitched together).
func TestConcurrentBlockCreate(t *testing.T) {
	srv := testenv.Azurite(t)
	ctx := context.Background()
	s, err := azure.New(ctx, azure.Config{Container: srv.NewContainer(t), ConnectionString: srv.ConnectionString,
		BlockThreshold: 1 << 20, BlockSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		key := fmt.Sprintf("race/%d", round)
		bodies := make([][]byte, 4)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for w := range bodies {
			bodies[w] = storagetest.Random(4<<20 + w)
			wg.Add(1)
			go func() { defer wg.Done(); errs[w] = s.Create(ctx, key, bytes.NewReader(bodies[w]), nil) }()
		}
		wg.Wait()
		winners := 0
		for w, err := range errs {
			switch {
			case err == nil:
				winners++
			case !errors.Is(err, storage.ErrExist):
				t.Fatalf("round %d writer %d: %v", round, w, err)
			}
		}
		got := storagetest.ReadAll(t, s, key)
		match := 0
		for _, b := range bodies {
			if bytes.Equal(got, b) {
				match++
			}
		}
		if winners != 1 || match != 1 {
			t.Fatalf("round %d: %d winners, stored blob equals %d of the bodies; want 1 and 1", round, winners, match)
		}
	}
}
