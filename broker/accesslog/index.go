package accesslog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// catchUpBudget bounds the records one catch-up step re-indexes, so a large backlog never holds up
// the batches waiting behind it for long.
const catchUpBudget = 4096

// maxRetry bounds the pause between failed catch-up attempts.
const maxRetry = 5 * time.Second

// indexer is the state of ACCESS_INDEX maintenance, owned by the completer goroutine.
//
// The index is written in log order: live batches in ack order, catch-up in sequence order, and
// live indexing pauses (dirty) from the first failure until catch-up has recovered. So with one
// writer, a batch is missing or partial in the index only near its tail. Catch-up reads the tail
// (at least 2×MaxBatch entries), notes the entries present, and re-indexes every ACCESS batch from
// the oldest one the tail fully covers, skipping what is present: exact for one writer, and for
// several broker replicas writing one log as long as their disorder stays within the tail; beyond
// it the duplicate window (2 minutes) still keeps a batch from being indexed twice.
type indexer struct {
	dirty bool
	// next is the lowest ACCESS sequence not yet indexed; 0 means unknown (read the index tail).
	next uint64
	// present are entries found in the index tail that catch-up must not index again.
	present map[logPos]bool
	backoff time.Duration
}

type logPos struct {
	seq uint64
	idx int
}

// markDirty pauses live indexing until catch-up has recovered, and schedules catch-up.
func (ix *indexer) markDirty(retry *time.Timer) {
	ix.dirty, ix.next, ix.present = true, 0, nil
	ix.backoff = min(max(2*ix.backoff, 100*time.Millisecond), maxRetry)
	retry.Reset(ix.backoff)
}

// catchUpOrBackOff runs one catch-up step and schedules the next one: at once after progress,
// later after a failure.
func (l *Log) catchUpOrBackOff(retry *time.Timer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*l.opts.PublishTimeout)
	defer cancel()
	complete, err := l.catchUpStep(ctx)
	switch {
	case err != nil:
		l.ix.backoff = min(max(2*l.ix.backoff, 100*time.Millisecond), maxRetry)
		l.log.Warn("access index catch-up failed", "retry_in", l.ix.backoff, "err", err)
		retry.Reset(l.ix.backoff)
	case complete:
		l.ix.backoff = 0
		l.log.Info("access index caught up with the log", "next_seq", l.ix.next)
	default:
		retry.Reset(0)
	}
}

// catchUpStep re-indexes up to catchUpBudget records of the ACCESS batches the index may miss. It
// reports whether the index has caught up with the end of ACCESS.
func (l *Log) catchUpStep(ctx context.Context) (complete bool, err error) {
	if st := l.nc.Status(); st != nats.CONNECTED {
		return false, fmt.Errorf("%w: NATS connection is %s", ErrUnavailable, st)
	}
	if l.ix.next == 0 {
		if l.ix.next, l.ix.present, err = l.indexTail(ctx); err != nil {
			return false, err
		}
	}
	read, done, dups, budgetSpent := 0, 0, 0, false
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
		skip := func(i int) bool {
			if pseudonyms[i] == "" || l.ix.present[logPos{seq, i}] {
				return true
			}
			done++
			return false
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
	if done > 0 {
		// Duplicates are expected when another broker replica indexed the same batches; otherwise
		// they are entries deleted from the index less than the duplicate window ago, which
		// JetStream will not store again: delete the whole stream to rebuild the index.
		l.log.Info("re-indexed access records", "records", done, "already_indexed", dups, "next_seq", l.ix.next)
	}
	if !end || budgetSpent {
		return false, nil
	}
	l.ix.dirty, l.ix.present, l.ix.backoff = false, nil, 0
	return true, nil
}

// maxTail bounds the index entries catch-up reads to find where to start.
const maxTail = 1 << 16

// indexTail reads the newest index entries and returns the ACCESS sequence to re-index from and the
// entries already present from there on.
func (l *Log) indexTail(ctx context.Context) (uint64, map[logPos]bool, error) {
	info, err := l.index.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Someone deleted the index to have it rebuilt (or lost it): recreate it and start over.
		l.log.Warn("access index stream missing; recreating it and re-indexing the whole log")
		l.index, err = l.js.CreateOrUpdateStream(ctx, indexConfig(l.opts))
		if err != nil {
			return 0, nil, fmt.Errorf("%w: recreate stream %s: %w", ErrUnavailable, IndexStream, err)
		}
		info = l.index.CachedInfo()
	}
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read index state: %w", ErrUnavailable, err)
	}
	st := info.State
	if st.Msgs == 0 {
		return 1, nil, nil
	}
	window := uint64(max(2*l.opts.MaxBatch, 256))
	for {
		start := st.FirstSeq
		whole := st.LastSeq-st.FirstSeq+1 <= window
		if !whole {
			start = st.LastSeq - window + 1
		}
		present := map[logPos]bool{}
		var first, from uint64 // the batch of the oldest entry read; the oldest batch after it
		_, err := l.scan(ctx, IndexStream, start, "", 1024, func(_ uint64, m *nats.Msg) (bool, error) {
			pos, ok := entryPos(m.Header)
			if !ok {
				return false, nil
			}
			present[pos] = true
			switch {
			case first == 0:
				first = pos.seq
			case pos.seq != first && (from == 0 || pos.seq < from):
				from = pos.seq
			}
			return false, nil
		})
		if err != nil {
			return 0, nil, fmt.Errorf("read index tail: %w", err)
		}
		switch {
		case whole:
			// The whole index is in hand: check the whole log against it.
			return 1, present, nil
		case from != 0:
			// The oldest batch read may have entries before the window; the next one is whole.
			return from, present, nil
		case window < maxTail:
			window *= 4
		default:
			return first, present, nil
		}
	}
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
			Subject: IndexSubjectPrefix + pseudonym,
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
