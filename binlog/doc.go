// Package binlog is walship's MySQL/MariaDB binary-log shipper: it will push closed binlogs,
// stream the live one over the replication protocol with go-mysql, and fetch and replay them to a
// point in time.
//
// Nothing is implemented yet; this file pins the library the shipper is built on.
package binlog

import _ "github.com/go-mysql-org/go-mysql/replication" // binlog events and the replication protocol
