package accesslog

import (
	"context"
	"errors"
	"fmt"
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
	l, err := bareIndexer(js, opts)
	if err != nil {
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

// bareIndexer is a log that only indexes, when told to: no committer and no indexer goroutine.
func bareIndexer(js jetstream.JetStream, opts Options) (*Log, error) {
	opts.setDefaults()
	l := &Log{opts: opts, log: opts.Logger, nc: js.Conn(), js: js, api: apiPrefix(js.Options()),
		ix: indexer{progress: make(chan struct{})}}
	var err error
	if l.pub, err = publisher(js, opts.PublishTimeout); err != nil {
		return nil, err
	}
	if l.replies, err = newReplies(js.Conn()); err != nil {
		return nil, err
	}
	return l, nil
}

// IndexRacing indexes ACCESS batch seq as an indexer would that read where the index stands just
// before another writer (other) stored entries of the same batch: it reads the position, runs
// other, then indexes the batch, and returns what indexing it returned.
func IndexRacing(ctx context.Context, js jetstream.JetStream, opts Options, seq uint64, other func() error) error {
	l, err := bareIndexer(js, opts)
	if err != nil {
		return err
	}
	defer l.replies.close()
	if l.access, err = js.Stream(ctx, AccessStream); err != nil {
		return err
	}
	if err := l.resume(ctx); err != nil {
		return err
	}
	if l.ix.pos.next != seq {
		return fmt.Errorf("the index stands before batch %d, not %d", l.ix.pos.next, seq)
	}
	if err := other(); err != nil {
		return err
	}
	var g group
	if err := l.groupFromLog(ctx, &g, seq, seq); err != nil {
		return err
	}
	return l.indexGroup(ctx, &g)
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
