package cases_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/switchoff"
	"github.com/aperture-gov/aperture/policies"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	"github.com/aperture-gov/aperture/services/catalog"
)

type descriptors map[string]protoreflect.MessageDescriptor

func (d descriptors) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	if md, ok := d[authority+"."+dataset]; ok {
		return md, nil
	}
	return nil, fmt.Errorf("no dataset %s.%s", authority, dataset)
}

// realBundle is the shipped policy tree, so that the event and its journeys come from events.yaml.
func realBundle(t testing.TB) *policy.Bundle {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := descriptors{}
	for _, a := range catalog.Examples(nil) {
		for _, ds := range a.Datasets {
			d[a.ID+"."+ds.Name] = ds.Message.ProtoReflect().Descriptor()
		}
	}
	b, err := policy.LoadBundle(policies.Files(), reg, d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenFromEventOncePerEvent: an event opens its journeys once; a delivery whose access record
// failed stores nothing and the next delivery finishes it; an event id reused for another citizen,
// and an event type the authority may not publish, are refused.
func TestOpenFromEventOncePerEvent(t *testing.T) {
	b := realBundle(t)
	var ev *policy.LifeEvent
	for _, e := range b.Events() {
		if len(e.Starts) > 0 {
			ev = e
			break
		}
	}
	if ev == nil {
		t.Fatal("no life event starts a journey")
	}
	store, _ := newStore(t)
	pn, err := keys.NewHMACPseudonymizer("k1", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	svc := cases.NewService(store, func() *policy.Bundle { return b }, pn, nil, func() time.Time { return t0 }, nil)
	ctx := context.Background()
	publisher := ev.PublishedBy[0]

	// The access log is down: nothing is stored, the authority is told to retry.
	down := errors.New("log down")
	_, _, err = svc.OpenFromEvent(ctx, publisher, cases.LifeEvent{ID: "e1", Type: ev.Type, CitizenID: "c1"}, func(*cases.Case) error { return down })
	if !errors.Is(err, down) {
		t.Fatalf("got %v, want the log's error", err)
	}
	if all, _ := store.List(ctx, func(*cases.Case) bool { return true }); len(all) != 0 {
		t.Fatalf("%d cases stored without an access record", len(all))
	}

	// Redelivered: it opens the cases, each after its access record.
	var logged []string
	opened, dup, err := svc.OpenFromEvent(ctx, publisher, cases.LifeEvent{ID: "e1", Type: ev.Type, CitizenID: "c1"}, func(c *cases.Case) error {
		logged = append(logged, c.ID)
		return nil
	})
	if err != nil || dup || len(opened) != len(ev.Starts) || len(logged) != len(ev.Starts) {
		t.Fatalf("redelivery after failure: %d opened, duplicate %v, %d logged, %v", len(opened), dup, len(logged), err)
	}
	for i, c := range opened {
		if c.Journey != ev.Starts[i].Journey || c.OpenedBy != ev.Starts[i].Agency || c.Proactive == nil || c.Proactive.Event != ev.Type || c.Proactive.Authority != publisher {
			t.Errorf("case %d: %+v", i, c)
		}
	}

	// Again: the same cases, nothing logged.
	again, dup, err := svc.OpenFromEvent(ctx, publisher, cases.LifeEvent{ID: "e1", Type: ev.Type, CitizenID: "c1"}, func(*cases.Case) error {
		t.Error("a duplicate delivery wrote an access record")
		return nil
	})
	if err != nil || !dup || len(again) != len(opened) || again[0].ID != opened[0].ID {
		t.Fatalf("duplicate: %d cases, duplicate %v, %v", len(again), dup, err)
	}

	// The same id about another citizen is not a redelivery.
	_, _, err = svc.OpenFromEvent(ctx, publisher, cases.LifeEvent{ID: "e1", Type: ev.Type, CitizenID: "c2"}, nil)
	if r := refusal.As(err); r == nil || r.Kind != refusal.FailedPrecondition {
		t.Fatalf("event id reused for another citizen: %v", err)
	}

	// An authority that may not publish the type.
	for _, a := range b.Registry.Authorities {
		if ev.MayPublish(a.ID) {
			continue
		}
		_, _, err = svc.OpenFromEvent(ctx, a.ID, cases.LifeEvent{ID: "e2", Type: ev.Type, CitizenID: "c1"}, nil)
		if r := refusal.As(err); r == nil || r.Kind != refusal.PermissionDenied || r.Why != auditv1.RefusalReason_REFUSAL_REASON_EVENT_NOT_ALLOWED {
			t.Fatalf("%s publishing %s: %v", a.ID, ev.Type, err)
		}
	}
	if all, _ := store.List(ctx, func(*cases.Case) bool { return true }); len(all) != len(ev.Starts) {
		t.Fatalf("%d cases stored, want %d", len(all), len(ev.Starts))
	}
}

// BenchmarkOpenFromEvent is one life event opening its journeys on embedded JetStream: a claim read,
// a claim write and one sealed case write per journey.
func BenchmarkOpenFromEvent(b *testing.B) {
	bundle := realBundle(b)
	var ev *policy.LifeEvent
	for _, e := range bundle.Events() {
		if len(e.Starts) > 0 {
			ev = e
			break
		}
	}
	store, err := cases.Open(context.Background(), natstest.JetStream(b), cases.Options{Sealer: sharedSealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	pn, err := keys.NewHMACPseudonymizer("k1", make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	svc := cases.NewService(store, func() *policy.Bundle { return bundle }, pn, nil, nil, nil)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := svc.OpenFromEvent(ctx, ev.PublishedBy[0], cases.LifeEvent{ID: fmt.Sprintf("e%d", i), Type: ev.Type, CitizenID: "c1"}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestOpenFromEventDeclined: a life event does not open a whole-optional journey the citizen switched
// off (for that journey or for all), nor one whose switch does not authenticate; the claim stays, so the
// same event redelivered after the citizen switched it on again opens it. A mandatory journey opens
// whatever the switches say.
func TestOpenFromEventDeclined(t *testing.T) {
	b := realBundle(t)
	var ev *policy.LifeEvent
	for _, e := range b.Events() {
		if len(e.Starts) > 0 {
			ev = e
			break
		}
	}
	if ev == nil {
		t.Fatal("no life event starts a journey")
	}
	j, ok := b.Journey(ev.Starts[0].Journey)
	if !ok {
		t.Fatalf("journey %q", ev.Starts[0].Journey)
	}
	// This test's own bundle: the journey is made optional (later mandatory) here; the shipped policies
	// decide nothing about it.
	j.Optional = &policy.Optional{Why: policy.Text{EN: "An offer."}}

	store, js := newStore(t)
	sw, err := switchoff.Open(context.Background(), js, switchoff.Options{Sealer: sharedSealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	pn, err := keys.NewHMACPseudonymizer("k1", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	svc := cases.NewService(store, func() *policy.Bundle { return b }, pn, sw, nil, nil)
	ctx := context.Background()
	publisher := ev.PublishedBy[0]
	opens := func(id, citizen string) bool {
		t.Helper()
		opened, _, err := svc.OpenFromEvent(ctx, publisher, cases.LifeEvent{ID: id, Type: ev.Type, CitizenID: citizen}, nil)
		if err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		return slices.ContainsFunc(opened, func(c *cases.Case) bool { return c.Journey == j.ID })
	}
	ps := func(citizen string) string { return pn.Pseudonym(citizen).Value }

	if !opens("e-on", "c-on") {
		t.Error("an optional journey nobody switched off was not opened")
	}
	if _, err := sw.Set(ctx, ps("c-off"), j.ID, "", true, time.Now()); err != nil {
		t.Fatal(err)
	}
	if opens("e-off", "c-off") {
		t.Error("a journey the citizen switched off was opened")
	}
	if _, err := sw.Set(ctx, ps("c-all"), "", "", true, time.Now()); err != nil {
		t.Fatal(err)
	}
	if opens("e-all", "c-all") {
		t.Error("a journey the citizen switched off with all journeys was opened")
	}
	// A forged switch (not sealed by the broker) counts as declined, never as consent to the offer.
	kv, err := js.KeyValue(ctx, switchoff.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, ps("c-forged")+"."+j.ID, []byte(`{"off":false}`)); err != nil {
		t.Fatal(err)
	}
	if opens("e-forged", "c-forged") {
		t.Error("a journey whose switch does not verify was opened")
	}
	// Switched on again: the same event, redelivered, opens it.
	if _, err := sw.Set(ctx, ps("c-off"), j.ID, "", false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !opens("e-off", "c-off") {
		t.Error("the redelivered event did not open the journey switched on again")
	}
	// Mandatory: switches do not decide.
	j.Optional = nil
	if !opens("e-mandatory", "c-all") {
		t.Error("a mandatory journey was not opened for a citizen who switched off all optional steps")
	}
}
