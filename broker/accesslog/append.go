package accesslog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// leafOptions encode a record as its log leaf. Deterministic, so the leaf (and the Merkle tree) does
// not depend on map iteration or field order quirks of one encoder run.
var leafOptions = proto.MarshalOptions{Deterministic: true}

// waiter is one Append call waiting for its record to be durable.
type waiter struct {
	leaf      []byte
	pseudonym string
	done      chan error // buffered: the completer never blocks on a caller that left
	// abandoned is set when the caller gave up; a record not yet taken into a batch is then dropped,
	// so a request that was not answered leaves no "released" record behind when that can be helped.
	abandoned atomic.Bool
	// probe marks the breaker's probe: an empty batch of its own, no record.
	probe bool
}

// batch is one ACCESS message in flight.
type batch struct {
	id      string
	waiters []*waiter
	future  jetstream.PubAckFuture
	probe   bool
	// sent is when it was published; past deadline its outcome counts as failed.
	sent, deadline time.Time
}

// Append writes rec to the log and returns once it is durable: stored and acknowledged by JetStream
// (fsynced on a single node, replicated in a cluster). Any error means the record may not be durable
// and the caller MUST NOT release anything; errors from the log wrap ErrUnavailable. The indexer
// lists the record by citizen in the background; List in this process waits for it (bounded), so a
// caller reads its own writes, and indexing failures never fail Append (the record is durable and
// is indexed on the indexer's next attempt).
//
// If ctx ends first Append returns its error; the record may still be written with the batch it
// joined.
func (l *Log) Append(ctx context.Context, rec *auditv1.AccessRecord) error {
	if rec == nil {
		return fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	if err := checkPseudonym(rec.GetCitizenPseudonym()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	leaf, err := leafOptions.Marshal(rec)
	if err != nil {
		return fmt.Errorf("%w: encode: %w", ErrInvalidRecord, err)
	}
	if len(leaf) > l.opts.MaxBatchBytes {
		return fmt.Errorf("%w: %d bytes, more than a whole batch (%d)", ErrInvalidRecord, len(leaf), l.opts.MaxBatchBytes)
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("append access record: %w", err)
	}
	w := &waiter{leaf: leaf, pseudonym: rec.GetCitizenPseudonym(), done: make(chan error, 1)}

	if err := l.Writable(); err != nil {
		l.stats.refused.Add(1)
		l.metrics.refused.Add(bgCtx, 1)
		return err
	}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	l.wake()

	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		w.abandoned.Store(true)
		return fmt.Errorf("append access record: %w", context.Cause(ctx))
	}
}

func (l *Log) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// commitLoop turns the queue into batches. It takes an in-flight slot before it takes records, so
// while a batch is in flight new records keep queueing and the next batch grows.
func (l *Log) commitLoop() {
	defer close(l.inflight)
	for {
		if !l.waitForWork() {
			return
		}
		l.slots <- struct{}{}
		b := l.takeBatch()
		if b == nil {
			<-l.slots
			continue
		}
		if err := l.publish(b); err != nil {
			// Nothing was sent, so nothing can have been stored: fail the batch here and keep the
			// completer's order for batches whose outcome is still open.
			l.fail(b, err)
			<-l.slots
			continue
		}
		l.inflight <- b
	}
}

// waitForWork blocks until records are queued; it returns false when the log is closing and the
// queue is drained.
func (l *Log) waitForWork() bool {
	for {
		l.mu.Lock()
		n, closing := len(l.queue), l.closing
		l.mu.Unlock()
		switch {
		case n > 0:
			return true
		case closing:
			return false
		}
		<-l.kick
	}
}

// takeBatch removes up to MaxBatch records and MaxBatchBytes from the head of the queue, dropping
// records whose callers gave up.
func (l *Log) takeBatch() *batch {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		ws    []*waiter
		bytes int
		i     int
	)
	probe := false
	for ; i < len(l.queue) && len(ws) < l.opts.MaxBatch; i++ {
		w := l.queue[i]
		if w.abandoned.Load() {
			continue
		}
		if w.probe {
			// A probe travels alone, so its batch holds no record.
			if len(ws) == 0 {
				ws, probe = append(ws, w), true
				i++
			}
			break
		}
		if len(ws) > 0 && bytes+len(w.leaf) > l.opts.MaxBatchBytes {
			break
		}
		bytes += len(w.leaf)
		ws = append(ws, w)
	}
	rest := copy(l.queue, l.queue[i:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	if len(ws) == 0 {
		return nil
	}
	return &batch{id: newBatchID(), waiters: ws, probe: probe}
}

// publish sends the batch as one ACCESS message without waiting for the ack.
func (l *Log) publish(b *batch) error {
	// Fail fast while disconnected: nats.go would buffer the message and flush it after a reconnect,
	// long after the callers were told it failed.
	if st := l.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: NATS connection is %s", ErrUnavailable, st)
	}
	size := 0
	for _, w := range b.waiters {
		size += protowire.SizeTag(1) + protowire.SizeBytes(len(w.leaf))
	}
	// The AccessBatch encoding, written directly: field 1, one length-delimited element per leaf,
	// then the broker's MAC over those bytes (field 2).
	data := make([]byte, 0, size+64)
	for _, w := range b.waiters {
		if w.probe {
			continue // no record: the batch is the MAC alone, which adds no leaf
		}
		data = protowire.AppendTag(data, 1, protowire.BytesType)
		data = protowire.AppendBytes(data, w.leaf)
	}
	data, err := appendBatchMAC(l.opts.Sealer, data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	msg := &nats.Msg{Subject: LogSubject, Data: data, Header: nats.Header{}}
	b.sent = time.Now()
	b.deadline = b.sent.Add(l.opts.AppendTimeout)
	var f jetstream.PubAckFuture
	f, err = l.pub.PublishMsgAsync(msg, jetstream.WithMsgID(b.id), jetstream.WithExpectStream(AccessStream))
	if err != nil {
		return fmt.Errorf("%w: publish batch: %w", ErrUnavailable, err)
	}
	b.future = f
	return nil
}

// completeLoop waits for each batch's ack in publish order, then answers its waiters.
func (l *Log) completeLoop() {
	defer close(l.done)
	for b := range l.inflight {
		l.complete(b)
		<-l.slots
	}
}

func (l *Log) complete(b *batch) {
	seq, err := l.await(b)
	if err != nil {
		// The outcome is unknown (the message may have been stored before the ack was lost); if it
		// was stored, the indexer indexes it like any other batch.
		l.fail(b, err)
		return
	}
	l.metrics.durable(b, time.Since(b.sent))
	if !b.probe {
		l.stats.batches.Add(1)
		l.stats.records.Add(uint64(len(b.waiters)))
	}
	l.ix.mu.Lock()
	l.ix.acked = max(l.ix.acked, seq)
	l.ix.mu.Unlock()
	// The record is durable; the indexer lists it by its citizen in the background.
	for _, w := range b.waiters {
		w.done <- nil
	}
}

// await returns the ACCESS sequence of the batch once JetStream acknowledged it. It gives up at the
// batch's deadline (AppendTimeout after it was sent: a stream without quorum never answers) and,
// for a batch of records, as soon as the breaker opens on an earlier batch: the caller hears
// Unavailable now rather than after its own timeout.
func (l *Log) await(b *batch) (uint64, error) {
	t := time.NewTimer(time.Until(b.deadline))
	defer t.Stop()
	var opened <-chan struct{}
	if !b.probe {
		opened = l.openedCh()
	}
	select {
	case ack := <-b.future.Ok():
		return ack.Sequence, nil
	case err := <-b.future.Err():
		return 0, fmt.Errorf("%w: write batch of %d records: %w", ErrUnavailable, len(b.waiters), err)
	case <-t.C:
		return 0, fmt.Errorf("%w: write batch of %d records: no acknowledgement after %s", ErrUnavailable, len(b.waiters), l.opts.AppendTimeout)
	case <-opened:
		select { // an ack that is already here still counts
		case ack := <-b.future.Ok():
			return ack.Sequence, nil
		default:
		}
		return 0, fmt.Errorf("%w: write batch of %d records: an earlier write failed", ErrBreakerOpen, len(b.waiters))
	}
}

func (l *Log) fail(b *batch, err error) {
	if b.probe {
		for _, w := range b.waiters {
			w.done <- err
		}
		return
	}
	l.metrics.failed(len(b.waiters))
	l.trip(err)
	l.stats.failed.Add(uint64(len(b.waiters)))
	// During an outage every batch fails at once; one line a second is enough to tell.
	if now := time.Now().UnixNano(); now-l.lastFailLog.Load() >= int64(time.Second) {
		l.lastFailLog.Store(now)
		l.log.Warn("access log write failed; callers get ErrUnavailable", "records", len(b.waiters), "failed_total", l.stats.failed.Load(), "err", err)
	}
	for _, w := range b.waiters {
		w.done <- err
	}
}

// closingNow reports whether Close has begun (the breaker's prober stops then).
func (l *Log) closingNow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// newBatchID is the batch's Nats-Msg-Id: random, so a retried publish of the same batch is
// recognised and different batches never collide.
func newBatchID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// batchOverhead bounds what a batch adds to its records' bytes: a tag and a length per record
// (the length varint takes at most 3 bytes below 2 MiB) and the message headers.
func batchOverhead(maxBatch int) int64 { return int64(maxBatch)*4 + 512 }
