package layout

import (
	"testing"

	"github.com/walship/walship/storage"
)

func FuzzKeys(f *testing.F) {
	for _, s := range []string{"000000010000000000000003", "00000002.history", "000000010000000000000003.partial", "../../etc", "pg/cluster"} {
		f.Add(s, "3e11fa47-71ca-11e1-9e33-c80aa9429562")
	}
	f.Fuzz(func(t *testing.T, name, uuid string) {
		if key, err := WALKey(name); err == nil {
			if err := storage.CheckKey(key); err != nil {
				t.Fatalf("WALKey(%q) = %q, not a safe key: %v", name, key, err)
			}
			if back, ok := WALName(key); !ok || back != name {
				t.Fatalf("WALKey(%q) = %q does not round-trip (%q)", name, key, back)
			}
		}
		if key, err := BinlogKey(uuid, name); err == nil {
			if err := storage.CheckKey(key); err != nil {
				t.Fatalf("BinlogKey(%q, %q) = %q, not a safe key: %v", uuid, name, key, err)
			}
		}
		if _, ok := WALName(name); ok {
			if _, err := WALKey(name); err == nil && name[:3] != "pg/" {
				t.Fatalf("WALName accepted a non-key %q", name)
			}
		}
	})
}
