package mem_test

import (
	"testing"

	"github.com/walship/walship/storage"
	"github.com/walship/walship/storage/mem"
	"github.com/walship/walship/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Options{
		New:       func(t *testing.T) storage.Store { return mem.New() },
		LargeSize: 8 << 20,
	})
}
