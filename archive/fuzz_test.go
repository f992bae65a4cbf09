package archive_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/layout"
	"github.com/walship/walship/storage/mem"
	"github.com/walship/walship/walfile"
)

// FuzzReadIdentity parses the archive identity (pg/cluster) as storage returns it: any bytes
// must give an identity a push can be checked against, or an error, never a panic.
func FuzzReadIdentity(f *testing.F) {
	f.Add([]byte(`{"system_id":7300000000000000001,"wal_segment_size":16777216,"pg_major":15,"format":1}`))
	f.Add([]byte(`{"system_id":1}`))
	f.Add([]byte(`{"system_id":1,"wal_segment_size":3}`))
	f.Add([]byte(`null`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		st := mem.New()
		if err := st.Put(ctx, layout.ClusterKey, bytes.NewReader(b), nil); err != nil {
			t.Fatal(err)
		}
		id, err := archive.ReadIdentity(ctx, st)
		if err != nil {
			return
		}
		if id.SystemID == 0 || !walfile.ValidSegSize(id.SegSize) {
			t.Fatalf("accepted an identity no WAL can match: %+v from %q", id, b)
		}
	})
}
