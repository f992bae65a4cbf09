// Package layout is the one place object keys are built and parsed, so an archive written through
// one backend reads the same through any other.
//
// Keys below the storage URL's prefix:
//
//	check/<id>                                   short-lived probe objects of `walship check`
//	pg/cluster                                   archive identity: system identifier, segment size
//	pg/wal/TTTTTTTTLLLLLLLL/<segment>             full WAL segments, grouped per timeline and xlogid
//	pg/wal/TTTTTTTTLLLLLLLL/<segment>.partial     the last, partial segment of a timeline
//	pg/wal/TTTTTTTTLLLLLLLL/<segment>.XXXXXXXX.backup   backup label history files
//	pg/history/TTTTTTTT.history                   timeline history files
//	pg/stream/<segment>/OOOOOOOO                  deltas of a segment in progress, by start offset
//	mysql/<server-uuid>/binlog/<name>             closed binary logs
//	mysql/<server-uuid>/stream/<name>/OOOOOOOOOOOOOOOO  deltas of the live binary log
//
// No key is ever also the "directory" of other keys (filesystem-backed S3 servers cannot store
// both), and every name is validated so nothing from outside can steer a key.
package layout

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/walship/walship/walfile"
)

// ClusterKey holds the archive's identity record.
const ClusterKey = "pg/cluster"

// ProbeKey is where `walship check` writes and deletes its probe object.
func ProbeKey(id string) string { return "check/" + id }

const (
	walDir     = "pg/wal/"
	historyDir = "pg/history/"
	streamDir  = "pg/stream/"
	mysqlDir   = "mysql/"
)

// WALKey returns the key of a file PostgreSQL archives: a segment, .partial, .backup or .history.
func WALKey(name string) (string, error) {
	switch walfile.Classify(name) {
	case walfile.Segment, walfile.Partial, walfile.Backup:
		return walDir + name[:16] + "/" + name, nil
	case walfile.History:
		return historyDir + name, nil
	}
	return "", fmt.Errorf("layout: %q is not a WAL, history, partial or backup file name", name)
}

// WALName is the inverse of WALKey; ok is false for keys that are not WAL files.
func WALName(key string) (name string, ok bool) {
	var rest string
	switch {
	case strings.HasPrefix(key, walDir):
		rest = key[len(walDir):]
		dir, file, found := strings.Cut(rest, "/")
		if !found || walfile.Classify(file) == walfile.Invalid || walfile.Classify(file) == walfile.History || file[:16] != dir {
			return "", false
		}
		return file, true
	case strings.HasPrefix(key, historyDir):
		rest = key[len(historyDir):]
		return rest, walfile.Classify(rest) == walfile.History
	}
	return "", false
}

// WALPrefix is the listing prefix of every segment of timeline tli.
func WALPrefix(tli uint32) string { return fmt.Sprintf("%s%08X", walDir, tli) }

// HistoryPrefix lists every timeline history file.
const HistoryPrefix = historyDir

// StreamKey is the key of the delta of segment that starts at byte offset within it.
func StreamKey(segment string, offset uint32) (string, error) {
	if walfile.Classify(segment) != walfile.Segment {
		return "", fmt.Errorf("layout: %q is not a segment name", segment)
	}
	return fmt.Sprintf("%s%s/%08X", streamDir, segment, offset), nil
}

// StreamPrefix lists the deltas of one segment in progress.
func StreamPrefix(segment string) string { return streamDir + segment + "/" }

var (
	// Compiled on first use: compiling at package init cost every wal-* call 0.85 ms of its start.
	uuidRE = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	})
	binlogRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.[0-9]{6,}$`) })
)

func checkBinlog(serverUUID, name string) error {
	if !uuidRE().MatchString(serverUUID) {
		return fmt.Errorf("layout: %q is not a server UUID", serverUUID)
	}
	if !binlogRE().MatchString(name) {
		return fmt.Errorf("layout: %q is not a binary log file name", name)
	}
	return nil
}

// BinlogKey is the key of a closed binary log of the server with serverUUID. Keying on the server
// UUID keeps a restored server, which restarts numbering at .000001, from colliding with its past.
func BinlogKey(serverUUID, name string) (string, error) {
	if err := checkBinlog(serverUUID, name); err != nil {
		return "", err
	}
	return mysqlDir + serverUUID + "/binlog/" + name, nil
}

// BinlogStreamKey is the key of the delta of the live binary log name starting at offset.
func BinlogStreamKey(serverUUID, name string, offset uint64) (string, error) {
	if err := checkBinlog(serverUUID, name); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%s/stream/%s/%016X", mysqlDir, serverUUID, name, offset), nil
}
