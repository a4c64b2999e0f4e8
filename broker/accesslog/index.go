package accesslog

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// IndexStreamName is the name of index shard i.
func IndexStreamName(shard int) string { return fmt.Sprintf("%s_%02x", IndexStream, shard) }

// IndexSubject is the subject of a citizen's index entries when the index has shards shards.
func IndexSubject(shards int, pseudonym string) string {
	return indexShardPrefix(shardOf(shards, pseudonym)) + pseudonym
}

func indexShardPrefix(shard int) string { return fmt.Sprintf("%s%02x.", IndexSubjectPrefix, shard) }

// shardOf places a pseudonym in a shard: FNV-1a (32 bit) of the pseudonym modulo the shard count.
// Part of the on-disk format.
func shardOf(shards int, pseudonym string) int {
	h := fnv.New32a()
	h.Write([]byte(pseudonym))
	return int(h.Sum32() % uint32(shards))
}

// metaShards records the shard count in each index stream's metadata, so a changed count is
// noticed (and the index rebuilt) instead of looking in the wrong shard.
const metaShards = "aperture_index_shards"

func indexConfig(o Options, shard int) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        IndexStreamName(shard),
		Description: "Aperture access log index by citizen pseudonym; derived from ACCESS and rebuilt from it",
		Subjects:    []string{indexShardPrefix(shard) + "*"},
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Discard:     jetstream.DiscardNew,
		Duplicates:  duplicateWindow,
		AllowDirect: true,
		Metadata:    map[string]string{metaShards: strconv.Itoa(o.IndexShards)},
	}
	// The index is rebuilt from ACCESS after a crash, so it need not be fsynced per message. The
	// server accepts async persistence only for unreplicated file streams; a replicated stream is
	// backed by its Raft log and does not fsync per message anyway when the server's sync_always
	// is off, which is the usual cluster setting.
	if o.Replicas == 1 {
		cfg.PersistMode = jetstream.AsyncPersistMode
	}
	return cfg
}

// ensureIndexStreams creates or updates the index shards. If the index streams present do not
// form exactly the configured layout (a shard missing or deleted, another shard count) it deletes
// them all, so catch-up rebuilds the index from scratch rather than trusting a partial one.
func (l *Log) ensureIndexStreams(ctx context.Context) error {
	want := map[string]bool{}
	for i := range l.opts.IndexShards {
		want[IndexStreamName(i)] = true
	}
	lister := l.js.StreamNames(ctx, jetstream.WithStreamListSubject(IndexSubjectPrefix+">"))
	var existing []string
	for name := range lister.Name() {
		existing = append(existing, name)
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("%w: list index streams: %w", ErrUnavailable, err)
	}
	wipe := len(existing) > 0 && len(existing) != len(want)
	for _, name := range existing {
		if !want[name] {
			wipe = true
			continue
		}
		s, err := l.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("%w: index stream %s: %w", ErrUnavailable, name, err)
		}
		if s.CachedInfo().Config.Metadata[metaShards] != strconv.Itoa(l.opts.IndexShards) {
			wipe = true
		}
	}
	if wipe {
		l.log.Warn("access index layout incomplete or changed; deleting it to rebuild it from the log",
			"streams", len(existing), "shards", l.opts.IndexShards)
		for _, name := range existing {
			if err := l.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("%w: delete index stream %s: %w", ErrUnavailable, name, err)
			}
		}
	}
	for i := range l.opts.IndexShards {
		if _, err := l.js.CreateOrUpdateStream(ctx, indexConfig(l.opts, i)); err != nil {
			return fmt.Errorf("create stream %s: %w", IndexStreamName(i), err)
		}
	}
	return nil
}

// catchUpBudget bounds the records one catch-up step re-indexes, so a large backlog never holds up
// the batches waiting behind it for long.
const catchUpBudget = 4096

// maxRetry bounds the pause between failed catch-up attempts.
const maxRetry = 5 * time.Second

// indexer is the state of index maintenance, owned by the completer goroutine.
//
// The index is written in log order: live batches in ack order, each one's entries acknowledged
// before the next one's are sent; catch-up in sequence order; and live indexing pauses (dirty) from
// the first failure until catch-up has recovered. So with one writer, every batch older than the
// newest batch with an index entry (in any shard) is fully indexed, and only that newest batch may
// be partial. Catch-up starts there, checking each of its entries against its citizen's newest
// entry (per-citizen order is log order too), and indexes every later batch whole.
//
// With several broker replicas writing one log, replicas index concurrently; the duplicate window
// (2 minutes) keeps a batch indexed by two replicas from appearing twice, but a replica that dies
// between its log write and its index write leaves that batch unindexed if other replicas indexed
// later batches meanwhile. Scaled-out deployments need a backstop for that (an indexer on a durable
// consumer of ACCESS); it is not built yet.
type indexer struct {
	wake chan struct{} // starts catch-up; buffered, one pending wake is enough

	mu sync.Mutex
	// dirty pauses live indexing until catch-up has recovered.
	dirty bool
	// restart tells catch-up to look for its starting point again (a new failure happened).
	restart bool
	// acked is the newest ACCESS sequence the completer saw acknowledged.
	acked uint64
	// through is where catch-up stopped when it recovered: the completer skips batches up to it.
	through uint64

	// Owned by the catch-up goroutine, and by Open before that starts.
	ensured       bool // the index streams were just checked (by Open)
	next, partial uint64
	backoff       time.Duration
}

type logPos struct {
	seq uint64
	idx int
}

func (p logPos) less(q logPos) bool { return p.seq < q.seq || p.seq == q.seq && p.idx < q.idx }

// setDirty pauses live indexing and starts catch-up.
func (ix *indexer) setDirty() {
	ix.mu.Lock()
	ix.dirty, ix.restart = true, true
	ix.mu.Unlock()
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

// ackedLive records that batch seq is durable and reports whether the completer should index it.
func (ix *indexer) ackedLive(seq uint64) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.acked = max(ix.acked, seq)
	return !ix.dirty && seq > ix.through
}

func (ix *indexer) isDirty() bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.dirty
}

// catchUpLoop runs catch-up whenever the index is dirty, backing off after failures, until ctx
// ends.
func (l *Log) catchUpLoop(ctx context.Context) {
	defer close(l.catchUpDone)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.ix.wake:
		case <-retry.C:
		}
		for l.ix.isDirty() && ctx.Err() == nil {
			sctx, cancel := context.WithTimeout(ctx, 2*l.opts.PublishTimeout)
			complete, err := l.catchUpStep(sctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.ix.backoff = min(max(2*l.ix.backoff, 100*time.Millisecond), maxRetry)
				l.log.Warn("access index catch-up failed", "retry_in", l.ix.backoff, "err", err)
				retry.Reset(l.ix.backoff)
				break
			}
			if complete {
				l.log.Info("access index caught up with the log", "next_seq", l.ix.next)
			}
		}
	}
}

// catchUpStep re-indexes up to catchUpBudget records of the ACCESS batches the index may miss. It
// reports whether the index has caught up with the end of ACCESS.
func (l *Log) catchUpStep(ctx context.Context) (complete bool, err error) {
	if st := l.nc.Status(); st != nats.CONNECTED {
		return false, fmt.Errorf("%w: NATS connection is %s", ErrUnavailable, st)
	}
	l.ix.mu.Lock()
	if l.ix.restart {
		l.ix.restart, l.ix.next = false, 0
	}
	l.ix.mu.Unlock()
	if l.ix.next == 0 {
		if err := l.findResume(ctx); err != nil {
			return false, err
		}
	}
	read, indexed, dups, budgetSpent := 0, 0, 0, false
	end, err := l.scan(ctx, AccessStream, l.ix.next, "", 64, func(seq uint64, m *nats.Msg) (bool, error) {
		leaves, err := decodeBatch(m.Data)
		if err != nil {
			// Nothing can index a batch that does not decode; say so loudly and go on.
			l.log.Error("access log batch does not decode; not indexed", "seq", seq, "err", err)
			l.ix.next = seq + 1
			return false, nil
		}
		pseudonyms := make([]string, len(leaves))
		for i, leaf := range leaves {
			var rec auditv1.AccessRecord
			if err := proto.Unmarshal(leaf, &rec); err != nil || checkPseudonym(rec.GetCitizenPseudonym()) != nil {
				l.log.Error("access record has no usable pseudonym; not indexed", "seq", seq, "index", i)
				continue
			}
			pseudonyms[i] = rec.GetCitizenPseudonym()
		}
		skip := func(i int) bool { return pseudonyms[i] == "" }
		if seq == l.ix.partial {
			present, err := l.presentIn(ctx, seq, pseudonyms)
			if err != nil {
				return true, err
			}
			skip = func(i int) bool { return pseudonyms[i] == "" || present[i] }
		}
		for i := range pseudonyms {
			if !skip(i) {
				indexed++
			}
		}
		d, err := l.indexBatch(seq, len(leaves), func(i int) (string, []byte) { return pseudonyms[i], leaves[i] }, skip)
		dups += d
		if err != nil {
			return true, err
		}
		l.ix.next = seq + 1
		read += len(leaves)
		budgetSpent = read >= catchUpBudget
		return budgetSpent, nil
	})
	if err != nil {
		return false, fmt.Errorf("re-index from log seq %d: %w", l.ix.next, err)
	}
	if indexed > 0 {
		// Duplicates are expected when another broker replica indexed the same batches; otherwise
		// they are entries deleted from the index less than the duplicate window ago, which
		// JetStream will not store again: delete the index streams to have them rebuilt.
		l.log.Info("re-indexed access records", "records", indexed, "already_indexed", dups, "next_seq", l.ix.next)
	}
	if !end || budgetSpent {
		return false, nil
	}
	l.ix.mu.Lock()
	defer l.ix.mu.Unlock()
	if l.ix.restart || l.ix.acked >= l.ix.next {
		// Batches were acknowledged after the scan ended (or a new failure came): go on.
		return false, nil
	}
	// Recovered: the completer indexes from here on, skipping what was just indexed.
	l.ix.dirty, l.ix.through = false, l.ix.next-1
	l.ix.partial, l.ix.backoff = 0, 0
	return true, nil
}

// findResume sets where catch-up starts: the newest batch with any index entry, which may be
// partial (see indexer), or the start of the log for an empty index.
func (l *Log) findResume(ctx context.Context) error {
	if !l.ix.ensured {
		if err := l.ensureIndexStreams(ctx); err != nil {
			return err
		}
	}
	l.ix.ensured = false
	var newest uint64
	for i := range l.opts.IndexShards {
		m, err := l.directLast(ctx, IndexStreamName(i), indexShardPrefix(i)+"*")
		if err != nil {
			return fmt.Errorf("read index shard %d: %w", i, err)
		}
		if m == nil {
			continue
		}
		if pos, ok := entryPos(m.Header); ok {
			newest = max(newest, pos.seq)
		}
	}
	if newest == 0 {
		l.ix.next, l.ix.partial = 1, 0
		return nil
	}
	l.ix.next, l.ix.partial = newest, newest
	return nil
}

// presentIn reports which entries of batch seq are already indexed: an entry is if its citizen's
// newest index entry is at or after it.
func (l *Log) presentIn(ctx context.Context, seq uint64, pseudonyms []string) ([]bool, error) {
	present := make([]bool, len(pseudonyms))
	newest := map[string]logPos{}
	for i, p := range pseudonyms {
		if p == "" {
			continue
		}
		pos, ok := newest[p]
		if !ok {
			shard := shardOf(l.opts.IndexShards, p)
			m, err := l.directLast(ctx, IndexStreamName(shard), IndexSubject(l.opts.IndexShards, p))
			if err != nil {
				return nil, fmt.Errorf("check index entries of log seq %d: %w", seq, err)
			}
			if m != nil {
				pos, _ = entryPos(m.Header)
			}
			newest[p] = pos
		}
		present[i] = !pos.less(logPos{seq, i})
	}
	return present, nil
}

// indexBatch writes the index entries of batch seq (all n, except those skip names) and waits for
// their acks. It returns how many JetStream acknowledged as duplicates of entries it already had.
func (l *Log) indexBatch(seq uint64, n int, entry func(i int) (pseudonym string, leaf []byte), skip func(i int) bool) (dups int, err error) {
	if st := l.nc.Status(); st != nats.CONNECTED {
		return 0, fmt.Errorf("%w: NATS connection is %s", ErrUnavailable, st)
	}
	seqStr := strconv.FormatUint(seq, 10)
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		if skip != nil && skip(i) {
			continue
		}
		pseudonym, leaf := entry(i)
		idx := strconv.Itoa(i)
		m := &nats.Msg{
			Subject: IndexSubject(l.opts.IndexShards, pseudonym),
			Data:    leaf,
			Header: nats.Header{
				HeaderLogSeq:          {seqStr},
				HeaderLogIndex:        {idx},
				jetstream.MsgIDHeader: {seqStr + "-" + idx},
			},
		}
		f, err := l.pub.PublishMsgAsync(m)
		if err != nil {
			return 0, fmt.Errorf("index entry %d of log seq %d: %w", i, seq, err)
		}
		futures = append(futures, f)
	}
	t := time.NewTimer(l.opts.PublishTimeout + time.Second)
	defer t.Stop()
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				dups++
			}
		case err := <-f.Err():
			return dups, fmt.Errorf("index log seq %d: %w", seq, err)
		case <-t.C:
			return dups, fmt.Errorf("index log seq %d: no acknowledgement after %s", seq, l.opts.PublishTimeout)
		}
	}
	return dups, nil
}

// entryPos reads an index entry's position in the log from its headers.
func entryPos(h nats.Header) (logPos, bool) {
	seq, err1 := strconv.ParseUint(h.Get(HeaderLogSeq), 10, 64)
	idx, err2 := strconv.Atoi(h.Get(HeaderLogIndex))
	if err1 != nil || err2 != nil || seq == 0 || idx < 0 {
		return logPos{}, false
	}
	return logPos{seq, idx}, true
}

// checkPseudonym accepts what can be one NATS subject token and nothing that could change the
// subject's meaning (dots, wildcards, whitespace).
func checkPseudonym(p string) error {
	if p == "" || len(p) > 128 {
		return fmt.Errorf("citizen pseudonym must have 1 to 128 characters, has %d", len(p))
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return fmt.Errorf("citizen pseudonym has a character other than [0-9A-Za-z_-] at %d", i)
		}
	}
	return nil
}
