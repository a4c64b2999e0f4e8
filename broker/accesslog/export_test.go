package accesslog

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// PublishEntriesAsCrashed writes index entries of ACCESS batch seq (body data, first leaf first)
// through the indexer's own publishing path and waits for them, writing no marker: what an
// indexer that crashed in the middle of a group leaves. keep selects the entries (by shard and
// place in the batch); withID false leaves out the message ids, as if the crash were longer ago
// than the duplicate window, so that only the restart rule keeps entries from being written twice.
func PublishEntriesAsCrashed(ctx context.Context, js jetstream.JetStream, opts Options, seq, first uint64, data []byte, keep func(shard, idx int) bool, withID bool) error {
	opts.setDefaults()
	l := &Log{opts: opts, log: opts.Logger, nc: js.Conn(), js: js}
	var err error
	if l.pub, err = publisher(js, opts.PublishTimeout); err != nil {
		return err
	}
	leaves, err := OpenBatch(opts.Sealer, data)
	if err != nil {
		return err
	}
	skip := func(shard, idx int) bool { return !keep(shard, idx) }
	futures, err := l.publishEntries(seq, first, leaves, skip, withID, nil)
	if err != nil {
		return err
	}
	return l.awaitAcks(ctx, futures, seq)
}

// ShardOf is the shard a pseudonym's entries are in.
func ShardOf(shards int, pseudonym string) int { return shardOf(shards, pseudonym) }

// WithDefaults is opts as Open uses them, defaults filled in.
func WithDefaults(opts Options) Options {
	opts.setDefaults()
	return opts
}

// EnsureIndexStreams is the check a running log's indexer makes of the index streams after a failure.
func EnsureIndexStreams(ctx context.Context, l *Log) error { return l.ensureIndexStreams(ctx, false) }

// MetaShards is the stream metadata key holding an index stream's shard count.
const MetaShards = metaShards

// IndexShardPrefix is the subject prefix of shard shard of an index laid out in shards shards.
func IndexShardPrefix(shards, shard int) string { return indexShardPrefix(shards, shard) }
