package accesslog

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublishEntriesAsCrashed writes index entries of ACCESS batch seq (body data, first leaf first)
// through the indexer's own publishing path and waits for them, writing no marker: what an
// indexer that crashed in the middle of a group leaves, links included. keep selects the entries (by shard and
// place in the batch); withID false leaves out the message ids, as if the crash were longer ago
// than the duplicate window, so that only the restart rule keeps entries from being written twice.
func PublishEntriesAsCrashed(ctx context.Context, js jetstream.JetStream, opts Options, seq, first uint64, data []byte, keep func(shard, idx int) bool, withID bool) error {
	opts.setDefaults()
	l := &Log{opts: opts, log: opts.Logger, nc: js.Conn(), js: js, api: apiPrefix(js.Options())}
	var err error
	if l.pub, err = publisher(js, opts.PublishTimeout); err != nil {
		return err
	}
	if l.replies, err = newReplies(js.Conn()); err != nil {
		return err
	}
	defer l.replies.close()
	leaves, err := OpenBatch(opts.Sealer, data)
	if err != nil {
		return err
	}
	skip := func(shard, idx int) bool { return !keep(shard, idx) }
	var p pending
	if err := l.publishEntries(ctx, seq, first, leaves, skip, withID, &linkState{}, &p); err != nil {
		return err
	}
	_, err = l.awaitAcks(ctx, &p, seq)
	return err
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

// PublishRelinked stores, on top of its shard, a copy of the index entry with header h and leaf
// leaf on subject, linked to prev and authenticated with the broker's key: what a broker bug that
// linked an entry wrongly would write.
func PublishRelinked(ctx context.Context, js jetstream.JetStream, opts Options, subject string, h nats.Header, leaf []byte, prev uint64) error {
	opts.setDefaults()
	l := &Log{opts: opts, log: opts.Logger, nc: js.Conn(), js: js}
	p, ok := parseEntryHeaders(h)
	if !ok {
		return errors.New("not an index entry")
	}
	p.linked = false
	pseudonym := subject[strings.LastIndexByte(subject, '.')+1:]
	s, err := js.Stream(ctx, IndexStreamName(opts.IndexShards, shardOf(opts.IndexShards, pseudonym)))
	if err != nil {
		return err
	}
	tail := s.CachedInfo().State.LastSeq
	m, err := l.entryMsg(pseudonym, p, leaf, "", &entryLink{prev: prev, expect: tail, predicted: tail + 1})
	if err != nil {
		return err
	}
	_, err = js.PublishMsg(ctx, m)
	return err
}
