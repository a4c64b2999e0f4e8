package accesslog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Watcher follows one citizen's new access records as they are indexed. Create it with Watch, read with
// Next, and Stop it when done.
type Watcher struct {
	sub       *nats.Subscription
	l         *Log
	pseudonym string
}

// Watch subscribes (core NATS, no JetStream consumer) to the citizen's index subject. Every record
// indexed from the moment Watch returns is delivered by Next: index entries are written only after the
// record's durable write to ACCESS, so a watcher never sees a record that could still be lost.
//
// Delivery is at most once per index publish: a record the index re-publishes (a retried write, a
// repair) may arrive twice, and one published while the connection is down is missed; callers that
// need everything read List as well. Records are delivered in index order. Only entries with the
// broker's MAC for this citizen are delivered: anything else published on the subject is dropped
// and reported.
func (l *Log) Watch(ctx context.Context, pseudonym string) (*Watcher, error) {
	if err := checkPseudonym(pseudonym); err != nil {
		return nil, fmt.Errorf("watch access records: %w", err)
	}
	sub, err := l.nc.SubscribeSync(IndexSubject(l.opts.IndexShards, pseudonym))
	if err != nil {
		return nil, fmt.Errorf("%w: watch access records: %w", ErrUnavailable, err)
	}
	// A bounded backlog per watcher: a consumer that stops reading loses records (it is a live view;
	// List has them all) instead of holding memory.
	if err := sub.SetPendingLimits(4096, 8<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("watch access records: %w", err)
	}
	// The server has the interest once the flush returns: what is indexed after Watch returns reaches us.
	fctx, cancel := context.WithTimeout(ctx, l.opts.PublishTimeout) // FlushWithContext needs a deadline
	defer cancel()
	if err := l.nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("%w: watch access records: %w", ErrUnavailable, err)
	}
	return &Watcher{sub: sub, l: l, pseudonym: pseudonym}, nil
}

// Next blocks until the next record arrives, ctx ends (its error is returned) or the subscription ends
// (the watcher was stopped, or the NATS connection closed: an error wrapping ErrUnavailable).
func (w *Watcher) Next(ctx context.Context) (*auditv1.AccessRecord, error) {
	e, err := w.NextEntry(ctx)
	if err != nil {
		return nil, err
	}
	return e.Record, nil
}

// NextEntry is Next with the record's leaf and leaf index.
func (w *Watcher) NextEntry(ctx context.Context) (Entry, error) {
	for {
		m, err := w.sub.NextMsgWithContext(ctx)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return Entry{}, context.Cause(ctx)
		case errors.Is(err, nats.ErrSlowConsumer):
			continue // some records were dropped; keep following
		default:
			return Entry{}, fmt.Errorf("%w: watch access records: %w", ErrUnavailable, err)
		}
		p, err := w.l.openEntryMsg(m.Subject, 0, m.Header, m.Data)
		if err != nil {
			w.l.stats.unauthenticEntries.Add(1)
			w.l.log.Error("message on a citizen's index subject is not authenticated by the broker; not delivered",
				"unauthentic_total", w.l.stats.unauthenticEntries.Load(), "err", err)
			continue
		}
		rec := new(auditv1.AccessRecord)
		if err := proto.Unmarshal(m.Data, rec); err != nil || rec.GetCitizenPseudonym() != w.pseudonym {
			continue
		}
		return Entry{Record: rec, Leaf: m.Data, LeafIndex: p.leaf}, nil
	}
}

// Stop ends the subscription. It is safe to call more than once.
func (w *Watcher) Stop() {
	_ = w.sub.Unsubscribe()
}
