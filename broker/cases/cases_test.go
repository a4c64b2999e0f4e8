package cases_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

func journey() *policy.Journey {
	return &policy.Journey{ID: "sickness-benefit", Steps: []*policy.Step{
		{ID: "register-absence", Agency: "municipality"},
		{ID: "check-eligibility", Agency: "municipality"},
		{ID: "pay-benefit", Agency: "payments"},
	}}
}

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func TestTransitions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		do      func(c *cases.Case) error
		wantErr error
		current string
		state   cases.State
	}{
		{"new case is at its first step", func(*cases.Case) error { return nil }, nil, "register-absence", cases.StateOpen},
		{"complete current step", func(c *cases.Case) error { return c.Complete("register-absence", "cw", t0) }, nil, "check-eligibility", cases.StateOpen},
		{"complete a later step", func(c *cases.Case) error { return c.Complete("pay-benefit", "cw", t0) }, cases.ErrNotCurrent, "register-absence", cases.StateOpen},
		{"complete every step closes", func(c *cases.Case) error {
			for _, s := range []string{"register-absence", "check-eligibility", "pay-benefit"} {
				if err := c.Complete(s, "cw", t0); err != nil {
					return err
				}
			}
			return nil
		}, nil, "", cases.StateClosed},
		{"close early", func(c *cases.Case) error { return c.Close("withdrawn", t0) }, nil, "", cases.StateClosed},
		{"closed case takes no step", func(c *cases.Case) error {
			_ = c.Close("withdrawn", t0)
			return c.Complete("register-absence", "cw", t0)
		}, cases.ErrClosed, "", cases.StateClosed},
		{"closed case cannot close", func(c *cases.Case) error {
			_ = c.Close("withdrawn", t0)
			return c.Close("again", t0)
		}, cases.ErrClosed, "", cases.StateClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cases.New(journey(), "0101901234", "p", "municipality", "v1", t0)
			err := tc.do(c)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			cur, _ := c.CurrentStep()
			if cur.ID != tc.current || c.State != tc.state {
				t.Fatalf("at %q (%s), want %q (%s)", cur.ID, c.State, tc.current, tc.state)
			}
			currents := 0
			for _, s := range c.Steps {
				if s.State == cases.StepCurrent {
					currents++
				}
			}
			if want := map[cases.State]int{cases.StateOpen: 1, cases.StateClosed: 0}[c.State]; currents != want {
				t.Fatalf("%d current steps in a %s case", currents, c.State)
			}
		})
	}
}

func newStore(t *testing.T) (*cases.Store, jetstream.JetStream) {
	t.Helper()
	js := natstest.JetStream(t)
	s, err := cases.Open(context.Background(), js, cases.Options{Sealer: sharedSealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, js
}

// TestConcurrentCompleteOnlyOneWins models two broker replicas completing the same step: both read the
// case, both try to write; exactly one succeeds and the other gets ErrConflict.
func TestConcurrentCompleteOnlyOneWins(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	c := cases.New(journey(), "0101901234", "p", "municipality", "v1", t0)
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	const replicas = 8
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      int
		conflicts int
	)
	// Every replica reads before any writes: a read after the winner's write would see the step
	// already completed (what made this test fail now and then under load).
	var read []*cases.Case
	for range replicas {
		mine, err := s.Get(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, mine)
	}
	for _, mine := range read {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := mine.Complete("register-absence", "cw", t0); err != nil {
				t.Error(err)
				return
			}
			err := s.Update(ctx, mine)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, cases.ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != replicas-1 {
		t.Fatalf("%d wins, %d conflicts; want 1 and %d", wins, conflicts, replicas-1)
	}
	got, err := s.Get(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := got.CurrentStep(); cur.ID != "check-eligibility" {
		t.Fatalf("case at %q after the race", cur.ID)
	}
}

func TestStoreRoundTripAndEvents(t *testing.T) {
	s, js := newStore(t)
	ctx := context.Background()
	if _, err := s.Get(ctx, "case_00000000000000000000000000"); !errors.Is(err, cases.ErrNotFound) {
		t.Fatalf("missing case: %v", err)
	}
	c := cases.New(journey(), "0101901234", "p", "municipality", "v1", t0)
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, c); err == nil {
		t.Fatal("creating the same case twice succeeded")
	}
	// The transition that wrote the case carries its event; the relay publishes it once.
	c2 := cases.New(journey(), "0101901234", "p", "municipality", "v1", t0)
	if err := s.Create(ctx, c2, cases.NewEvent(cases.EventStepStarted, "payments", c2.Steps[2], t0)); err != nil {
		t.Fatal(err)
	}
	c = c2
	startRelay(t, s)

	cons, err := js.OrderedConsumer(ctx, cases.EventStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"aperture.events.agency.payments.>"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var ev brokerv1.CaseEvent
	if err := proto.Unmarshal(msg.Data(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetCaseId() != c.ID || ev.GetStep() != "pay-benefit" || ev.GetType() != cases.EventStepStarted {
		t.Fatalf("event %v", &ev)
	}
	if msg.Subject() != "aperture.events.agency.payments.step_started" {
		t.Fatalf("subject %s", msg.Subject())
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatal("duplicate event was not deduplicated")
	}
	info, err := js.Stream(ctx, cases.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
	if strings.Contains(string(msg.Data()), "0101901234") {
		t.Fatal("event carries the citizen id")
	}
}

// TestReplicaSeesOtherReplicasWrites: a second store (another broker replica) that has the case cached
// sees a transition made by the first one through the bucket watch, and a stale write from it conflicts.
func TestReplicaSeesOtherReplicasWrites(t *testing.T) {
	a, js := newStore(t)
	b, err := cases.Open(context.Background(), js, cases.Options{Sealer: sharedSealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx := context.Background()
	c := cases.New(journey(), "0101901234", "p", "municipality", "v1", t0)
	if err := a.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	stale, err := b.Get(ctx, c.ID) // now cached in b
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Complete("register-absence", "cw", t0); err != nil {
		t.Fatal(err)
	}
	if err := a.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := b.Get(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur, _ := got.CurrentStep(); cur.ID == "check-eligibility" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica b never saw the transition")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stale.Complete("register-absence", "cw", t0); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(ctx, stale); !errors.Is(err, cases.ErrConflict) {
		t.Fatalf("stale write from replica b: %v, want ErrConflict", err)
	}
}

func testSealer(t testing.TB) cases.Sealer {
	t.Helper()
	p, err := keys.OpenLocalProvider(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	return p.Sealer()
}

// TestSealedAtRest: the stored case is sealed whole — neither the citizen id nor the steps are readable
// from the bucket — and another replica with the same key reads it back.
func TestSealedAtRest(t *testing.T) {
	js := natstest.JetStream(t)
	ctx := context.Background()
	sealer := testSealer(t)
	open := func() *cases.Store {
		s, err := cases.Open(ctx, js, cases.Options{Sealer: sealer})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	s := open()
	const id = "0101901234"
	a := cases.New(journey(), id, "p", "municipality", "v1", t0)
	if err := s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, cases.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	ea, err := kv.Get(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{id, "register-absence", "municipality", `"state"`} {
		if strings.Contains(string(ea.Value()), clear) {
			t.Fatalf("stored case shows %q: %q", clear, ea.Value())
		}
	}
	if got, err := open().Get(ctx, a.ID); err != nil || got.CitizenID != id {
		t.Fatalf("another replica reads citizen %q, %v", citizenOf(got), err)
	}
	if _, err := cases.Open(ctx, js, cases.Options{}); err == nil {
		t.Fatal("a store without a sealer started")
	}
}

// TestUnauthenticCaseReadsAsAbsent: a case record written or altered by anything but the broker —
// forged, a step advanced by hand, a valid record copied to another case id, a record from before
// cases were sealed — reads as no case at all, on a replica reading the bucket and on the replica that
// had the case cached (through the watch), with an error-level log line and the counter.
func TestUnauthenticCaseReadsAsAbsent(t *testing.T) {
	for _, tc := range []struct {
		name string
		// forge returns the value an attacker puts under victim's key.
		forge  func(t *testing.T, s *cases.Store, kv jetstream.KeyValue, victim, other *cases.Case) []byte
		reason string
	}{
		{"step advanced by hand (plain JSON)", func(t *testing.T, _ *cases.Store, _ jetstream.KeyValue, victim, _ *cases.Case) []byte {
			c := *victim
			c.Steps = append([]cases.Step(nil), victim.Steps...)
			if err := c.Complete("register-absence", "attacker", t0); err != nil {
				t.Fatal(err)
			}
			if err := c.Complete("check-eligibility", "attacker", t0); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(&c)
			return b
		}, "is not sealed"},
		{"an unsealed record from before cases were sealed", func(t *testing.T, _ *cases.Store, _ jetstream.KeyValue, victim, _ *cases.Case) []byte {
			b, _ := json.Marshal(map[string]any{"id": victim.ID, "journey": victim.Journey, "citizen_id_sealed": []byte("x"),
				"state": "open", "current": 0, "steps": victim.Steps})
			return b
		}, "is not sealed"},
		{"another case's valid record copied to this id", func(t *testing.T, _ *cases.Store, kv jetstream.KeyValue, _, other *cases.Case) []byte {
			e, err := kv.Get(context.Background(), other.ID)
			if err != nil {
				t.Fatal(err)
			}
			return e.Value()
		}, "does not open"},
		{"an earlier revision written back (a completed step undone)", func(t *testing.T, s *cases.Store, kv jetstream.KeyValue, victim, _ *cases.Case) []byte {
			e, err := kv.Get(context.Background(), victim.ID)
			if err != nil {
				t.Fatal(err)
			}
			atFirstStep := append([]byte(nil), e.Value()...)
			if err := victim.Complete("register-absence", "cw", t0); err != nil {
				t.Fatal(err)
			}
			if err := s.Update(context.Background(), victim); err != nil {
				t.Fatal(err)
			}
			return atFirstStep
		}, "written back"},
		{"one bit of the valid record flipped", func(t *testing.T, _ *cases.Store, kv jetstream.KeyValue, victim, _ *cases.Case) []byte {
			e, err := kv.Get(context.Background(), victim.ID)
			if err != nil {
				t.Fatal(err)
			}
			v := append([]byte(nil), e.Value()...)
			v[len(v)-1] ^= 0x80
			return v
		}, "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := natstest.JetStream(t)
			ctx := context.Background()
			lb := &logBuffer{}
			open := func() *cases.Store {
				s, err := cases.Open(ctx, js, cases.Options{Sealer: sharedSealer(t), Logger: slog.New(slog.NewJSONHandler(lb, nil))})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s.Close)
				return s
			}
			s := open()
			victim := cases.New(journey(), "0101901234", "p", "municipality", "v1", t0)
			other := cases.New(journey(), "0202902345", "q", "payments", "v1", t0.Add(time.Second))
			for _, c := range []*cases.Case{victim, other} {
				if err := s.Create(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			kv, err := js.KeyValue(ctx, cases.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, victim.ID, tc.forge(t, s, kv, victim, other)); err != nil {
				t.Fatal(err)
			}

			// A replica without the case cached reads the bucket.
			replica := open()
			if c, err := replica.Get(ctx, victim.ID); !errors.Is(err, cases.ErrNotFound) || !errors.Is(err, sealedkv.ErrUnauthentic) {
				t.Fatalf("replica Get = %+v, %v; want absent", c, err)
			}
			if n := replica.Unauthentic(); n != 1 {
				t.Fatalf("replica counted %d unauthentic reads, want 1", n)
			}
			// The replica that had it cached drops it when the watch delivers the write.
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := s.Get(ctx, victim.ID)
				if errors.Is(err, cases.ErrNotFound) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if time.Now().After(deadline) {
					t.Fatal("the caching replica still serves the case after a forged write")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if s.Unauthentic() == 0 {
				t.Fatal("the caching replica did not count the forged write")
			}
			list, err := replica.List(ctx, func(*cases.Case) bool { return true })
			if err != nil || len(list) != 1 || list[0].ID != other.ID {
				t.Fatalf("List = %v, %v; want only the authentic case", list, err)
			}
			logged := lb.String()
			if !strings.Contains(logged, `"level":"ERROR"`) || !strings.Contains(logged, `"bucket":"cases"`) ||
				!strings.Contains(logged, victim.ID) || !strings.Contains(logged, tc.reason) {
				t.Fatalf("log does not report the case: %s", logged)
			}
			if strings.Contains(logged, victim.CitizenID) {
				t.Fatalf("log names the citizen: %s", logged)
			}
		})
	}
}

// logBuffer collects log lines written from any goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func citizenOf(c *cases.Case) string {
	if c == nil {
		return ""
	}
	return c.CitizenID
}

var (
	sealerOnce sync.Once
	sealerKey  cases.Sealer
)

// sharedSealer is one sealing key for every store of the test binary, as replicas share one.
func sharedSealer(t testing.TB) cases.Sealer {
	sealerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cases-test-keys")
		if err != nil {
			t.Fatal(err)
		}
		p, err := keys.OpenLocalProvider(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		sealerKey = p.Sealer()
		_ = os.RemoveAll(dir) // the key stays in memory
	})
	return sealerKey
}
