package switchoff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/switchoff"
)

func TestSwitchOffFailsClosed(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	s, err := switchoff.Open(ctx, js, switchoff.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, switchoff.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	// Never set: on.
	if scope, err := s.Off(ctx, "pnA", "j1"); err != nil || scope != switchoff.ScopeNone {
		t.Fatalf("never set: %q, %v", scope, err)
	}
	// Per journey, and not for another journey or citizen.
	if _, err := s.Set(ctx, "pnA", "j1", true, now); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pn, journey string
		want        switchoff.Scope
	}{{"pnA", "j1", switchoff.ScopeJourney}, {"pnA", "j2", switchoff.ScopeNone}, {"pnB", "j1", switchoff.ScopeNone}} {
		if scope, err := s.Off(ctx, c.pn, c.journey); err != nil || scope != c.want {
			t.Errorf("%s/%s: %q, %v; want %q", c.pn, c.journey, scope, err, c.want)
		}
	}
	// All journeys.
	if _, err := s.Set(ctx, "pnA", "", true, now); err != nil {
		t.Fatal(err)
	}
	if scope, _ := s.Off(ctx, "pnA", "j2"); scope != switchoff.ScopeAll {
		t.Errorf("all off: j2 is %q", scope)
	}
	if _, err := s.Set(ctx, "pnA", "", false, now); err != nil {
		t.Fatal(err)
	}

	// A record not sealed by the broker, one copied from another citizen's key, and an older record
	// written back: each is unverified, never "on".
	if _, err := kv.Put(ctx, "pnB.j1", []byte(`{"pseudonym":"pnB","journey":"j1","off":false}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Off(ctx, "pnB", "j1"); !errors.Is(err, switchoff.ErrUnverified) {
		t.Errorf("plain JSON record: %v, want ErrUnverified", err)
	}
	a, err := kv.Get(ctx, "pnA.j1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pnB.j2", a.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Off(ctx, "pnB", "j2"); !errors.Is(err, switchoff.ErrUnverified) {
		t.Errorf("record copied from another key: %v, want ErrUnverified", err)
	}
	if _, err := s.Set(ctx, "pnA", "j1", false, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pnA.j1", a.Value()); err != nil { // the "off" record back over "on"
		t.Fatal(err)
	}
	if _, err := s.Off(ctx, "pnA", "j1"); !errors.Is(err, switchoff.ErrUnverified) {
		t.Errorf("replayed record: %v, want ErrUnverified", err)
	}
	list, err := s.List(ctx, "pnA")
	if err != nil {
		t.Fatal(err)
	}
	unverified := 0
	for _, sw := range list {
		if sw.Unverified {
			unverified++
		}
	}
	if unverified != 1 || s.Unauthentic() == 0 {
		t.Errorf("List reports %d unverified (want 1), %d unauthentic reads", unverified, s.Unauthentic())
	}
	// The citizen setting it again repairs it.
	if _, err := s.Set(ctx, "pnA", "j1", false, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if scope, err := s.Off(ctx, "pnA", "j1"); err != nil || scope != switchoff.ScopeNone {
		t.Errorf("after setting again: %q, %v", scope, err)
	}
}

// BenchmarkOff is what a release at an optional step adds: the two reads (all journeys, the journey)
// with their authentication.
func BenchmarkOff(b *testing.B) {
	ctx := context.Background()
	js := natstest.JetStream(b)
	s, err := switchoff.Open(ctx, js, switchoff.Options{Sealer: keystest.Sealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	if _, err := s.Set(ctx, "pnA", "", false, now); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Set(ctx, "pnA", "j1", false, now); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, pn string }{{"set", "pnA"}, {"never-set", "pnB"}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Off(ctx, c.pn, "j1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
