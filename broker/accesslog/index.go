package accesslog

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"
)

// IndexStreamName is the name of index shard shard of an index laid out in shards shards.
//
// The shard count is part of every index stream's name and subject (and of the position marker's
// subject and MAC), so indexes of two counts never share a stream: a replica still running with an
// old count after another re-laid the index out finds its streams gone and fails, instead of
// writing entries into shards of the new layout where no listing looks for them.
func IndexStreamName(shards, shard int) string {
	return fmt.Sprintf("%s_%d_%02x", IndexStream, shards, shard)
}

// IndexSubject is the subject of a citizen's index entries when the index has shards shards.
func IndexSubject(shards int, pseudonym string) string {
	return indexShardPrefix(shards, shardOf(shards, pseudonym)) + pseudonym
}

func indexShardPrefix(shards, shard int) string {
	return fmt.Sprintf("%s%d.%02x.", IndexSubjectPrefix, shards, shard)
}

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
		Name:        IndexStreamName(o.IndexShards, shard),
		Description: "Aperture access log index by citizen pseudonym; derived from ACCESS and rebuilt from it",
		Subjects:    []string{indexShardPrefix(o.IndexShards, shard) + "*"},
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		MaxBytes:    o.IndexMaxBytes,
		Discard:     jetstream.DiscardNew,
		// The indexer no longer sends message ids (publishEntries); the window stays as it was so
		// that the streams' configuration does not change.
		Duplicates:  duplicateWindow,
		AllowDirect: true,
		Metadata:    map[string]string{metaShards: strconv.Itoa(o.IndexShards)},
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	// The index is derived from ACCESS and repaired from it, so it need not be fsynced per message.
	// The server accepts async persistence only for unreplicated file streams; a replicated stream is
	// backed by its Raft log and does not fsync per message anyway when the server's sync_always is
	// off, which is the usual cluster setting.
	if o.Replicas == 1 {
		cfg.PersistMode = jetstream.AsyncPersistMode
	}
	return cfg
}

// indexStreams lists the index streams present (every stream on an index subject) with the shard
// count each was made for (its metadata; 0 if unreadable).
func indexStreams(ctx context.Context, js jetstream.JetStream) (map[string]int, error) {
	lister := js.ListStreams(ctx, jetstream.WithStreamListSubject(IndexSubjectPrefix+">"))
	streams := map[string]int{}
	for info := range lister.Info() {
		n, err := strconv.Atoi(info.Config.Metadata[metaShards])
		if err != nil || n < 1 || n > 256 {
			n = 0
		}
		streams[info.Config.Name] = n
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("%w: list index streams: %w", ErrUnavailable, err)
	}
	return streams, nil
}

// layoutComplete says whether streams hold every shard of an index laid out in n shards.
func layoutComplete(streams map[string]int, n int) bool {
	for i := range n {
		if streams[IndexStreamName(n, i)] != n {
			return false
		}
	}
	return n > 0
}

// existingIndexShards is the shard count of the index present: the count of a complete layout if
// there is one, else the count most of the index streams were made for (an incomplete index, or
// one of an earlier format, which Open rebuilds with the same count), else 0.
func existingIndexShards(ctx context.Context, js jetstream.JetStream) (n int, complete bool, err error) {
	streams, err := indexStreams(ctx, js)
	if err != nil {
		return 0, false, err
	}
	votes := map[int]int{}
	for _, k := range streams {
		if k == 0 {
			continue
		}
		if layoutComplete(streams, k) {
			return k, true, nil
		}
		votes[k]++
	}
	for k, v := range votes {
		if v > votes[n] || v == votes[n] && k > n {
			n = k
		}
	}
	return n, false, nil
}

// ErrIndexLayout means the index streams were laid out with another shard count while this process
// ran: another broker replica started with a different index_shards.
var ErrIndexLayout = errors.New("access index has another shard count than this broker")

// ensureIndexStreams creates the index shards of this log's layout and the position marker stream.
// If the layout is there only in part (a shard deleted, a fresh server, a crash while laying it out)
// it deletes what there is and forgets the layout's position, so the indexer rebuilds the index
// from the log rather than trust a partial one.
//
// Index streams of another layout (another shard count, or an earlier format) are deleted only at
// Open (relayout): a running broker that finds them (another replica started with a different
// setting) fails with ErrIndexLayout and leaves them, so two replicas configured differently never
// take turns deleting each other's index.
func (l *Log) ensureIndexStreams(ctx context.Context, relayout bool) error {
	n := l.opts.IndexShards
	streams, err := indexStreams(ctx, l.js)
	if err != nil {
		return err
	}
	want := make(map[string]bool, n)
	for i := range n {
		want[IndexStreamName(n, i)] = true
	}
	var own, others []string
	for name, k := range streams {
		if k == n && want[name] {
			own = append(own, name)
		} else {
			others = append(others, name)
		}
	}
	if len(others) > 0 && !relayout {
		slices.Sort(others)
		return fmt.Errorf("%w: %d index streams of another layout (%s…) are there, this broker has %d shards; restart it with the same index shard count as the others",
			ErrIndexLayout, len(others), others[0], n)
	}
	if len(others) > 0 {
		l.log.Warn("access index laid out with another shard count; deleting it to rebuild it from the log",
			"streams", len(others), "shards", n)
	}
	complete := layoutComplete(streams, n)
	if !complete && len(own) > 0 {
		l.log.Warn("access index incomplete; deleting it to rebuild it from the log", "streams", len(own), "shards", n)
		if err := l.deleteStreams(ctx, own); err != nil {
			return err
		}
	}
	for i := range n {
		if _, err := l.js.CreateOrUpdateStream(ctx, indexConfig(l.opts, i)); err != nil {
			return fmt.Errorf("create stream %s: %w", IndexStreamName(n, i), err)
		}
	}
	ms, err := l.js.CreateOrUpdateStream(ctx, markerConfig(l.opts))
	if err != nil {
		return fmt.Errorf("create stream %s: %w", MarkerStream, err)
	}
	if !complete {
		// A position of this layout left from when it last existed (the count was used before, or
		// the streams were deleted) would skip every batch before it.
		if err := ms.Purge(ctx, jetstream.WithPurgeSubject(markerSubject(n))); err != nil {
			return fmt.Errorf("%w: purge index position: %w", ErrUnavailable, err)
		}
	}
	// The other layout goes last: until this one exists, a replica still running with the other
	// count finds its own streams (and, once they are gone, these), never no index at all, which it
	// would lay out again.
	return l.deleteStreams(ctx, others)
}

// deleteStreams deletes the named index streams; one already gone is no error.
func (l *Log) deleteStreams(ctx context.Context, names []string) error {
	for _, name := range names {
		if err := l.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: delete index stream %s: %w", ErrUnavailable, name, err)
		}
	}
	return nil
}

// The indexer's durable consumer of ACCESS. Every broker replica pulls from it in one priority group
// with the pinned-client policy, so exactly one replica indexes at a time, in stream order; when it
// stops pulling for pinnedTTL another replica takes over where the index stands.
const (
	IndexerConsumer = "ACCESS_INDEXER"
	indexerGroup    = "indexer"
	pinnedTTL       = 5 * time.Second
	// indexerWait is how long the indexer waits for a batch before it looks at its other duties.
	indexerWait = time.Second
	// indexerPullBuffer is how many batches the indexer pulls ahead: two full groups (see
	// indexGroup), so a group can take what is buffered while the client already pulls the next.
	// Not more on purpose: the client pulls again only when half of them are indexed, and a pin
	// holder that sends no pull for pinnedTTL loses the pin while it still works through what it
	// holds. When each batch took two Raft commits, 256 buffered batches were many seconds of work
	// on a loaded cluster: the pin moved, the new holder filled the gap from ACCESS, both wrote the
	// same entries ("duplicate message id is in process") and both went into repair.
	indexerPullBuffer = 2 * indexGroupBatches
)

// indexer is the state of the background indexer. Fields under mu are shared with List (which waits
// for this process's own writes to be indexed) and Close; pos and needRepair belong to the indexer
// goroutine.
//
// The index itself is the indexer's position: every entry names its batch (stream sequence), its
// place in the batch, its leaf index and its batch's first leaf and size, under the broker's MAC. On
// start, after a failed write and when it may have lost the pin to another replica, the indexer
// reads the position marker and each shard's newest entry: it resumes after the marker's batch,
// re-indexing in each shard only what that shard lacks (see resume for the rule). The
// consumer only delivers batches and wakes the indexer; what it delivers at or before that position
// is acknowledged and skipped, and a gap before what it delivers (index lost, consumer ahead) is read
// from ACCESS directly. So a crash between an index write and its ack neither counts a leaf twice
// nor skips one.
type indexer struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// acked is the newest ACCESS sequence this process's committer saw acknowledged.
	acked uint64
	// through is the newest ACCESS sequence this process's indexer has indexed.
	through uint64
	// progress is closed (and replaced) whenever through moves.
	progress chan struct{}
	// mode says whether this process indexes: unknown until it receives a batch or learns another
	// replica holds the pin.
	mode indexerMode
	// lastBatch is when this process's indexer last received a batch.
	lastBatch time.Time
	// failing is set while the indexer retries a failed attempt: readers do not wait for it then.
	failing bool
	// layoutErr is the ErrIndexLayout the indexer is stuck on, until its streams check out again.
	layoutErr error

	pos        position
	needRepair bool
	// recheckAt, if set, is the end of a group that failed: once a marker reaches it, the index is
	// compared with the log (see indexGroup).
	recheckAt uint64
	ensure    bool // check the index streams before the next resume
	// links is what the indexer knows to link the entries it writes (see links.go); saves are the
	// saves of its heads under way (heads.go).
	links linkState
	saves sync.WaitGroup
	// repairReq carries Repair calls to the indexer goroutine.
	repairReq chan chan repairResult
}

type indexerMode int

const (
	modeUnknown indexerMode = iota
	modeActive
	modePassive
)

// position is where the indexer stands: the next ACCESS sequence to index and the leaf index of its
// first record. partial, if set, names for each shard its newest entry if that entry is of batch
// next or later (which a crashed group may have left partly indexed): the shard holds each of its
// entries from batch next up to and including that one, and none after it.
type position struct {
	known   bool
	next    uint64
	leaves  uint64
	partial map[int]logPos
}

type logPos struct {
	seq uint64
	idx int
}

func (p logPos) less(q logPos) bool { return p.seq < q.seq || p.seq == q.seq && p.idx < q.idx }

func (l *Log) indexerConsumerConfig(start uint64) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       IndexerConsumer,
		Description:   "Aperture access index: derives the per-citizen index from ACCESS in log order",
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   max(start, 1),
		AckPolicy:     jetstream.AckAllPolicy,
		// A batch delivered to a replica that died is redelivered after this; the index position
		// makes the redelivery harmless.
		AckWait:        5 * time.Second,
		MaxDeliver:     -1,
		MaxAckPending:  4096,
		FilterSubject:  LogSubject,
		Replicas:       l.opts.Replicas,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{indexerGroup},
		PinnedTTL:      pinnedTTL,
	}
}

// ensureConsumer returns the indexer's durable consumer, creating it (from start) if it is missing.
// An existing consumer keeps its position: the index, not the consumer, is the truth.
func (l *Log) ensureConsumer(ctx context.Context, start uint64) (jetstream.Consumer, error) {
	c, err := l.access.Consumer(ctx, IndexerConsumer)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("%w: indexer consumer: %w", ErrUnavailable, err)
	}
	c, err = l.access.CreateConsumer(ctx, l.indexerConsumerConfig(start))
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return l.access.Consumer(ctx, IndexerConsumer)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: create indexer consumer: %w", ErrUnavailable, err)
	}
	return c, nil
}

// startIndexer derives the position from the index, makes sure the consumer exists and starts the
// indexer goroutine.
func (l *Log) startIndexer(ctx context.Context) error {
	if err := l.resume(ctx); err != nil {
		return err
	}
	if _, err := l.ensureConsumer(ctx, l.ix.pos.next); err != nil {
		return err
	}
	// A cheap first check of the index's contents against the log: if the number of entries is not
	// the number of leaves before the position, something deleted or duplicated entries while no
	// broker was looking; repair compares them entry by entry.
	if n, err := l.indexEntries(ctx); err == nil && (n != l.ix.pos.leaves || len(l.ix.pos.partial) > 0) {
		l.log.Warn("access index holds another number of entries than the log has leaves; repairing it",
			"entries", n, "leaves", l.ix.pos.leaves)
		l.ix.needRepair = true
	}
	rctx, cancel := context.WithCancel(context.Background())
	l.ix.cancel, l.ix.done = cancel, make(chan struct{})
	go l.runIndexer(rctx)
	return nil
}

// indexEntries counts the messages in every index shard (JetStream keeps the count).
func (l *Log) indexEntries(ctx context.Context) (uint64, error) {
	var n uint64
	for i := range l.opts.IndexShards {
		s, err := l.js.Stream(ctx, IndexStreamName(l.opts.IndexShards, i))
		if err != nil {
			return 0, fmt.Errorf("%w: index shard %d: %w", ErrUnavailable, i, err)
		}
		n += s.CachedInfo().State.Msgs
	}
	return n, nil
}

// runIndexer pulls batches from the consumer and indexes them until ctx ends. Failures are retried
// with backoff on the same batch: the indexer never moves past a batch it could not index.
func (l *Log) runIndexer(ctx context.Context) {
	defer close(l.ix.done)
	backoff := time.Duration(0)
	pause := func(err error) bool {
		backoff = min(max(2*backoff, 100*time.Millisecond), maxRetry)
		l.stats.indexFailures.Add(1)
		l.log.Warn("access indexer failed; retrying", "retry_in", backoff, "err", err)
		l.ix.mu.Lock()
		l.ix.failing = true
		if errors.Is(err, ErrIndexLayout) {
			l.ix.layoutErr = err
		}
		l.ix.mu.Unlock()
		l.ix.pos.known = false // the failed write may have half happened: look at the index again
		l.ix.ensure, l.ix.needRepair = true, true
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
			return true
		}
	}
	for ctx.Err() == nil {
		if l.ix.needRepair {
			if _, err := l.repair(ctx); err != nil {
				if !pause(fmt.Errorf("repair: %w", err)) {
					return
				}
				continue
			}
			l.ix.needRepair = false
		}
		select {
		case reply := <-l.ix.repairReq:
			l.ix.pos.known = false // another replica may have indexed since: compare up to where the index stands
			rep, err := l.repair(ctx)
			reply <- repairResult{rep, err}
		default:
		}
		cons, err := l.ensureConsumer(ctx, l.ix.pos.next)
		if err != nil {
			if !pause(err) {
				return
			}
			continue
		}
		if err := l.catchUp(ctx, cons); err != nil {
			if !pause(err) {
				return
			}
			continue
		}
		it, err := cons.Messages(jetstream.PullPriorityGroup(indexerGroup), jetstream.PullMaxMessages(indexerPullBuffer), jetstream.PullExpiry(time.Second))
		if err != nil {
			if !pause(fmt.Errorf("%w: pull from indexer consumer: %w", ErrUnavailable, err)) {
				return
			}
			continue
		}
		err = l.pullLoop(ctx, it)
		it.Stop()
		if err != nil && ctx.Err() == nil {
			if !pause(err) {
				return
			}
			continue
		}
		backoff = 0
	}
}

// catchUp indexes, straight from ACCESS, the batches the consumer has already delivered but the
// index lacks (the index was rebuilt or lost entries, or another replica stopped mid-way): the
// consumer will not deliver them again.
//
// It always reads the position from the index first: this replica may have been passive while
// another indexed, and re-indexing from a stale position would add entries the index already holds
// once the duplicate window no longer covers them.
func (l *Log) catchUp(ctx context.Context, cons jetstream.Consumer) error {
	if err := l.resume(ctx); err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: indexer consumer: %w", ErrUnavailable, err)
	}
	target := info.Delivered.Stream
	if target < l.ix.pos.next {
		return nil
	}
	l.log.Info("access indexer catching up with batches already delivered", "from_seq", l.ix.pos.next, "to_seq", target)
	var g group
	if err := l.groupFromLog(ctx, &g, l.ix.pos.next, target); err != nil {
		return err
	}
	return l.indexGroup(ctx, &g)
}

// pullLoop indexes what the iterator delivers until ctx ends, an error, or a repair is due. It
// waits for one batch, then takes the batches already buffered behind it without waiting, and
// indexes them as one group (see indexGroup).
func (l *Log) pullLoop(ctx context.Context, it jetstream.MessagesContext) error {
	for {
		if l.ix.needRepair || len(l.ix.repairReq) > 0 {
			return nil
		}
		l.ix.mu.Lock()
		ackedBefore := l.ix.acked
		l.ix.mu.Unlock()
		nctx, cancel := context.WithTimeout(ctx, indexerWait)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			l.ix.mu.Lock()
			if ackedBefore > l.ix.through {
				// This process wrote batches a whole wait ago that never reached it: another
				// replica holds the pin.
				l.ix.mode = modePassive
			}
			l.ix.mu.Unlock()
			continue
		case err != nil:
			return fmt.Errorf("%w: pull from indexer consumer: %w", ErrUnavailable, err)
		}
		l.ix.mu.Lock()
		idle := time.Since(l.ix.lastBatch) > pinnedTTL/2
		l.ix.mode, l.ix.lastBatch = modeActive, time.Now()
		l.ix.mu.Unlock()
		if idle {
			// Another replica may have indexed meanwhile: where the index stands is the truth.
			l.ix.pos.known = false
		}
		if !l.ix.pos.known {
			if err := l.resume(ctx); err != nil {
				return err
			}
		}
		var g group
		last, err := l.addDelivered(ctx, &g, msg)
		closeAt := time.Now().Add(l.opts.IndexGroupWindow)
		for err == nil && !g.full(l.ix.pos) {
			// What is already buffered, and within the group window what arrives meanwhile.
			more, nerr := it.Next(jetstream.NextMaxWait(max(readyWait, time.Until(closeAt))))
			if nerr != nil {
				break // nothing ready (or the iterator failed: the next Next says so)
			}
			var m jetstream.Msg
			if m, err = l.addDelivered(ctx, &g, more); m != nil {
				last = m
			}
		}
		if err == nil {
			err = l.indexGroup(ctx, &g)
		}
		if err != nil {
			return err
		}
		// With AckAll this acknowledges every batch up to the newest of the group. A lost ack only
		// means a redelivery, which the position skips.
		if last != nil {
			_ = last.Ack()
		}
	}
}

// addDelivered adds a delivered batch to the group, after the batches the index lacks before it
// (read from ACCESS). It returns msg if it joined the group (to acknowledge once the group is
// indexed, which with AckAll acknowledges the group), nil if it did not.
func (l *Log) addDelivered(ctx context.Context, g *group, msg jetstream.Msg) (jetstream.Msg, error) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return nil, nil
	}
	seq := meta.Sequence.Stream
	next := g.next(l.ix.pos)
	if seq < next {
		// Indexed already (a redelivery, or the index was ahead of the consumer). A lost ack only
		// means another redelivery.
		_ = msg.Ack()
		return nil, nil
	}
	if seq > next {
		// A gap: the consumer is ahead of the index. Read the missing batches from the log itself.
		// ACCESS denies deletes, so there is nothing in between that is not a batch; if there were,
		// it would not be indexable and the group simply goes past it.
		l.log.Info("access indexer reading batches the index lacks from the log", "from_seq", next, "to_seq", seq-1)
		if err := l.groupFromLog(ctx, g, next, seq-1); err != nil {
			return nil, err
		}
	}
	if g.full(l.ix.pos) {
		// The gap filled the group: index it, so this batch opens the next.
		if err := l.indexGroup(ctx, g); err != nil {
			return nil, err
		}
	}
	l.addToGroup(g, seq, msg.Data())
	return msg, nil
}

// groupFromLog adds ACCESS batches from to through (read from the log) to the group, indexing it
// whenever it is full.
func (l *Log) groupFromLog(ctx context.Context, g *group, from, through uint64) error {
	_, err := l.scan(ctx, AccessStream, from, "", 64, func(s uint64, m *nats.Msg) (bool, error) {
		if s > through {
			return true, nil
		}
		if s >= g.next(l.ix.pos) {
			l.addToGroup(g, s, m.Data)
			if g.full(l.ix.pos) {
				if err := l.indexGroup(ctx, g); err != nil {
					return true, err
				}
				if !l.ix.pos.known {
					if err := l.resume(ctx); err != nil {
						return true, err
					}
				}
			}
		}
		return s >= through, nil
	})
	return err
}

// A group is consecutive ACCESS batches after the position, indexed together: their entries are
// published at once and one marker, of the last batch, is written after every entry is stored.
// On a replicated index each wait is a Raft commit, so a group costs two commits however many
// batches it holds; one batch at a time, the indexer fell behind a loaded cluster.
const (
	// indexGroupBatches and indexGroupLeaves bound a group (it always takes at least one batch).
	// The leaves bound keeps the entries in flight well below the publisher's limit of pending
	// asynchronous publishes, which appends share.
	indexGroupBatches = 32
	indexGroupLeaves  = 2048
	// readyWait is how long the indexer waits for another buffered batch when it closes a group
	// (after the group window): only long enough to take what the client already holds.
	readyWait = time.Millisecond
)

type group struct {
	batches []groupBatch
	leaves  int
}

type groupBatch struct {
	seq    uint64
	leaves [][]byte
	err    error // not authenticated by the broker: no leaves
}

// next is the ACCESS sequence the group takes next.
func (g *group) next(pos position) uint64 {
	if len(g.batches) == 0 {
		return pos.next
	}
	return g.batches[len(g.batches)-1].seq + 1
}

// full says the group takes no more batches. Without a marker (next 1) a group is the first batch
// alone: its marker must exist before any entry of a later batch, so that entries of later batches
// without a marker mean the marker was lost (see resume).
func (g *group) full(pos position) bool {
	n := len(g.batches)
	return n >= indexGroupBatches || g.leaves >= indexGroupLeaves || n >= 1 && pos.next <= 1
}

// addToGroup adds batch seq (the group's next) to the group.
func (l *Log) addToGroup(g *group, seq uint64, data []byte) {
	leaves, err := OpenBatch(l.opts.Sealer, data)
	g.batches = append(g.batches, groupBatch{seq: seq, leaves: leaves, err: err})
	g.leaves += len(leaves)
}

// indexGroup indexes the group's batches (the batches right after the position, in order), writes
// the marker of the last and advances the position; it empties the group. Every entry is stored
// before the marker is written: an error (a refused publish, a missing acknowledgement) returns
// before the marker, so the marker never names a batch with an entry missing.
//
// Entries a crashed writer left are skipped (resume's partial): entries of one shard are published
// in log order on one connection, so a shard holding the entry at (seq, idx) holds every earlier
// entry of the group for that shard.
func (l *Log) indexGroup(ctx context.Context, g *group) error {
	if len(g.batches) == 0 {
		return nil
	}
	if err := l.prefetch(ctx, &l.ix.links, g); err != nil {
		return err
	}
	l.ix.links.clean = false // until every entry is stored as its link assumed
	first := l.ix.pos.leaves
	leaf := first
	p := pending{futures: make([]jetstream.PubAckFuture, 0, g.leaves), predicted: make([]uint64, 0, g.leaves)}
	for _, b := range g.batches {
		if b.err != nil {
			// Not the broker's: no leaves, nothing indexed, never listed. The integrator halts on it
			// (Records reports it), so the tree and the index agree on numbering after it.
			l.unauthenticBatch(b.seq, b.err)
			continue
		}
		skip := func(shard, idx int) bool {
			have, ok := l.ix.pos.partial[shard]
			return ok && !have.less(logPos{b.seq, idx})
		}
		if err := l.publishEntries(ctx, b.seq, leaf, b.leaves, skip, false, &l.ix.links, &p); err != nil {
			l.ix.recheckAt = max(l.ix.recheckAt, g.batches[len(g.batches)-1].seq) // as below
			return err
		}
		leaf += uint64(len(b.leaves))
	}
	clear(l.ix.links.looked) // those left are of entries the shards held already (resume's partial)
	lastSeq := g.batches[len(g.batches)-1].seq
	asPredicted, err := l.awaitAcks(ctx, &p, lastSeq)
	if err != nil {
		// A refused entry may sit before entries of its shard that were stored, which the restart
		// rule then takes as held. Compare once the marker covers this group, so repair writes it.
		l.ix.recheckAt = max(l.ix.recheckAt, lastSeq)
		return err
	}
	if !asPredicted {
		// An entry was not stored at the sequence its link assumed (JetStream stores a linked entry
		// only right after the sequence it expects, so this takes a duplicate, which only entries
		// with message ids can be): what the indexer knows no longer describes the shards.
		l.ix.links.forget()
	} else {
		l.ix.links.clean = true
		l.maybeSaveHeads(&l.ix.links)
	}
	if err := l.writeMarker(ctx, marker{seq: lastSeq, leaves: leaf}); err != nil {
		return err
	}
	*g = group{}
	l.advance(lastSeq, int(leaf-first))
	if !asPredicted {
		// Tails are read again with the shards' positions (resume), not lazily by link.
		l.ix.pos.known = false
	}
	if l.ix.recheckAt != 0 && lastSeq >= l.ix.recheckAt {
		l.ix.recheckAt, l.ix.needRepair = 0, true
	}
	return nil
}

// pending is what the indexer published and waits for: each entry's acknowledgement and the sequence
// its link assumed it gets (0 for an entry without a link).
type pending struct {
	futures   []jetstream.PubAckFuture
	predicted []uint64
}

// publishEntries publishes (asynchronously) the index entries of batch seq, whose first leaf is
// first, except those skip names, and adds them to p. With links each entry is linked to the
// citizen's previous entry (see links.go). With withID each entry carries the message id seq-idx,
// so that JetStream drops a second copy within its duplicate window: the indexer's entries did
// until 3 December, and tests use it for entries such a build left. The indexer now sends none.
// Every entry it writes carries the shard's last sequence as it expects it, so JetStream refuses a
// second copy anyway (the shard has moved), and the restart rule (resume's partial) skips what a
// crashed group stored. The ids cost more than they gave: JetStream keeps each one in memory for
// the duplicate window (two minutes, ~1 M ids at 9,000 entries a second), and the garbage collector
// scanned them all, so a broker grew slower over its first two minutes. aperture bench
// --brokered-only, with ids against without: after a 130 s warm-up (steady state) 7,661–7,812
// against 8,527–10,463 releases/s, 213–217 against 151–180 µs per release, p99 30.7–35.7 against
// 19.4–21.4 ms; after 40 s, 9,124–9,221 against 10,344–10,710; after the default 2 s, 9,610–9,758
// against 9,971–10,063.
func (l *Log) publishEntries(ctx context.Context, seq, first uint64, leaves [][]byte, skip func(shard, idx int) bool, withID bool, links *linkState, p *pending) error {
	seqStr := strconv.FormatUint(seq, 10)
	for i, leaf := range leaves {
		pseudonym := recordString(leaf, 3)
		if checkPseudonym(pseudonym) != nil {
			// Append never writes such a record; a broker bug would. It stays a leaf (the tree counts
			// it) but cannot be indexed; VerifyIndex names it.
			l.log.Error("access record in an authentic batch has no usable pseudonym; not indexed", "seq", seq, "index", i, "leaf", first+uint64(i))
			continue
		}
		shard := shardOf(l.opts.IndexShards, pseudonym)
		if skip(shard, i) {
			continue // this shard already holds it
		}
		pos := entryPosition{seq: seq, idx: i, leaf: first + uint64(i), batchFirst: first, batchCount: len(leaves)}
		msgID := ""
		if withID {
			msgID = seqStr + "-" + strconv.Itoa(i)
		}
		var k *entryLink
		if links != nil {
			lk, err := l.link(ctx, links, shard, pseudonym, indexShardPrefix(l.opts.IndexShards, shard)+pseudonym)
			if err != nil {
				return err
			}
			k = &lk
		}
		m, err := l.entryMsg(pseudonym, pos, leaf, msgID, k)
		if err != nil {
			return err
		}
		f, err := l.pub.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("%w: index entry %d of log seq %d: %w", ErrUnavailable, i, seq, err)
		}
		p.futures = append(p.futures, f)
		if k != nil {
			p.predicted = append(p.predicted, k.predicted)
		} else {
			p.predicted = append(p.predicted, 0)
		}
	}
	return nil
}

// awaitAcks waits until every entry is stored, or fails on the first that is not. asPredicted says
// every linked entry got the sequence its link assumed (not so for a duplicate, which JetStream
// acknowledges with the sequence of the copy it holds).
func (l *Log) awaitAcks(ctx context.Context, p *pending, through uint64) (asPredicted bool, err error) {
	t := time.NewTimer(l.opts.PublishTimeout + time.Second)
	defer t.Stop()
	asPredicted = true
	for i, f := range p.futures {
		select {
		case ack := <-f.Ok():
			if want := p.predicted[i]; want != 0 && (ack.Sequence != want || ack.Duplicate) {
				asPredicted = false
			}
		case err := <-f.Err():
			return false, fmt.Errorf("%w: index log through seq %d: %w", ErrUnavailable, through, err)
		case <-t.C:
			return false, fmt.Errorf("%w: index log through seq %d: no acknowledgement after %s", ErrUnavailable, through, l.opts.PublishTimeout)
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
	return asPredicted, nil
}

// entryMsg is the index message of one leaf, linked as k says (nil: not linked).
func (l *Log) entryMsg(pseudonym string, p entryPosition, leaf []byte, msgID string, k *entryLink) (*nats.Msg, error) {
	if k != nil {
		p.linked, p.prev, p.self = true, k.prev, k.predicted
	}
	mac, err := sealEntry(l.opts.Sealer, pseudonym, p, leaf)
	if err != nil {
		return nil, err
	}
	// One string holds the numbers and one array the values: an entry is written per record, and a
	// string and a slice per header were most of the indexer's allocations.
	var buf [160]byte
	b := strconv.AppendUint(buf[:0], p.seq, 10)
	n1 := len(b)
	b = strconv.AppendInt(b, int64(p.idx), 10)
	n2 := len(b)
	b = strconv.AppendUint(b, p.leaf, 10)
	n3 := len(b)
	b = strconv.AppendUint(b, p.batchFirst, 10)
	b = append(b, '+')
	b = strconv.AppendInt(b, int64(p.batchCount), 10)
	n4, n5, n6 := len(b), len(b), len(b)
	if k != nil {
		b = strconv.AppendUint(b, k.prev, 10)
		n5 = len(b)
		b = strconv.AppendUint(b, k.expect, 10)
		n6 = len(b)
		b = strconv.AppendUint(b, k.predicted, 10)
	}
	nums := string(b)
	v := [...]string{nums[:n1], nums[n1:n2], nums[n2:n3], nums[n3:n4], mac, msgID, nums[n4:n5], nums[n5:n6], nums[n6:]}
	vals := v[:]
	h := make(nats.Header, 10)
	h[HeaderLogSeq] = vals[0:1:1]
	h[HeaderLogIndex] = vals[1:2:2]
	h[HeaderLeafIndex] = vals[2:3:3]
	h[HeaderBatchLeaves] = vals[3:4:4]
	h[HeaderEntryMAC] = vals[4:5:5]
	if msgID != "" {
		h[jetstream.MsgIDHeader] = vals[5:6:6]
	}
	if k != nil {
		// The link, and what JetStream must find when it stores the entry (see links.go).
		h[HeaderIndexPrev] = vals[6:7:7]
		h[HeaderIndexSeq] = vals[8:9:9]
		h[jetstream.ExpectedLastSeqHeader] = vals[7:8:8]
		if k.checkSubject {
			h[jetstream.ExpectedLastSubjSeqHeader] = vals[6:7:7]
		}
	}
	return &nats.Msg{Subject: IndexSubject(l.opts.IndexShards, pseudonym), Data: leaf, Header: h}, nil
}

func (l *Log) unauthenticBatch(seq uint64, err error) {
	l.stats.unauthenticBatches.Add(1)
	l.log.Error("ACCESS message is not authenticated by the broker: its records are not leaves and are not listed",
		"seq", seq, "unauthentic_total", l.stats.unauthenticBatches.Load(), "err", err)
}

// advance moves the position past batch seq of n leaves and tells waiting readers.
func (l *Log) advance(seq uint64, n int) {
	l.ix.pos = position{known: true, next: seq + 1, leaves: l.ix.pos.leaves + uint64(n)}
	l.ix.mu.Lock()
	l.ix.failing = false
	if seq > l.ix.through {
		l.ix.through = seq
		close(l.ix.progress)
		l.ix.progress = make(chan struct{})
	}
	l.ix.mu.Unlock()
}

// resume sets the position from the index's position marker (the last batch fully indexed and
// the leaf count after it) and the shards' newest entries. The restart rule:
//
//   - Writers index groups of batches (indexGroup) and store the marker of a group's last batch
//     only after every entry of the group is stored; the group starting at batch 1 (no marker yet)
//     is batch 1 alone. So any batches after the marker may be partly indexed, and without a marker
//     only batch 1 may be.
//   - A writer publishes the entries of one shard in log order on one connection, and JetStream
//     stores them in that order; a publish that fails stops the group before its marker (and has
//     the range compared with the log once a marker covers it). So a shard whose newest entry is
//     at (seq, idx), seq after the marker, holds every one of its entries up to that position.
//   - Re-indexing from the batch after the marker skips, per shard, the entries at or before that
//     position. Its entries expect the shard's last sequence as read with that position (see
//     shardPositions), so of two writers that raced to re-index a batch only one stores its entries.
//   - No valid marker but a shard whose newest entry is of a later batch than 1, or not the
//     broker's: entries nobody can place. The index is rebuilt from the start of the log.
//   - An entry without the broker's MAC is never a position: repair removes it.
func (l *Log) resume(ctx context.Context) error {
	if st := l.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: NATS connection is %s", ErrUnavailable, st)
	}
	if l.ix.ensure {
		// After a failure the streams themselves may be gone (deleted, or a fresh server).
		if err := l.ensureIndexStreams(ctx, false); err != nil {
			return err
		}
		l.ix.ensure = false
		l.ix.mu.Lock()
		l.ix.layoutErr = nil
		l.ix.mu.Unlock()
	}
	if !l.linksHold(ctx, &l.ix.links) {
		l.ix.links.forget() // learned again from the saved heads and the shards
	}
	for attempt := 1; ; attempt++ {
		mark, found, err := l.readMarker(ctx)
		if err != nil {
			return err
		}
		// Without a marker the index stands before the first batch (next 1, no leaves).
		next := mark.seq + 1
		partial, tails, unplaced, err := l.shardPositions(ctx, next)
		if err != nil {
			return err
		}
		if found || !unplaced {
			// Tails the indexer still knows were checked before the shards were read (linksHold).
			l.ix.links.init()
			for i, t := range tails {
				if _, ok := l.ix.links.tails[i]; !ok {
					l.ix.links.tails[i], l.ix.links.created[i] = t.last, t.created
				}
			}
			// Entries of batch 1 without a marker are not a reason to rebuild: they are what a
			// replica wrote before its first marker (another replica holding the pin right now, or
			// this one before a crash), a partial batch like any batch after a marker.
			l.ix.pos = position{known: true, next: next, leaves: mark.leaves, partial: partial}
			return nil
		}
		// Entries no marker accounts for. A writer stores the marker of batch 1 before any entry
		// of a later batch, so if a marker exists now it was written while the shards were read:
		// read the position again rather than destroy what another replica is writing.
		if _, found, err := l.readMarker(ctx); err != nil {
			return err
		} else if found && attempt < 3 {
			continue
		}
		n, err := l.indexEntries(ctx)
		if err != nil {
			return err
		}
		l.log.Error("access index has entries but no valid position marker; rebuilding it from the log", "entries", n)
		if err := l.wipeIndex(ctx); err != nil {
			return err
		}
		l.ix.pos = position{known: true, next: 1}
		return nil
	}
}

// shardPositions reads each shard's newest entry. partial names, for each shard whose newest
// entry is of batch next or later, that entry's (batch, place in the batch). unplaced says, without
// a marker (next 1), that some shard's newest entry is of a later batch than 1 or not the broker's:
// entries no position explains. tails is each shard's last sequence and creation as of that entry.
//
// The last sequence is read before the newest entry, both from the stream leader: entries
// re-indexed from here expect it (links.go), so an entry another writer stored after the entry was
// read makes them refused, and one stored before it is in partial and skipped. Read the other way
// round, or the entry from a replica that lags, two writers could both store an entry.
func (l *Log) shardPositions(ctx context.Context, next uint64) (partial map[int]logPos, tails map[int]shardTail, unplaced bool, err error) {
	partial, tails = map[int]logPos{}, map[int]shardTail{}
	for i := range l.opts.IndexShards {
		name := IndexStreamName(l.opts.IndexShards, i)
		s, err := l.js.Stream(ctx, name)
		if err != nil {
			return nil, nil, false, fmt.Errorf("%w: index shard %d: %w", ErrUnavailable, i, err)
		}
		info := s.CachedInfo()
		m, err := l.leaderLast(ctx, name, indexShardPrefix(l.opts.IndexShards, i)+"*")
		if err != nil {
			return nil, nil, false, fmt.Errorf("read index shard %d: %w", i, err)
		}
		// Written since the info: the entry is newer. Deleted at the end (repair): the info is.
		tails[i] = shardTail{last: info.State.LastSeq, created: info.Created.UnixNano()}
		if m == nil {
			continue
		}
		if m.Sequence > info.State.LastSeq {
			tails[i] = shardTail{last: m.Sequence, created: info.Created.UnixNano()}
		}
		p, err := l.openEntryMsg(m.Subject, m.Sequence, m.Header, m.Data)
		if err != nil {
			// Not the broker's: never trust a position someone else wrote. Repair removes it.
			l.unauthenticEntry(i, m.Sequence, err)
			l.ix.needRepair = true
			unplaced = unplaced || next == 1
			continue
		}
		switch {
		case p.seq > next && next == 1:
			unplaced = true
		case p.seq >= next:
			partial[i] = logPos{p.seq, p.idx}
		}
	}
	return partial, tails, unplaced, nil
}

// shardTail is a shard's last sequence and when its stream was created.
type shardTail struct {
	last    uint64
	created int64
}

// The position marker: one message per index layout, on MarkerSubjectPrefix<shard count> in stream
// MarkerStream, replaced after every indexed group of batches, saying the newest ACCESS sequence
// fully indexed and how many leaves the log has up to it, under the broker's MAC (which covers the
// shard count too).
const (
	MarkerStream        = "ACCESS_INDEX_POS"
	MarkerSubjectPrefix = "aperture.access.indexpos."
	markerDomain        = "aperture/access-index-position/v2\x00"
)

func markerSubject(shards int) string { return MarkerSubjectPrefix + strconv.Itoa(shards) }

type marker struct{ seq, leaves uint64 }

func markerConfig(o Options) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              MarkerStream,
		Description:       "Aperture access index position: last ACCESS batch indexed and the leaf count after it",
		Subjects:          []string{MarkerSubjectPrefix + "*"},
		Storage:           jetstream.FileStorage,
		Replicas:          o.Replicas,
		MaxMsgsPerSubject: 1,
		AllowDirect:       true,
	}
	if o.Replicas == 1 {
		cfg.PersistMode = jetstream.AsyncPersistMode
	}
	return cfg
}

func markerAD(shards int, m marker) []byte {
	b := append([]byte(markerDomain), make([]byte, 0, 20)...)
	b = binary.BigEndian.AppendUint32(b, uint32(shards))
	b = binary.BigEndian.AppendUint64(b, m.seq)
	return binary.BigEndian.AppendUint64(b, m.leaves)
}

// writeMarker records m and waits for it to be stored: the next group is indexed only after it.
func (l *Log) writeMarker(ctx context.Context, m marker) error {
	mac, err := l.opts.Sealer.Seal(nil, markerAD(l.opts.IndexShards, m))
	if err != nil {
		return fmt.Errorf("authenticate index position: %w", err)
	}
	msg := &nats.Msg{Subject: markerSubject(l.opts.IndexShards), Data: []byte(strconv.FormatUint(m.seq, 10) + " " + strconv.FormatUint(m.leaves, 10)),
		Header: nats.Header{HeaderEntryMAC: {base64.RawStdEncoding.EncodeToString(mac)}}}
	if _, err := l.pub.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("%w: write index position: %w", ErrUnavailable, err)
	}
	return nil
}

// readMarker returns the position marker, if there is one the broker wrote.
func (l *Log) readMarker(ctx context.Context) (marker, bool, error) {
	m, err := l.directLast(ctx, MarkerStream, markerSubject(l.opts.IndexShards))
	if err != nil || m == nil {
		return marker{}, false, err
	}
	seqS, leavesS, _ := strings.Cut(string(m.Data), " ")
	var mk marker
	var err1, err2 error
	mk.seq, err1 = strconv.ParseUint(seqS, 10, 64)
	mk.leaves, err2 = strconv.ParseUint(leavesS, 10, 64)
	mac, err3 := base64.RawStdEncoding.DecodeString(m.Header.Get(HeaderEntryMAC))
	if errors.Join(err1, err2, err3) == nil {
		if _, err := l.opts.Sealer.Open(mac, markerAD(l.opts.IndexShards, mk)); err == nil {
			return mk, true, nil
		}
	}
	l.stats.unauthenticEntries.Add(1)
	l.log.Error("access index position marker is not authenticated by the broker; ignored")
	return marker{}, false, nil
}

// wipeIndex deletes every index entry and the marker, for a rebuild from the log. It deletes and
// recreates the streams rather than purging them: a purged stream keeps its duplicate window, which
// would silently drop the rebuilt entries (they carry the message ids of the entries they replace)
// while the marker moved past them, so they would be missing for good. Recreating the layout purges
// its marker (see ensureIndexStreams).
func (l *Log) wipeIndex(ctx context.Context) error {
	names := make([]string, l.opts.IndexShards)
	for i := range names {
		names[i] = IndexStreamName(l.opts.IndexShards, i)
	}
	if err := l.deleteStreams(ctx, names); err != nil {
		return err
	}
	return l.ensureIndexStreams(ctx, false)
}

func (l *Log) unauthenticEntry(shard int, seq uint64, err error) {
	l.stats.unauthenticEntries.Add(1)
	l.log.Error("access index entry is not authenticated by the broker; ignored", "shard", shard, "index_seq", seq,
		"unauthentic_total", l.stats.unauthenticEntries.Load(), "err", err)
}

// directSubject is the subject a direct get response's message was stored under.
func directSubject(m *nats.Msg) string { return serverHeader(m, "Nats-Subject") }

// openEntryMsg checks the MAC of an index message stored at seq (0: not known, as for a message
// watched as it is published) and returns the position it names. A linked entry stored at another
// sequence than its own is a copy, not authentic.
func (l *Log) openEntryMsg(subject string, seq uint64, h nats.Header, leaf []byte) (entryPosition, error) {
	p, ok := parseEntryHeaders(h)
	if !ok {
		return entryPosition{}, fmt.Errorf("%w: malformed headers", ErrUnauthenticEntry)
	}
	if p.linked && seq != 0 && seq != p.self {
		return entryPosition{}, fmt.Errorf("%w: stored at %d, written for %d", ErrUnauthenticEntry, seq, p.self)
	}
	if !strings.HasPrefix(subject, IndexSubjectPrefix) {
		return entryPosition{}, fmt.Errorf("%w: not an index subject", ErrUnauthenticEntry)
	}
	pseudonym := subject[strings.LastIndexByte(subject, '.')+1:]
	if err := openEntry(l.opts.Sealer, pseudonym, p, leaf, h.Get(HeaderEntryMAC)); err != nil {
		return entryPosition{}, err
	}
	return p, nil
}

func parseEntryHeaders(h nats.Header) (entryPosition, bool) {
	seq, err1 := strconv.ParseUint(h.Get(HeaderLogSeq), 10, 64)
	idx, err2 := strconv.Atoi(h.Get(HeaderLogIndex))
	leaf, err3 := strconv.ParseUint(h.Get(HeaderLeafIndex), 10, 64)
	firstS, countS, ok := strings.Cut(h.Get(HeaderBatchLeaves), "+")
	first, err4 := strconv.ParseUint(firstS, 10, 64)
	count, err5 := strconv.Atoi(countS)
	if !ok || errors.Join(err1, err2, err3, err4, err5) != nil || seq == 0 || idx < 0 || idx >= count || leaf != first+uint64(idx) {
		return entryPosition{}, false
	}
	p := entryPosition{seq: seq, idx: idx, leaf: leaf, batchFirst: first, batchCount: count}
	if v := h.Get(HeaderIndexPrev); v != "" {
		prev, err1 := strconv.ParseUint(v, 10, 64)
		self, err2 := strconv.ParseUint(h.Get(HeaderIndexSeq), 10, 64)
		if errors.Join(err1, err2) != nil || prev >= self {
			return entryPosition{}, false
		}
		p.linked, p.prev, p.self = true, prev, self
	}
	return p, true
}

// waitIndexed waits (bounded) until this process's indexer has indexed every batch this process
// had written when it was called, so a caller reads its own writes. It does not wait when another
// replica indexes.
func (l *Log) waitIndexed(ctx context.Context) {
	l.ix.mu.Lock()
	target, mode, failing := l.ix.acked, l.ix.mode, l.ix.failing
	l.ix.mu.Unlock()
	if mode == modePassive || failing {
		return
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	for {
		l.ix.mu.Lock()
		through, ch, mode, failing := l.ix.through, l.ix.progress, l.ix.mode, l.ix.failing
		l.ix.mu.Unlock()
		if through >= target || mode == modePassive || failing {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// IndexLag is how far the per-citizen index is behind the log.
type IndexLag struct {
	// Batches is the number of ACCESS messages after the last one indexed.
	Batches uint64
}

// IndexLag reports how many ACCESS batches the index has yet to take in (by whichever replica
// indexes): the listing lags the log by these. It compares the index's position marker with the
// end of ACCESS, not the consumer's bookkeeping. For health checks.
func (l *Log) IndexLag(ctx context.Context) (IndexLag, error) {
	info, err := l.access.Info(ctx)
	if err != nil {
		return IndexLag{}, fmt.Errorf("%w: read log state: %w", ErrUnavailable, err)
	}
	mk, _, err := l.readMarker(ctx)
	if err != nil {
		return IndexLag{}, err
	}
	if info.State.LastSeq <= mk.seq {
		return IndexLag{}, nil
	}
	return IndexLag{Batches: info.State.LastSeq - mk.seq}, nil
}

// CheckIndex reports whether this log can list from its index and keep it current: its layout's
// first shard is there, and the indexer is not stuck on another layout's streams. A replica left
// running with another shard count than the index's (another replica re-laid it out) gets
// ErrIndexLayout, and its listings fail, until it is restarted with the index's count. For health
// checks.
func (l *Log) CheckIndex(ctx context.Context) error {
	l.ix.mu.Lock()
	stuck := l.ix.layoutErr
	l.ix.mu.Unlock()
	if stuck != nil {
		return fmt.Errorf("indexer: %w", stuck)
	}
	name := IndexStreamName(l.opts.IndexShards, 0)
	_, err := l.js.Stream(ctx, name)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: index stream %s: %w", ErrUnavailable, name, err)
	}
	if n, complete, err := existingIndexShards(ctx, l.js); err == nil && complete && n != l.opts.IndexShards {
		return fmt.Errorf("%w: the index has %d shards, this broker %d; restart it with the index's shard count", ErrIndexLayout, n, l.opts.IndexShards)
	}
	return fmt.Errorf("%w: index stream %s is missing; the indexer recreates it", ErrUnavailable, name)
}

// stopIndexer stops the indexer goroutine, after giving it a bounded time to index what this
// process wrote.
func (l *Log) stopIndexer() {
	if l.ix.cancel == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.PublishTimeout)
	l.waitIndexed(ctx)
	cancel()
	l.ix.cancel()
	<-l.ix.done
	l.ix.saves.Wait()
	l.saveHeadsOnStop(&l.ix.links)
}

// recordString returns string field num of an encoded AccessRecord (without decoding the rest), or
// "" if absent or malformed.
func recordString(rec []byte, num protowire.Number) string {
	for len(rec) > 0 {
		n, typ, k := protowire.ConsumeTag(rec)
		if k < 0 {
			return ""
		}
		rec = rec[k:]
		if n == num && typ == protowire.BytesType {
			v, k := protowire.ConsumeBytes(rec)
			if k < 0 {
				return ""
			}
			return string(v)
		}
		if k = protowire.ConsumeFieldValue(n, typ, rec); k < 0 {
			return ""
		}
		rec = rec[k:]
	}
	return ""
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

// maxRetry bounds the pause between failed indexing attempts.
const maxRetry = 5 * time.Second
