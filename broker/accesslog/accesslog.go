// Package accesslog is the broker's durable access log on NATS JetStream: every decision (released
// or refused) is appended as an aperture.audit.v1.AccessRecord and is durable before Append returns,
// so the broker never releases data without a durable access record.
//
// # Streams
//
// ACCESS (subject aperture.access.log) is the log itself. Each message is an AccessBatch whose
// records are the deterministic protobuf encodings of AccessRecords; those exact bytes are the
// leaves of the log's Merkle tree, numbered from 0 in (stream sequence, index in batch) order over
// authentic batches only. The stream is never trimmed and denies deletes and purges.
//
// The index holds one message per record, with the same bytes, on the subject
// aperture.access.citizen.<shards>.<shard>.<pseudonym>, and headers naming the record's place in
// ACCESS (Aperture-Log-Seq, Aperture-Log-Index), its leaf index in the tree (Aperture-Leaf-Index),
// its batch's first leaf and size (Aperture-Batch-Leaves) and a MAC by the broker over all of them
// (Aperture-Entry-Mac). It answers "all accesses to this citizen" without reading the log. It is
// sharded over IndexShards streams ACCESS_INDEX_<shards>_<shard> (shard = FNV-1a of the pseudonym
// modulo the shard count, two hex digits) because JetStream finds a subject's messages by walking
// the stream's blocks: one stream would make a citizen's lookup cost grow with the whole log, a
// shard only with its share. The shard count in the names keeps indexes of two counts apart. It is
// derived data: a background indexer on the durable consumer ACCESS_INDEXER writes it in log order
// (one replica at a time, the consumer's pinned client), records its position and leaf count in
// ACCESS_INDEX_POS after every batch, and repairs it after any fault by comparing it entry by entry
// with the log (Repair; VerifyIndex only reports). List lags the log by the indexer's delay
// (IndexLag), except that a broker always lists what it wrote itself.
//
// # Authentication
//
// Every ACCESS message carries a MAC under the broker's sealing key (see OpenBatch); a message
// without one is not the broker's, its records are not leaves, Records stops at it with a
// *BatchError, and the indexer skips it. Index entries and the position marker carry MACs too, so
// nothing written to NATS by anyone else is listed or trusted.
//
// # Group commit
//
// A durable JetStream write costs an fsync (single node) or a replication round (cluster), a few
// thousand per second at most. Append therefore queues the record and a committer writes everything
// queued as one ACCESS message: concurrent appends share one durable write, and none returns before
// the write that holds it is acknowledged. While one batch is being written the next one fills; one
// is in flight at a time. No timer delays a batch: under light load batches are small and fast,
// under heavy load they grow.
package accesslog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
)

// Stream names, subjects and headers. They are part of the on-disk format: audit tooling reads them.
const (
	AccessStream = "ACCESS"
	// IndexStream prefixes the index shard streams (see IndexStreamName).
	IndexStream        = "ACCESS_INDEX"
	LogSubject         = "aperture.access.log"
	IndexSubjectPrefix = "aperture.access.citizen."
	// HeaderLogSeq is the ACCESS stream sequence of the batch an index entry comes from.
	HeaderLogSeq = "Aperture-Log-Seq"
	// HeaderLogIndex is the entry's index in that batch.
	HeaderLogIndex = "Aperture-Log-Index"
	// HeaderLeafIndex is the entry's leaf index in the Merkle tree.
	HeaderLeafIndex = "Aperture-Leaf-Index"
	// HeaderBatchLeaves is "<first leaf>+<records>" of the entry's batch.
	HeaderBatchLeaves = "Aperture-Batch-Leaves"
	// HeaderEntryMAC is the broker's MAC over an index entry (or the position marker).
	HeaderEntryMAC = "Aperture-Entry-Mac"
	// HeaderIndexPrev links an index entry to the citizen's previous entry in its shard: that
	// entry's index sequence, or 0 if there was none. JetStream checked the link when it stored the
	// entry (see links.go), so a listing follows links instead of searching the shard. Entries
	// written without a link (by repair, or by earlier versions) have no such header.
	HeaderIndexPrev = "Aperture-Index-Prev"
	// HeaderIndexSeq is a linked entry's own index sequence, as the indexer wrote it: under the MAC,
	// so a copy stored elsewhere does not pass for the entry.
	HeaderIndexSeq = "Aperture-Index-Seq"
)

// DefaultIndexShards is the number of index streams of a new index unless Options.IndexShards says
// otherwise; an existing index keeps the count it has. Fewer shards make a release cheaper and a
// citizen's listing dearer:
//
//   - Every shard keeps the write cache of its newest block (up to 8 MB), so more shards grow the
//     heap faster and fault in more fresh pages; on a cluster every shard a group touches costs a
//     Raft commit, an fsync on every node. aperture bench on one node, alternating pairs, CPU per
//     release: 64 shards 173–182 µs against 16 shards 159–172 (six pairs, mean 175 against 165);
//     4 shards 152–161; 1 shard 144–160. On a cluster (one broker, three pairs) 64 against 16:
//     1,861–2,440 against 2,743–3,295 releases/s, p99 125–144 against 90–106 ms.
//   - A listing reads the citizen's shard, where the citizen's entries are 1/shards as sparse.
//     BenchmarkList, 1,000,000 records, 200 listings, mean (p99) of a page of 100 and of 1,000:
//     64 shards 3.4–4.5 (6–27) and 18–20 (108–169) ms; 16 shards 2.2–6.1 (6–41) and 26–27
//     (108–124) ms; 4 shards 5.9 (30) and 45 (274) ms; 1 shard 17.6 (74) and 116 (1,007) ms.
const DefaultIndexShards = 16

// DefaultIndexGroupWindow is the indexer's group window on replicated streams (Options.IndexGroupWindow).
// Every group costs a Raft commit (and an fsync on each replica) per index shard it touches, plus
// one for its position marker, so on a cluster the indexer's cost falls as groups grow: taking only
// the batches already delivered, a loaded cluster's groups held one or two batches, and the index
// shards' Raft groups took more of the cluster's CPU than everything else together. On a single node
// the index streams are not fsynced per message and a window made no difference (aperture bench,
// three alternating pairs), so it is off there.
//
// aperture bench --cluster 3 --brokers 1, alternating pairs: none 1,312 / 1,352 / 1,336 releases/s
// against 20ms 1,707 / 1,938 / 1,814; then 20ms 2,076 / 1,885 / 1,962 against 100ms 2,476 / 2,545 /
// 2,537; then 50ms 2,233 / 2,449 / 2,444 against 100ms 2,377 / 2,173 / 2,360, with release p99
// 111–116 ms at 50ms and 122–136 ms at 100ms (larger groups arrive at the shards as larger bursts).
const DefaultIndexGroupWindow = 50 * time.Millisecond

// duplicateWindow is how long JetStream remembers message ids; a publish retried within it is not
// stored twice.
const duplicateWindow = 2 * time.Minute

var (
	// ErrUnavailable means the record could not be made durable: the caller MUST NOT release.
	ErrUnavailable = errors.New("access log unavailable")
	// ErrClosed is returned by Append after Close. It wraps ErrUnavailable.
	ErrClosed = fmt.Errorf("%w: closed", ErrUnavailable)
	// ErrInvalidRecord means the record cannot be logged as given (e.g. no usable pseudonym).
	ErrInvalidRecord = errors.New("invalid access record")
	// ErrInvalidPageToken means a page token was not one List returned.
	ErrInvalidPageToken = errors.New("invalid page token")
)

// Sealer is the broker's sealing key as the log uses it (keys.Sealer: AES-256-GCM, key-versioned,
// local or a Vault data key). Sealing an empty plaintext with associated data gives a MAC (GMAC)
// over that data; Open with the same associated data verifies it.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(ciphertext, associatedData []byte) ([]byte, error)
}

// Options configure the log. Zero values take the defaults below.
type Options struct {
	// Sealer authenticates ACCESS batches, index entries and the index position (keys.Provider's
	// Sealer: a Vault data key with keys: vault). Required.
	Sealer Sealer
	// Replicas of the streams: 1 on the embedded server, 3 in a cluster. Default 1.
	Replicas int
	// IndexShards is the number of index streams, 1 to 256. Zero keeps the count of the index there
	// is, or DefaultIndexShards for a new one. Another count than the index's rebuilds it from the
	// log at Open; every replica must then be restarted with the same count (a running replica that
	// finds the index re-laid out stops indexing with ErrIndexLayout rather than rebuild it back).
	IndexShards int
	// MaxBatch is the most records in one durable write. Default 512.
	MaxBatch int
	// MaxBatchBytes is the most record bytes in one durable write; it must fit the server's
	// max_payload. Default 512 KiB.
	MaxBatchBytes int
	// PublishTimeout bounds the wait for JetStream to acknowledge an index write. Default 5s.
	PublishTimeout time.Duration
	// AppendTimeout bounds the wait for JetStream to acknowledge a batch of records, counted from
	// when it is sent; a batch not acknowledged by then fails and opens the breaker. A stream without
	// quorum never answers, so this is how long the first caller waits to hear Unavailable.
	// Default PublishTimeout; the broker sets 250ms.
	AppendTimeout time.Duration
	// Meter records the log's metrics (aperture_accesslog_*); nil records none.
	Meter metric.MeterProvider
	// OnBreaker, if set, is called (from the log's goroutines; it must not block) when the breaker
	// opens (true) or closes (false), so health is updated at once.
	OnBreaker func(open bool)
	// IndexGroupWindow is how long the indexer keeps a group of ACCESS batches open for more batches
	// after its first; negative keeps none (a group takes only the batches already delivered).
	// Default DefaultIndexGroupWindow with Replicas > 1, none on a single node. A citizen's listing
	// lags the log by up to this much more.
	IndexGroupWindow time.Duration
	// IndexHeadsEvery is how often the indexer saves each citizen's newest index entry, so that a
	// restarted indexer need not look every citizen up again (heads.go); negative never saves.
	// Default DefaultIndexHeadsEvery.
	IndexHeadsEvery time.Duration
	// IndexMaxBytes limits each index shard's size; 0 is unlimited. A full shard refuses entries
	// (the indexer retries, the log itself is unaffected). For tests of a full disk.
	IndexMaxBytes int64
	// Logger; nil discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.IndexShards == 0 {
		o.IndexShards = DefaultIndexShards
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 512
	}
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = 512 << 10
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = 5 * time.Second
	}
	if o.AppendTimeout == 0 {
		o.AppendTimeout = o.PublishTimeout
	}
	if o.IndexGroupWindow == 0 && o.Replicas > 1 {
		o.IndexGroupWindow = DefaultIndexGroupWindow
	}
	if o.IndexGroupWindow < 0 {
		o.IndexGroupWindow = 0
	}
	if o.IndexHeadsEvery == 0 {
		o.IndexHeadsEvery = DefaultIndexHeadsEvery
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *Options) validate(maxPayload int64) error {
	switch {
	case o.Sealer == nil:
		return errors.New("a sealer is required to authenticate the log")
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("replicas %d: want 1 to 5", o.Replicas)
	case o.IndexShards < 1 || o.IndexShards > 256:
		return fmt.Errorf("index shards %d: want 1 to 256", o.IndexShards)
	case o.MaxBatch < 1:
		return fmt.Errorf("max batch %d: want at least 1", o.MaxBatch)
	case o.MaxBatchBytes < 1024:
		return fmt.Errorf("max batch bytes %d: want at least 1024", o.MaxBatchBytes)
	case maxPayload > 0 && int64(o.MaxBatchBytes)+batchOverhead(o.MaxBatch) > maxPayload:
		return fmt.Errorf("max batch bytes %d does not fit the server's max_payload %d", o.MaxBatchBytes, maxPayload)
	case o.PublishTimeout <= 0:
		return fmt.Errorf("publish timeout %s: want a positive duration", o.PublishTimeout)
	case o.AppendTimeout <= 0:
		return fmt.Errorf("append timeout %s: want a positive duration", o.AppendTimeout)
	}
	return nil
}

// inFlight is the number of batches written at once. One, as in classic group commit: the next batch
// fills while the current one is written. Two (sending the next while the current is acknowledged)
// halved the records per write at 64 callers (17.5 -> 12.7) and cost more than the overlap saved:
// aperture bench --brokered-only, two runs each, 7,227 / 7,977 releases/s at 203-230 us of CPU with
// one against 6,482 / 6,538 at 254-256 us with two (6,051 / 6,091 with four); at 8 callers 2,780 /
// 3,480 against 2,578 / 2,749; on a three-node cluster 1,406 / 1,527 against 1,281 / 1,389; at one
// caller the same.
const inFlight = 1

// Log is the access log. It is safe for concurrent use.
type Log struct {
	opts    Options
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream // management and reads, as the caller configured it
	pub     jetstream.JetStream // publishes, with our ack timeout
	api     string              // JetStream API subject prefix, for direct gets
	replies *replies            // responses to batched direct gets
	access  jetstream.Stream

	mu       sync.Mutex
	queue    []*waiter
	closing  bool
	readOnly bool          // OpenReader
	kick     chan struct{} // wakes the committer; buffered, one pending kick is enough

	slots    chan struct{} // in-flight batch tokens
	inflight chan *batch   // committer → completer, in publish order
	done     chan struct{} // closed when the completer has stopped
	closed   chan struct{} // closed when Close is first called
	closeMu  sync.Mutex

	brk     breaker
	metrics *logMetrics

	ix indexer

	stats struct {
		records, batches, failed, refused, indexFailures               atomic.Uint64
		unauthenticBatches, unauthenticEntries, repaired, indexLookups atomic.Uint64
	}
	lastFailLog atomic.Int64 // unix nanoseconds
}

// Stats are counters since Open.
type Stats struct {
	// Records and Batches made durable: Records/Batches is the group-commit factor.
	Records, Batches uint64
	// Failed is the number of records whose append failed (the callers got an error).
	Failed uint64
	// Refused is the number of appends refused at once because the breaker was open.
	Refused uint64
	// IndexFailures counts failed indexer attempts (each is retried, then repaired).
	IndexFailures uint64
	// UnauthenticBatches counts ACCESS messages the indexer found without a valid broker MAC;
	// UnauthenticEntries index entries (or position markers) without one that a reader met. Any
	// non-zero value means something other than the broker wrote to NATS.
	UnauthenticBatches, UnauthenticEntries uint64
	// Repaired counts index entries Repair added or removed.
	Repaired uint64
	// IndexLookups counts the indexer's lookups of a citizen's newest entry, one for each citizen it
	// did not know (see links.go): each reads the block that entry is in.
	IndexLookups uint64
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Records:            l.stats.records.Load(),
		Batches:            l.stats.batches.Load(),
		Failed:             l.stats.failed.Load(),
		Refused:            l.stats.refused.Load(),
		IndexFailures:      l.stats.indexFailures.Load(),
		UnauthenticBatches: l.stats.unauthenticBatches.Load(),
		UnauthenticEntries: l.stats.unauthenticEntries.Load(),
		Repaired:           l.stats.repaired.Load(),
		IndexLookups:       l.stats.indexLookups.Load(),
	}
}

// Open creates or updates the ACCESS stream and the index streams, starts the background indexer
// (which first repairs the index if it does not hold one entry per leaf) and the committer.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Log, error) {
	if opts.IndexShards == 0 {
		// Keep the index there is: a new default must not rebuild a running deployment's index (or
		// leave replicas of two builds looking in different shards).
		n, _, err := existingIndexShards(ctx, js)
		if err != nil {
			return nil, err
		}
		opts.IndexShards = n
	}
	opts.setDefaults()
	nc := js.Conn()
	if err := opts.validate(nc.MaxPayload()); err != nil {
		return nil, fmt.Errorf("access log options: %w", err)
	}
	l := &Log{
		opts:     opts,
		log:      opts.Logger,
		nc:       nc,
		js:       js,
		api:      apiPrefix(js.Options()),
		kick:     make(chan struct{}, 1),
		slots:    make(chan struct{}, inFlight),
		inflight: make(chan *batch, inFlight),
		done:     make(chan struct{}),
		closed:   make(chan struct{}),
		brk:      breaker{opened: make(chan struct{})},
		ix:       indexer{progress: make(chan struct{}), repairReq: make(chan chan repairResult, 1)},
	}
	var err error
	if l.metrics, err = newLogMetrics(opts.Meter, l); err != nil {
		return nil, fmt.Errorf("access log metrics: %w", err)
	}
	if l.pub, err = publisher(js, opts.PublishTimeout); err != nil {
		return nil, fmt.Errorf("access log publisher: %w", err)
	}
	if l.replies, err = newReplies(nc); err != nil {
		return nil, fmt.Errorf("%w: subscribe for direct gets: %w", ErrUnavailable, err)
	}
	fail := func(err error) (*Log, error) {
		_ = l.replies.close()
		return nil, err
	}
	if l.access, err = js.CreateOrUpdateStream(ctx, accessConfig(opts)); err != nil {
		return fail(fmt.Errorf("create stream %s: %w", AccessStream, err))
	}
	if err := l.ensureIndexStreams(ctx, true); err != nil {
		return fail(err)
	}
	if err := l.startIndexer(ctx); err != nil {
		return fail(fmt.Errorf("start access indexer: %w", err))
	}
	go l.commitLoop()
	go l.completeLoop()
	return l, nil
}

// OpenReader opens an existing log to read and check it (an auditor's tool): it creates and
// changes nothing, starts neither committer nor indexer, and takes the index's shard count from the
// index itself. Records, List, ListEntries, VerifyIndex and IndexLag work; Append fails with
// ErrClosed and Repair with ErrReadOnly. opts.Sealer is required (MACs are checked with it).
func OpenReader(ctx context.Context, js jetstream.JetStream, opts Options) (*Log, error) {
	opts.setDefaults()
	nc := js.Conn()
	if opts.Sealer == nil {
		return nil, errors.New("access log options: a sealer is required to authenticate the log")
	}
	l := &Log{
		opts: opts, log: opts.Logger, nc: nc, js: js, api: apiPrefix(js.Options()),
		closing: true, readOnly: true, done: make(chan struct{}), closed: make(chan struct{}),
		brk: breaker{opened: make(chan struct{})}, metrics: noLogMetrics(),
		ix: indexer{progress: make(chan struct{}), mode: modePassive},
	}
	close(l.done)
	close(l.closed)
	var err error
	if l.access, err = js.Stream(ctx, AccessStream); err != nil {
		return nil, fmt.Errorf("%w: stream %s: %w", ErrUnavailable, AccessStream, err)
	}
	n, complete, err := existingIndexShards(ctx, js)
	if err != nil {
		return nil, err
	}
	if !complete {
		// Nothing to read it with; the broker's Open rebuilds it.
		return nil, fmt.Errorf("%w: no complete access index (streams %s_<shards>_<shard>)", ErrUnavailable, IndexStream)
	}
	l.opts.IndexShards = n
	if l.replies, err = newReplies(nc); err != nil {
		return nil, fmt.Errorf("%w: subscribe for direct gets: %w", ErrUnavailable, err)
	}
	return l, nil
}

// ErrReadOnly is returned by Repair on a log opened with OpenReader.
var ErrReadOnly = errors.New("access log opened read-only")

func accessConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AccessStream,
		Description: "Aperture access log: AccessBatch messages, never trimmed",
		Subjects:    []string{LogSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxAge:      0,
		Discard:     jetstream.DiscardNew, // if a limit is ever set by hand, refuse writes rather than drop history
		DenyDelete:  true,
		DenyPurge:   true,
		Duplicates:  duplicateWindow,
		AllowDirect: true,
	}
}

// publisher returns a JetStream context on the same connection and API prefix whose asynchronous
// publishes time out: the caller's context may have no timeout, and an ack that never comes must not
// hold a batch forever.
func publisher(js jetstream.JetStream, timeout time.Duration) (jetstream.JetStream, error) {
	o := js.Options()
	opts := []jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(timeout)}
	switch {
	case o.Domain != "":
		return jetstream.NewWithDomain(js.Conn(), o.Domain, opts...)
	case o.APIPrefix != "":
		return jetstream.NewWithAPIPrefix(js.Conn(), o.APIPrefix, opts...)
	default:
		return jetstream.New(js.Conn(), opts...)
	}
}

func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		if o.APIPrefix[len(o.APIPrefix)-1] != '.' {
			return o.APIPrefix + "."
		}
		return o.APIPrefix
	default:
		return jetstream.DefaultAPIPrefix
	}
}

// Close stops accepting records, writes everything already queued, waits for it and stops. It does
// not close the NATS connection.
func (l *Log) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	l.mu.Lock()
	already := l.closing
	l.closing = true
	l.mu.Unlock()
	if !already {
		close(l.closed)
		l.wake()
	}
	<-l.done
	l.brk.mu.Lock()
	prober := l.brk.prober
	l.brk.mu.Unlock()
	if prober != nil {
		<-prober
	}
	l.stopIndexer()
	if !already {
		l.metrics.unregister()
	}
	if !already || l.readOnly {
		// Only fails if the connection is closed, which unsubscribed it anyway.
		_ = l.replies.close()
	}
	return nil
}
