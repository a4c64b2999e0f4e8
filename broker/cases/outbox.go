package cases

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// The outbox (see package sealedkv): a transition's events are part of the case record it writes
// (Case.Events), and a relay publishes them from the bucket's stream to EVENTS under a Nats-Msg-Id of
// (case, revision, type, agency), so the EVENTS stream keeps each event once.

// RelayConsumer is the durable consumer of the cases bucket's stream from which the relays take the
// case revisions whose events they publish. Every replica binds the same one: each revision goes to
// one relay at a time.
const RelayConsumer = "CASE_EVENTS_RELAY"

// eventDedupWindow is how long the EVENTS stream remembers a Nats-Msg-Id. A relay retries within
// seconds; the window also covers a broker that published an event and died before acknowledging
// the revision, when its revision is handed to another replica (after sealedkv.RelayAckWait) or to itself
// after a restart.
const eventDedupWindow = time.Hour

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

const relayDescription = "Aperture: publishes the events of every case transition to " + EventStream

// Relay binds the outbox's consumer. Run the returned Relay for as long as the broker runs; every
// replica may run one.
func (s *Store) Relay(ctx context.Context) (*sealedkv.Relay, error) {
	r, err := s.codec.Relay(ctx, s.js, s.codec.OutboxConsumer(RelayConsumer, relayDescription), s.events)
	if err != nil {
		return nil, fmt.Errorf("case events relay: %w", err)
	}
	return r, nil
}

// events opens a case revision and returns the events of its transition.
func (s *Store) events(ctx context.Context, e jetstream.KeyValueEntry) ([]sealedkv.Message, error) {
	var c Case
	if err := s.codec.Open(ctx, e, e.Key(), &c); err != nil {
		return nil, err
	}
	if c.ID != e.Key() {
		return nil, s.codec.Reject(e.Key(), "names another case id than its key")
	}
	msgs := make([]sealedkv.Message, 0, len(c.Events))
	for _, ev := range c.Events {
		b, err := proto.Marshal(&brokerv1.CaseEvent{
			Type: ev.Type, CaseId: c.ID, Journey: c.Journey, Step: ev.Step, Agency: ev.StepAgency,
			Time: timestamppb.New(ev.Time), Revision: e.Revision(),
		})
		if err != nil {
			return nil, fmt.Errorf("encode case event: %w", err)
		}
		msgs = append(msgs, sealedkv.Message{Subject: ev.subject(), Data: b, ID: ev.msgID(c.ID, e.Revision())})
	}
	return msgs, nil
}
