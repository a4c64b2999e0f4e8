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
	if scope, err := s.Off(ctx, "pnA", "j1", ""); err != nil || scope != switchoff.ScopeNone {
		t.Fatalf("never set: %q, %v", scope, err)
	}
	// Per journey, and not for another journey or citizen.
	if _, err := s.Set(ctx, "pnA", "j1", "", true, now); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pn, journey string
		want        switchoff.Scope
	}{{"pnA", "j1", switchoff.ScopeJourney}, {"pnA", "j2", switchoff.ScopeNone}, {"pnB", "j1", switchoff.ScopeNone}} {
		if scope, err := s.Off(ctx, c.pn, c.journey, ""); err != nil || scope != c.want {
			t.Errorf("%s/%s: %q, %v; want %q", c.pn, c.journey, scope, err, c.want)
		}
	}
	// All journeys.
	if _, err := s.Set(ctx, "pnA", "", "", true, now); err != nil {
		t.Fatal(err)
	}
	if scope, _ := s.Off(ctx, "pnA", "j2", ""); scope != switchoff.ScopeAll {
		t.Errorf("all off: j2 is %q", scope)
	}
	if _, err := s.Set(ctx, "pnA", "", "", false, now); err != nil {
		t.Fatal(err)
	}

	// A record not sealed by the broker, one copied from another citizen's key, and an older record
	// written back: each is unverified, never "on".
	if _, err := kv.Put(ctx, "pnB.j1", []byte(`{"pseudonym":"pnB","journey":"j1","off":false}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Off(ctx, "pnB", "j1", ""); !errors.Is(err, switchoff.ErrUnverified) {
		t.Errorf("plain JSON record: %v, want ErrUnverified", err)
	}
	a, err := kv.Get(ctx, "pnA.j1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pnB.j2", a.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Off(ctx, "pnB", "j2", ""); !errors.Is(err, switchoff.ErrUnverified) {
		t.Errorf("record copied from another key: %v, want ErrUnverified", err)
	}
	if _, err := s.Set(ctx, "pnA", "j1", "", false, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pnA.j1", a.Value()); err != nil { // the "off" record back over "on"
		t.Fatal(err)
	}
	if _, err := s.Off(ctx, "pnA", "j1", ""); !errors.Is(err, switchoff.ErrUnverified) {
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
	if _, err := s.Set(ctx, "pnA", "j1", "", false, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if scope, err := s.Off(ctx, "pnA", "j1", ""); err != nil || scope != switchoff.ScopeNone {
		t.Errorf("after setting again: %q, %v", scope, err)
	}
}

// BenchmarkOff is what a release at an optional step adds: the three reads (all journeys, the
// journey, the step) with their authentication.
func BenchmarkOff(b *testing.B) {
	ctx := context.Background()
	js := natstest.JetStream(b)
	s, err := switchoff.Open(ctx, js, switchoff.Options{Sealer: keystest.Sealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	if _, err := s.Set(ctx, "pnA", "", "", false, now); err != nil {
		b.Fatal(err)
	}
	if _, err := s.Set(ctx, "pnA", "j1", "", false, now); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, pn string }{{"set", "pnA"}, {"never-set", "pnB"}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Off(ctx, c.pn, "j1", "s1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStepSwitches: a step's own switch turns off that step only, of that journey and citizen; a wider
// switch that is off wins over a step switched on; Off for the whole journey ignores step switches; a
// step switch that does not authenticate (forged, moved from another step or journey) refuses that
// step only; List shows step switches; a step without its journey is an error.
func TestStepSwitches(t *testing.T) {
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
	type set struct {
		journey, step string
		off           bool
	}
	type ask struct {
		pn, journey, step string
		want              switchoff.Scope
		unverified        bool
	}
	for _, tc := range []struct {
		name string
		sets []set
		// put writes raw bytes to a key (the pseudonym pnA's), or copies another key's record there.
		put  map[string]string
		copy map[string]string
		asks []ask
	}{{
		name: "step off: that step only",
		sets: []set{{"j1", "s1", true}},
		asks: []ask{
			{"pnA", "j1", "s1", switchoff.ScopeStep, false},
			{"pnA", "j1", "s2", switchoff.ScopeNone, false},
			{"pnA", "j2", "s1", switchoff.ScopeNone, false},
			{"pnB", "j1", "s1", switchoff.ScopeNone, false},
			{"pnA", "j1", "", switchoff.ScopeNone, false}, // the journey as a whole is not declined
		},
	}, {
		name: "step switched on again",
		sets: []set{{"j1", "s1", true}, {"j1", "s1", false}},
		asks: []ask{{"pnA", "j1", "s1", switchoff.ScopeNone, false}},
	}, {
		name: "journey off wins over a step on",
		sets: []set{{"j1", "s1", false}, {"j1", "", true}},
		asks: []ask{{"pnA", "j1", "s1", switchoff.ScopeJourney, false}, {"pnA", "j1", "s2", switchoff.ScopeJourney, false}},
	}, {
		name: "all off wins over a step on",
		sets: []set{{"j1", "s1", false}, {"", "", true}},
		asks: []ask{{"pnA", "j1", "s1", switchoff.ScopeAll, false}},
	}, {
		name: "forged step record refuses that step, not the others",
		put:  map[string]string{"pnA.j1.s1": `{"pseudonym":"pnA","journey":"j1","step":"s1","off":false}`},
		asks: []ask{{"pnA", "j1", "s1", switchoff.ScopeNone, true}, {"pnA", "j1", "s2", switchoff.ScopeNone, false}},
	}, {
		name: "record moved from another step",
		sets: []set{{"j1", "s2", false}},
		copy: map[string]string{"pnA.j1.s1": "pnA.j1.s2"},
		asks: []ask{{"pnA", "j1", "s1", switchoff.ScopeNone, true}, {"pnA", "j1", "s2", switchoff.ScopeNone, false}},
	}, {
		name: "journey record moved onto a step key",
		sets: []set{{"j1", "", false}},
		copy: map[string]string{"pnA.j1.s1": "pnA.j1"},
		asks: []ask{{"pnA", "j1", "s1", switchoff.ScopeNone, true}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from no switches.
			if err := kv.Purge(ctx, "pnA._all"); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"pnA.j1", "pnA.j1.s1", "pnA.j1.s2"} {
				if err := kv.Purge(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			for _, st := range tc.sets {
				sw, err := s.Set(ctx, "pnA", st.journey, st.step, st.off, now)
				if err != nil || sw.Step != st.step || sw.Journey != st.journey || sw.Off != st.off {
					t.Fatalf("set %+v: %+v, %v", st, sw, err)
				}
			}
			for k, v := range tc.put {
				if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			for to, from := range tc.copy {
				e, err := kv.Get(ctx, from)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kv.Put(ctx, to, e.Value()); err != nil {
					t.Fatal(err)
				}
			}
			for _, a := range tc.asks {
				scope, err := s.Off(ctx, a.pn, a.journey, a.step)
				if a.unverified {
					if !errors.Is(err, switchoff.ErrUnverified) {
						t.Errorf("%s %s/%s: %q, %v; want ErrUnverified", a.pn, a.journey, a.step, scope, err)
					}
					continue
				}
				if err != nil || scope != a.want {
					t.Errorf("%s %s/%s: %q, %v; want %q", a.pn, a.journey, a.step, scope, err, a.want)
				}
			}
		})
	}

	// List names the step of a step switch, and marks one that does not verify.
	if _, err := s.Set(ctx, "pnC", "j1", "s1", true, now); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pnC.j1.s2", []byte(`{"off":false}`)); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "pnC")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, sw := range list {
		got[sw.Journey+"/"+sw.Step] = sw.Unverified
	}
	if len(got) != 2 || got["j1/s1"] || !got["j1/s2"] {
		t.Errorf("List: %v, want j1/s1 verified and j1/s2 unverified", got)
	}
	if _, err := s.Set(ctx, "pnC", "", "s1", true, now); !errors.Is(err, switchoff.ErrStepWithoutJourney) {
		t.Errorf("a step without its journey: %v", err)
	}
}
