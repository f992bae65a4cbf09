// Package stream is walship's replication-protocol receiver: it will stream WAL from a physical
// replication slot with pglogrepl and ship the segment in progress as delta objects
// (layout.StreamKey), reporting a flush position only once the data is durable in storage.
//
// Nothing is implemented yet; this file pins the libraries the receiver is built on.
package stream

import (
	_ "github.com/jackc/pglogrepl" // the replication protocol
	_ "github.com/jackc/pgx/v5/pgconn"
)
