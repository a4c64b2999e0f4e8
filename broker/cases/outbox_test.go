package cases_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// startRelay runs a relay of s until the test ends.
func startRelay(t *testing.T, s *cases.Store) *sealedkv.Relay {
	t.Helper()
	r, err := s.Relay(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay Run = %v", err)
		}
	})
	return r
}

// eventKey names one event of one transition.
func eventKey(caseID string, rev uint64, typ, to string) string {
	return fmt.Sprintf("%s@%d %s → %s", caseID, rev, typ, to)
}

// storedEvents reads every event in the EVENTS stream.
func storedEvents(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, cases.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	n := st.CachedInfo().State.Msgs
	var out []string
	if n == 0 {
		return out
	}
	cons, err := js.OrderedConsumer(ctx, cases.EventStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var ev brokerv1.CaseEvent
		if err := proto.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		var to string
		if _, err := fmt.Sscanf(msg.Subject(), "aperture.events.agency.%s", &to); err != nil {
			t.Fatal(err)
		}
		to = to[:len(to)-len(ev.GetType())-1]
		out = append(out, eventKey(ev.GetCaseId(), ev.GetRevision(), ev.GetType(), to))
	}
	sort.Strings(out)
	return out
}

// waitRelayed waits until the outbox's consumer has handed out and seen acknowledged every revision.
func waitRelayed(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cons, err := js.Consumer(ctx, "KV_"+cases.Bucket, cases.RelayConsumer)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not relayed: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With the EVENTS stream gone (a cluster fault, an operator's mistake), transitions still succeed;
// their events wait in the outbox and, once the stream is back, every one arrives exactly once — also
// when the outbox is handed out again from the start (a relay's acknowledgements lost), thanks to the
// Nats-Msg-Id. A revision that does not authenticate is reported and none of its events published.
func TestOutboxDeliversEveryEventOnceAcrossAnOutage(t *testing.T) {
	s, js := newStore(t)
	ctx := context.Background()
	relay := startRelay(t, s)
	j := journey()

	if err := js.DeleteStream(ctx, cases.EventStream); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 5 {
		c := cases.New(j, "0101901234", "p", j.Steps[0].Agency, "v1", t0)
		opened := []cases.Event{
			cases.NewEvent(cases.EventCaseOpened, j.Steps[0].Agency, c.Steps[0], t0),
			cases.NewEvent(cases.EventStepStarted, j.Steps[0].Agency, c.Steps[0], t0),
		}
		if err := s.Create(ctx, c, opened...); err != nil {
			t.Fatalf("a transition failed while the events stream is down: %v", err)
		}
		for _, e := range opened {
			want = append(want, eventKey(c.ID, c.Revision, e.Type, e.To))
		}
		if i%2 == 0 {
			continue
		}
		if err := c.Complete(c.Steps[0].ID, "cw", t0); err != nil {
			t.Fatal(err)
		}
		next, _ := c.CurrentStep()
		done := []cases.Event{
			cases.NewEvent(cases.EventStepCompleted, c.Steps[0].Agency, c.Steps[0], t0),
			cases.NewEvent(cases.EventStepStarted, next.Agency, next, t0),
		}
		if err := s.Update(ctx, c, done...); err != nil {
			t.Fatal(err)
		}
		for _, e := range done {
			want = append(want, eventKey(c.ID, c.Revision, e.Type, e.To))
		}
	}
	// A record the broker did not write: counted as absent, reported, never relayed.
	kv, err := js.KeyValue(ctx, cases.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "case_forged0000000000000000000", []byte(`{"events":[{"type":"case_opened","to":"payments"}]}`)); err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)

	deadline := time.Now().Add(10 * time.Second)
	for relay.Failures() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the relay never failed to publish while the events stream was gone")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The stream is back (another replica opening the store recreates it).
	other, err := cases.Open(ctx, js, cases.Options{Sealer: sharedSealer(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	waitRelayed(t, js)
	if got := storedEvents(t, js); !equal(got, want) {
		t.Fatalf("after the outage the stream holds\n%v\nwant each of\n%v", got, want)
	}
	if relay.Skipped() != 1 || s.Unauthentic() == 0 {
		t.Errorf("the forged record: skipped %d, unauthentic reads %d; want it reported and skipped", relay.Skipped(), s.Unauthentic())
	}

	// Every acknowledgement lost: a new relay is handed every revision again.
	if err := js.DeleteConsumer(ctx, "KV_"+cases.Bucket, cases.RelayConsumer); err != nil {
		t.Fatal(err)
	}
	startRelay(t, other)
	waitRelayed(t, js)
	if got := storedEvents(t, js); !equal(got, want) {
		t.Fatalf("after relaying again the stream holds\n%v\nwant each once:\n%v", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
