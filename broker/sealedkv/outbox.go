package sealedkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// # Outbox
//
// A store whose writes must also tell someone (case transitions, correction requests) keeps the
// messages in the record it writes: one sealed, revision-checked write makes both durable, or neither.
// The bucket's stream is then the outbox, in order. A durable consumer on it hands every new revision
// to a [Relay], which opens it (a revision that does not authenticate is reported and counts as
// absent: its messages are never published), publishes its messages and acknowledges the revision
// only when JetStream has acknowledged every one. Until then it retries, and a retry — or a revision
// handed out again after a crash — publishes under the same Nats-Msg-Id, so the target stream keeps
// each message once (within its duplicate window).

// RelayAckWait is how long a revision handed to a relay that went silent waits before another gets
// it; a relay that is retrying says it is still at work.
const RelayAckWait = 30 * time.Second

// Message is one message a record's revision carries for the outbox relay to publish.
type Message struct {
	Subject string
	Data    []byte
	// ID is the Nats-Msg-Id: the same message of the same revision always has the same one.
	ID string
}

// Messages opens one revision of the bucket and returns the messages it carries. An error wrapping
// ErrUnauthentic (from Codec.Open or Codec.Reject) skips the revision for good; any other is retried.
type Messages func(ctx context.Context, e jetstream.KeyValueEntry) ([]Message, error)

// OutboxConsumer is the durable consumer of the codec's bucket that the relays named name read. Create
// it before the store's first write, so that no revision is missed; every replica binds the same one,
// and each revision goes to one relay at a time.
func (c *Codec) OutboxConsumer(name, description string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   description,
		FilterSubject: "$KV." + c.bucket + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy, // revisions written before there was an outbox carry nothing
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       RelayAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

// Relay publishes the messages of a bucket's revisions from its outbox until its Run's context ends.
type Relay struct {
	bucket   string
	js       jetstream.JetStream
	cons     jetstream.Consumer
	messages Messages
	log      *slog.Logger

	published atomic.Uint64
	failures  atomic.Uint64
	skipped   atomic.Uint64
}

// Relay creates or binds the outbox consumer cfg (from OutboxConsumer) and returns a relay that
// publishes what messages returns for each revision. Run it for as long as the broker runs; every
// replica may run one.
func (c *Codec) Relay(ctx context.Context, js jetstream.JetStream, cfg jetstream.ConsumerConfig, messages Messages) (*Relay, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, "KV_"+c.bucket, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s outbox: bind consumer %s: %w", c.bucket, cfg.Durable, err)
	}
	return &Relay{bucket: c.bucket, js: js, cons: cons, messages: messages, log: c.log.With("outbox", c.bucket)}, nil
}

// Published counts the messages JetStream acknowledged (a duplicate it dropped included).
func (r *Relay) Published() uint64 { return r.published.Load() }

// Failures counts failed publish attempts (each was retried).
func (r *Relay) Failures() uint64 { return r.failures.Load() }

// Skipped counts revisions whose record did not authenticate: reported and never published.
func (r *Relay) Skipped() uint64 { return r.skipped.Load() }

// Run relays until ctx ends, then returns nil. A revision whose messages are not all acknowledged when
// ctx ends is handed back, to be published by another replica or after a restart.
func (r *Relay) Run(ctx context.Context) error {
	backoff := newBackoff()
	for ctx.Err() == nil {
		batch, err := r.cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			r.log.Warn("outbox relay: cannot read the outbox; retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		for msg := range batch.Messages() {
			r.relay(ctx, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			r.log.Warn("outbox relay: reading the outbox failed; retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
	}
	return nil
}

// relay publishes the messages of one revision, retrying until JetStream has acknowledged each.
func (r *Relay) relay(ctx context.Context, msg jetstream.Msg) {
	if ctx.Err() != nil {
		_ = msg.Nak()
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error("outbox relay: message without metadata; skipped", "err", err)
		_ = msg.Term()
		return
	}
	if op := msg.Headers().Get("KV-Operation"); op != "" {
		_ = msg.Ack() // a delete or purge marker: no write
		return
	}
	e := &revision{bucket: r.bucket, key: strings.TrimPrefix(msg.Subject(), "$KV."+r.bucket+"."), value: msg.Data(), rev: meta.Sequence.Stream, created: meta.Timestamp}
	backoff := newBackoff()
	failed := false
	for {
		err := r.publish(ctx, e)
		if err == nil {
			if failed {
				r.log.Info("outbox relay: published after retries", "revision", e.rev)
			}
			if err := msg.Ack(); err != nil {
				r.log.Warn("outbox relay: acknowledge revision (it may be relayed again; deduplicated)", "revision", e.rev, "err", err)
			}
			return
		}
		if errors.Is(err, ErrUnauthentic) {
			// Reported by the codec (error log, Unauthentic counter): never published, never retried.
			r.skipped.Add(1)
			_ = msg.Term()
			return
		}
		if ctx.Err() != nil {
			_ = msg.Nak() // hand it back now rather than after RelayAckWait
			return
		}
		r.failures.Add(1)
		if !failed {
			r.log.Warn("outbox relay: publishing failed; retrying until JetStream acknowledges", "revision", e.rev, "err", err)
			failed = true
		}
		_ = msg.InProgress()
		backoff.wait(ctx)
	}
}

// publish opens the revision and publishes its messages; nil once JetStream acknowledged all of them.
func (r *Relay) publish(ctx context.Context, e *revision) error {
	msgs, err := r.messages(ctx, e)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := r.js.Publish(pctx, m.Subject, m.Data, jetstream.WithMsgID(m.ID))
		cancel()
		if err != nil {
			return fmt.Errorf("publish to %s: %w", m.Subject, err)
		}
		r.published.Add(1)
	}
	return nil
}

// revision is a revision of a bucket read from its stream, as Codec.Open opens it.
type revision struct {
	bucket, key string
	value       []byte
	rev         uint64
	created     time.Time
}

func (e *revision) Bucket() string                  { return e.bucket }
func (e *revision) Key() string                     { return e.key }
func (e *revision) Value() []byte                   { return e.value }
func (e *revision) Revision() uint64                { return e.rev }
func (e *revision) Created() time.Time              { return e.created }
func (e *revision) Delta() uint64                   { return 0 }
func (e *revision) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// backoff waits 100 ms, doubling to 5 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.d = min(2*b.d, 5*time.Second)
}
