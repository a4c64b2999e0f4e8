package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// citizenAPI is the citizen API over the portal's own TLS connection, as the citizen with the ID token
// the development OpenID provider mints for them.
func (ts *testStack) citizenAPI(citizen string) (citizenv1.CitizenServiceClient, context.Context) {
	ts.t.Helper()
	tok, err := ts.Portal.issuer.Mint(citizen, time.Now().Add(time.Hour))
	if err != nil {
		ts.t.Fatal(err)
	}
	return citizenv1.NewCitizenServiceClient(ts.Portal.conn), metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// advance completes the steps of case c before step index to, each by its agency.
func (ts *testStack) advance(j *policy.Journey, c *brokerv1.Case, to int) {
	ts.t.Helper()
	for _, st := range j.Steps[:to] {
		if _, err := ts.agency(st.Agency).CompleteStep(cw("cw-1"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: st.ID}); err != nil {
			ts.t.Fatalf("complete %s: %v", st.ID, err)
		}
	}
}

// optionalStep is the first journey (by id) with an optional step, and that step's index.
func optionalStep(t *testing.T, b *policy.Bundle) (*policy.Journey, int) {
	t.Helper()
	for _, j := range b.Journeys() {
		for i, st := range j.Steps {
			if j.OptionalAt(st) != nil && st.Consent == nil && len(st.Rules) > 0 {
				return j, i
			}
		}
	}
	t.Skip("no journey has an optional step without consent")
	return nil, 0
}

// TestSwitchOffEndToEnd: a citizen switches the optional steps of a journey off in the citizen API
// (real gRPC over TLS with an OpenID token); the broker refuses releases at those steps with
// SWITCHED_OFF and logs the refusal; another citizen's case is untouched; the data path shows the
// switch; switching on releases again; the global switch works the same; a switch record that does not
// authenticate refuses (SWITCH_UNVERIFIED) until the citizen sets it again; a journey with nothing
// optional cannot be switched off and its steps say which law requires them.
func TestSwitchOffEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	j, idx := optionalStep(t, ts.Broker.Bundle())
	step := j.Steps[idx]
	rule := step.Rules[0]
	featured := ts.Population.Featured()
	alice, bob := featured[0].ID, featured[1].ID
	ca, cb := ts.open(j.Steps[0].Agency, j.ID, alice), ts.open(j.Steps[0].Agency, j.ID, bob)
	ts.advance(j, ca, idx)
	ts.advance(j, cb, idx)
	release := func(c *brokerv1.Case) error {
		_, err := ts.agency(step.Agency).Release(cw("cw-5"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
		return err
	}
	if err := release(ca); err != nil {
		t.Fatalf("before any switch, the optional step releases: %v", err)
	}
	api, actx := ts.citizenAPI(alice)
	_, bctx := ts.citizenAPI(bob)
	set := func(ctx context.Context, journey string, off bool) *citizenv1.Switch {
		t.Helper()
		resp, err := api.SetSwitch(ctx, &citizenv1.SetSwitchRequest{Journey: journey, Off: off})
		if err != nil {
			t.Fatalf("set switch %q off=%v: %v", journey, off, err)
		}
		return resp.GetSwitch()
	}

	// Off for this journey: refused with the reason, logged; Bob's case releases.
	if sw := set(actx, j.ID, true); !sw.GetOff() || sw.GetJourney().GetId() != j.ID || sw.GetChangedAt() == nil {
		t.Fatalf("switch as stored: %v", sw)
	}
	err := release(ca)
	wantCode(t, err, codes.FailedPrecondition, "switched it off")
	wantReason(t, err, "SWITCHED_OFF", "journey", j.ID, "step", step.ID, "scope", "journey")
	if err := release(cb); err != nil {
		t.Fatalf("Alice's switch stopped a release for Bob: %v", err)
	}
	recs := ts.accessRecords(alice)
	if last := recs[0]; last.GetRefusalReason() != auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF || last.GetStep() != step.ID {
		t.Fatalf("newest access record of Alice: %v, want the SWITCHED_OFF refusal at %s", last, step.ID)
	}

	// The data path and the switch page show it, to Alice only.
	path := func(ctx context.Context) *citizenv1.DataPathStep {
		resp, err := api.GetDataPath(ctx, &citizenv1.GetDataPathRequest{Journey: j.ID})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSteps()[idx]
	}
	if p := path(actx); !p.GetOptional() || !p.GetSwitchedOff() || p.GetOptionalWhy().GetEn() == "" {
		t.Errorf("Alice's data path step: %v, want optional and switched off with why", p)
	}
	if p := path(bctx); !p.GetOptional() || p.GetSwitchedOff() {
		t.Errorf("Bob's data path step: %v, want optional and not switched off", p)
	}
	list, err := api.ListSwitches(bctx, &citizenv1.ListSwitchesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sj := range list.GetJourneys() {
		if sj.GetSwitch().GetOff() {
			t.Errorf("Bob's switches show %s off: another citizen's switch leaked", sj.GetJourney().GetId())
		}
	}

	// On again: releases.
	set(actx, j.ID, false)
	if err := release(ca); err != nil {
		t.Fatalf("switched on again: %v", err)
	}
	// The switch for all journeys.
	set(actx, "", true)
	err = release(ca)
	wantReason(t, err, "SWITCHED_OFF", "scope", "all")
	set(actx, "", false)
	if err := release(ca); err != nil {
		t.Fatalf("all switched on again: %v", err)
	}

	// A forged switch record (written to the bucket by anyone but the broker) refuses: fail closed.
	js, err := jetstream.New(ts.Broker.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), switchoff.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), ts.Pseudonyms.Pseudonym(alice).Value+"."+j.ID, []byte(`{"off":false}`)); err != nil {
		t.Fatal(err)
	}
	err = release(ca)
	wantCode(t, err, codes.FailedPrecondition, "cannot be verified")
	wantReason(t, err, "SWITCH_UNVERIFIED", "journey", j.ID, "step", step.ID)
	if p := path(actx); !p.GetSwitchedOff() {
		t.Errorf("an unverifiable switch shows as on in the data path: %v", p)
	}
	list, err = api.ListSwitches(actx, &citizenv1.ListSwitchesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.GetJourneys(), func(sj *citizenv1.SwitchableJourney) bool { return sj.GetJourney().GetId() == j.ID })
	if !list.GetJourneys()[i].GetSwitch().GetUnverified() {
		t.Errorf("ListSwitches does not report the unverifiable switch: %v", list.GetJourneys()[i].GetSwitch())
	}
	set(actx, j.ID, false) // the citizen's own choice again repairs it
	if err := release(ca); err != nil {
		t.Fatalf("after setting the switch again: %v", err)
	}

	// A journey with nothing optional: every step says the law that requires it; it cannot be switched off.
	for _, sj := range list.GetJourneys() {
		pj, _ := ts.Broker.Bundle().Journey(sj.GetJourney().GetId())
		for k, st := range sj.GetSteps() {
			if st.GetOptional() != (pj.OptionalAt(pj.Steps[k]) != nil) || st.GetLegalBasis() != pj.Steps[k].LegalBasis {
				t.Errorf("%s step %s: optional %v, law %q", pj.ID, st.GetStep().GetId(), st.GetOptional(), st.GetLegalBasis())
			}
		}
		if !pj.HasOptional() {
			_, err := api.SetSwitch(actx, &citizenv1.SetSwitchRequest{Journey: pj.ID, Off: true})
			wantCode(t, err, codes.FailedPrecondition, "required by law")
		}
	}
	// Without a token nothing is read or switched.
	_, err = api.SetSwitch(context.Background(), &citizenv1.SetSwitchRequest{Journey: j.ID, Off: true})
	wantCode(t, err, codes.Unauthenticated)
}
