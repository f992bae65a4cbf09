package layout

import (
	"strings"
	"testing"

	"github.com/walship/walship/storage"
)

func TestWALKeys(t *testing.T) {
	cases := map[string]string{
		"000000010000000000000003":                 "pg/wal/0000000100000000/000000010000000000000003",
		"000000020000000A000000FF.partial":         "pg/wal/000000020000000A/000000020000000A000000FF.partial",
		"000000010000000000000003.00000028.backup": "pg/wal/0000000100000000/000000010000000000000003.00000028.backup",
		"00000002.history":                         "pg/history/00000002.history",
	}
	for name, want := range cases {
		key, err := WALKey(name)
		if err != nil || key != want {
			t.Errorf("WALKey(%q) = %q, %v; want %q", name, key, err, want)
		}
		if err := storage.CheckKey(key); err != nil {
			t.Errorf("WALKey(%q) is not a valid storage key: %v", name, err)
		}
		if back, ok := WALName(key); !ok || back != name {
			t.Errorf("WALName(%q) = %q, %v; want %q", key, back, ok, name)
		}
		if !strings.HasPrefix(key, "pg/history/") && !strings.HasPrefix(key, WALPrefix(1)) && !strings.HasPrefix(key, WALPrefix(2)) {
			t.Errorf("%q is outside its timeline prefix", key)
		}
	}
	for _, bad := range []string{"../x", "000000010000000000000003/../../x", "", "pg/cluster", "00000001000000000000000Z"} {
		if k, err := WALKey(bad); err == nil {
			t.Errorf("WALKey(%q) = %q, want an error", bad, k)
		}
	}
	for _, bad := range []string{"pg/cluster", "pg/wal/0000000100000000/000000020000000000000003", "pg/wal/x/y", "pg/history/x", "other"} {
		if _, ok := WALName(bad); ok {
			t.Errorf("WALName(%q) accepted", bad)
		}
	}
}

func TestStreamAndBinlogKeys(t *testing.T) {
	k, err := StreamKey("000000010000000000000003", 0x2000)
	if err != nil || k != "pg/stream/000000010000000000000003/00002000" || !strings.HasPrefix(k, StreamPrefix("000000010000000000000003")) {
		t.Errorf("StreamKey = %q, %v", k, err)
	}
	uuid := "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	k, err = BinlogKey(uuid, "mysql-bin.000042")
	if err != nil || k != "mysql/"+uuid+"/binlog/mysql-bin.000042" {
		t.Errorf("BinlogKey = %q, %v", k, err)
	}
	k, err = BinlogStreamKey(uuid, "mysql-bin.000042", 4)
	if err != nil || k != "mysql/"+uuid+"/stream/mysql-bin.000042/0000000000000004" {
		t.Errorf("BinlogStreamKey = %q, %v", k, err)
	}
	for _, bad := range [][2]string{{"x", "mysql-bin.000001"}, {uuid, "../mysql-bin.000001"}, {uuid, "mysql-bin"}, {uuid, ".000001"}} {
		if _, err := BinlogKey(bad[0], bad[1]); err == nil {
			t.Errorf("BinlogKey(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
