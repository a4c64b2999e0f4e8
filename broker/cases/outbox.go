package cases

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// The outbox. A transition's events are part of the case record it writes (Case.Events): one sealed,
// revision-checked write makes both durable, or neither. The bucket's stream is then the outbox, in
// order: a durable consumer on it (RelayConsumer) hands every new revision to a Relay, which opens it
// (a revision that does not authenticate is reported and counts as absent: its events are never
// published), publishes its events to the EVENTS stream and acknowledges the revision only when
// JetStream has acknowledged every event. Until then it retries, and a retry — or a revision handed
// out again after a crash — publishes under the same Nats-Msg-Id (case, revision, type, agency), so
// the EVENTS stream keeps each event once.

// RelayConsumer is the durable consumer of the cases bucket's stream from which the relays take the
// case revisions whose events they publish. Every replica binds the same one: each revision goes to
// one relay at a time.
const RelayConsumer = "CASE_EVENTS_RELAY"

// eventDedupWindow is how long the EVENTS stream remembers a Nats-Msg-Id. A relay retries within
// seconds; the window also covers a broker that published an event and died before acknowledging
// the revision, when its revision is handed to another replica (after relayAckWait) or to itself
// after a restart.
const eventDedupWindow = time.Hour

// relayAckWait is how long a revision handed to a relay that went silent waits before another gets
// it; a relay that is retrying says it is still at work.
const relayAckWait = 30 * time.Second

// Event is a case event waiting in its transition's record for the relay.
type Event struct {
	Type string `json:"type"`
	// To is the agency told: the event goes to "aperture.events.agency.<To>.<Type>".
	To   string `json:"to"`
	Step string `json:"step"`
	// StepAgency is the agency of Step.
	StepAgency string    `json:"step_agency"`
	Time       time.Time `json:"time"`
}

// NewEvent returns the event of type typ about step, for agency to.
func NewEvent(typ, to string, step Step, now time.Time) Event {
	return Event{Type: typ, To: to, Step: step.ID, StepAgency: step.Agency, Time: now}
}

// msgID is the event's Nats-Msg-Id: the same event of the same transition always has the same one.
func (e Event) msgID(caseID string, rev uint64) string {
	return fmt.Sprintf("%s:%d:%s:%s", caseID, rev, e.Type, e.To)
}

func (e Event) subject() string { return "aperture.events.agency." + e.To + "." + e.Type }

func relayConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       RelayConsumer,
		Description:   "Aperture: publishes the events of every case transition to " + EventStream,
		FilterSubject: "$KV." + Bucket + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy, // revisions written before there was an outbox carry no events
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       relayAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

// Relay publishes the events of case transitions from the outbox until its Run's context ends.
type Relay struct {
	s    *Store
	cons jetstream.Consumer
	log  *slog.Logger

	published atomic.Uint64
	failures  atomic.Uint64
	skipped   atomic.Uint64
}

// Relay binds the outbox's consumer. Run the returned Relay for as long as the broker runs; every
// replica may run one.
func (s *Store) Relay(ctx context.Context) (*Relay, error) {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, "KV_"+Bucket, relayConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("case events relay: bind consumer %s: %w", RelayConsumer, err)
	}
	return &Relay{s: s, cons: cons, log: s.log.With("component", "case-events")}, nil
}

// Published counts the events JetStream acknowledged (a duplicate it dropped included).
func (r *Relay) Published() uint64 { return r.published.Load() }

// Failures counts failed publish attempts (each was retried).
func (r *Relay) Failures() uint64 { return r.failures.Load() }

// Skipped counts revisions whose record did not authenticate: reported and never published.
func (r *Relay) Skipped() uint64 { return r.skipped.Load() }

// Run relays until ctx ends, then returns nil. A revision whose events are not all acknowledged
// when ctx ends is handed back, to be published by another replica or after a restart.
func (r *Relay) Run(ctx context.Context) error {
	backoff := newBackoff()
	for ctx.Err() == nil {
		batch, err := r.cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			r.log.Warn("case events relay: cannot read the outbox; retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		for msg := range batch.Messages() {
			r.relay(ctx, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			r.log.Warn("case events relay: reading the outbox failed; retrying", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
	}
	return nil
}

// relay publishes the events of one case revision, retrying until JetStream has acknowledged each.
func (r *Relay) relay(ctx context.Context, msg jetstream.Msg) {
	if ctx.Err() != nil {
		_ = msg.Nak()
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error("case events relay: outbox message without metadata; skipped", "err", err)
		_ = msg.Term()
		return
	}
	if op := msg.Headers().Get("KV-Operation"); op != "" {
		_ = msg.Ack() // a delete or purge marker: no transition
		return
	}
	key := strings.TrimPrefix(msg.Subject(), "$KV."+Bucket+".")
	e := &outboxEntry{key: key, value: msg.Data(), rev: meta.Sequence.Stream, created: meta.Timestamp}
	backoff := newBackoff()
	failed := false
	for {
		err := r.publish(ctx, e)
		if err == nil {
			if failed {
				r.log.Info("case events relay: events published after retries", "case", key, "revision", e.rev)
			}
			if err := msg.Ack(); err != nil {
				r.log.Warn("case events relay: acknowledge revision (it may be relayed again; deduplicated)", "case", key, "err", err)
			}
			return
		}
		if errors.Is(err, sealedkv.ErrUnauthentic) {
			// Reported by the codec (error log, Unauthentic counter): never published, never retried.
			r.skipped.Add(1)
			_ = msg.Term()
			return
		}
		if ctx.Err() != nil {
			_ = msg.Nak() // hand it back now rather than after AckWait
			return
		}
		r.failures.Add(1)
		if !failed {
			r.log.Warn("case events relay: publishing failed; retrying until JetStream acknowledges", "case", key, "revision", e.rev, "err", err)
			failed = true
		}
		_ = msg.InProgress()
		backoff.wait(ctx)
	}
}

// publish opens the revision and publishes its events; nil once JetStream acknowledged all of them.
func (r *Relay) publish(ctx context.Context, e *outboxEntry) error {
	var c Case
	if err := r.s.codec.Open(ctx, e, e.key, &c); err != nil {
		return err
	}
	if c.ID != e.key {
		return r.s.codec.Reject(e.key, "names another case id than its key")
	}
	for _, ev := range c.Events {
		b, err := proto.Marshal(&brokerv1.CaseEvent{
			Type: ev.Type, CaseId: c.ID, Journey: c.Journey, Step: ev.Step, Agency: ev.StepAgency,
			Time: timestamppb.New(ev.Time), Revision: e.rev,
		})
		if err != nil {
			return fmt.Errorf("encode case event: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = r.s.js.Publish(pctx, ev.subject(), b, jetstream.WithMsgID(ev.msgID(c.ID, e.rev)))
		cancel()
		if err != nil {
			return fmt.Errorf("publish %s event: %w", ev.Type, err)
		}
		r.published.Add(1)
	}
	return nil
}

// outboxEntry is a revision of the cases bucket read from its stream, as sealedkv.Codec opens it.
type outboxEntry struct {
	key     string
	value   []byte
	rev     uint64
	created time.Time
}

func (e *outboxEntry) Bucket() string                  { return Bucket }
func (e *outboxEntry) Key() string                     { return e.key }
func (e *outboxEntry) Value() []byte                   { return e.value }
func (e *outboxEntry) Revision() uint64                { return e.rev }
func (e *outboxEntry) Created() time.Time              { return e.created }
func (e *outboxEntry) Delta() uint64                   { return 0 }
func (e *outboxEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

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
