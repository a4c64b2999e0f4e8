package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// optionalOwnStep is the first journey (by id) with a step that is optional on its own (the journey as
// a whole is not), that needs no consent and releases something, with that step's index and the index
// of a mandatory step of the same journey. The shipped policies must have one: the test fails, never
// skips, when they do not.
func optionalOwnStep(t *testing.T, b *policy.Bundle) (j *policy.Journey, optional, mandatory int) {
	t.Helper()
	for _, j := range b.Journeys() {
		if j.Optional != nil {
			continue
		}
		opt := slices.IndexFunc(j.Steps, func(st *policy.Step) bool { return st.Optional != nil && st.Consent == nil && len(st.Rules) > 0 })
		mand := slices.IndexFunc(j.Steps, func(st *policy.Step) bool { return j.OptionalAt(st) == nil })
		if opt >= 0 && mand >= 0 {
			return j, opt, mand
		}
	}
	t.Fatal("no journey has a step that is optional on its own next to a mandatory one")
	return nil, 0, 0
}

// TestStepSwitchOffEndToEnd: a citizen switches one optional step off in the citizen API (real gRPC
// over TLS with an OpenID token, state in JetStream); the broker refuses a release at that step with
// SWITCHED_OFF (scope step) and logs it; the journey as a whole and another citizen are untouched; the
// switch page and the data path show the step's own switch; a mandatory step cannot be switched off
// and the refusal names its law; a forged step record refuses (SWITCH_UNVERIFIED) until the citizen
// sets it again; switching on releases again.
func TestStepSwitchOffEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	j, idx, mand := optionalOwnStep(t, ts.Broker.Bundle())
	step, mandatory := j.Steps[idx], j.Steps[mand]
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
	api, actx := ts.citizenAPI(alice)
	set := func(req *citizenv1.SetSwitchRequest) *citizenv1.Switch {
		t.Helper()
		resp, err := api.SetSwitch(actx, req)
		if err != nil {
			t.Fatalf("set switch %v: %v", req, err)
		}
		return resp.GetSwitch()
	}

	sw := set(&citizenv1.SetSwitchRequest{Journey: j.ID, Step: step.ID, Off: true})
	if !sw.GetOff() || sw.GetStep().GetId() != step.ID || sw.GetJourney().GetId() != j.ID || sw.GetChangedAt() == nil {
		t.Fatalf("step switch as stored: %v", sw)
	}
	err := release(ca)
	wantCode(t, err, codes.FailedPrecondition, "switched this step off")
	wantReason(t, err, "SWITCHED_OFF", "journey", j.ID, "step", step.ID, "scope", "step")
	if last := ts.accessRecords(alice)[0]; last.GetRefusalReason() != auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF || last.GetStep() != step.ID {
		t.Fatalf("newest access record of Alice: %v, want the SWITCHED_OFF refusal at %s", last, step.ID)
	}
	if err := release(cb); err != nil {
		t.Fatalf("Alice's step switch stopped a release for Bob: %v", err)
	}

	// The data path names the step's own switch, for that step only; the switch list shows it.
	dp, err := api.GetDataPath(actx, &citizenv1.GetDataPathRequest{Journey: j.ID})
	if err != nil {
		t.Fatal(err)
	}
	for i, ps := range dp.GetSteps() {
		want := i == idx
		if ps.GetSwitchedOff() != want || (want && ps.GetSwitchedOffBy() != citizenv1.SwitchScope_SWITCH_SCOPE_STEP) {
			t.Errorf("data path step %s: switched off %v by %v; want %v (step)", ps.GetStep().GetId(), ps.GetSwitchedOff(), ps.GetSwitchedOffBy(), want)
		}
	}
	list, err := api.ListSwitches(actx, &citizenv1.ListSwitchesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	k := slices.IndexFunc(list.GetJourneys(), func(sj *citizenv1.SwitchableJourney) bool { return sj.GetJourney().GetId() == j.ID })
	sj := list.GetJourneys()[k]
	if sj.GetSwitch().GetOff() || !sj.GetSteps()[idx].GetSwitch().GetOff() || sj.GetSteps()[idx].GetOptionalWhy().GetEn() != step.Optional.Why.EN {
		t.Errorf("ListSwitches for %s: journey %v, step %v", j.ID, sj.GetSwitch(), sj.GetSteps()[idx])
	}
	if sj.GetSteps()[mand].GetSwitch() != nil {
		t.Errorf("a mandatory step has a switch: %v", sj.GetSteps()[mand])
	}

	// What the policy does not allow changes nothing.
	_, err = api.SetSwitch(actx, &citizenv1.SetSwitchRequest{Journey: j.ID, Step: mandatory.ID, Off: true})
	wantCode(t, err, codes.FailedPrecondition, "required by law", mandatory.LegalBasis, "cannot be switched off")
	_, err = api.SetSwitch(actx, &citizenv1.SetSwitchRequest{Step: step.ID, Off: true})
	wantCode(t, err, codes.InvalidArgument)
	_, err = api.SetSwitch(actx, &citizenv1.SetSwitchRequest{Journey: j.ID, Step: "no-such-step", Off: true})
	wantCode(t, err, codes.NotFound)

	// On again: releases.
	set(&citizenv1.SetSwitchRequest{Journey: j.ID, Step: step.ID, Off: false})
	if err := release(ca); err != nil {
		t.Fatalf("step switched on again: %v", err)
	}

	// A forged step record (written to the bucket by anyone but the broker) refuses: fail closed.
	js, err := jetstream.New(ts.Broker.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), switchoff.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	forged := `{"pseudonym":"` + ts.Pseudonyms.Pseudonym(alice).Value + `","journey":"` + j.ID + `","step":"` + step.ID + `","off":false}`
	if _, err := kv.Put(context.Background(), ts.Pseudonyms.Pseudonym(alice).Value+"."+j.ID+"."+step.ID, []byte(forged)); err != nil {
		t.Fatal(err)
	}
	err = release(ca)
	wantReason(t, err, "SWITCH_UNVERIFIED", "journey", j.ID, "step", step.ID)
	set(&citizenv1.SetSwitchRequest{Journey: j.ID, Step: step.ID, Off: false})
	if err := release(ca); err != nil {
		t.Fatalf("after setting the step switch again: %v", err)
	}
}

// TestPortalStepSwitch is the per-step toggle in a real headless Chromium against the whole stack, in
// English and Danish: the optional step shows its own reason from the policy and a toggle of its own;
// switching it off in the browser makes the broker refuse that step over gRPC while the journey's
// switch stays on; the data path says the step is switched off; in Danish the step shows the policy's
// Danish words and switching it on again releases.
func TestPortalStepSwitch(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	base := ts.Portal.base
	j, idx, _ := optionalOwnStep(t, ts.Broker.Bundle())
	step := j.Steps[idx]
	citizen := ts.Population.Featured()[0]
	c := ts.open(j.Steps[0].Agency, j.ID, citizen.ID)
	ts.advance(j, c, idx)
	release := func() error {
		_, err := ts.agency(step.Agency).Release(cw("cw-5"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: step.Rules[0].Authority, Dataset: step.Rules[0].Dataset})
		return err
	}

	ctx := portaltest.NewBrowser(t)
	portaltest.SetViewport(t, ctx, portaltest.Desktop)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		portaltest.Do(t, ctx, what, steps...)
	}
	anchor := "sw-" + j.ID + "--" + step.ID
	text := func(id string) string {
		return portaltest.Eval[string](t, ctx, `document.getElementById("`+id+`").innerText`)
	}
	// The state tag is set in capitals by the style sheet, which innerText reflects.
	state := func(id string) string {
		return strings.ToLower(portaltest.Eval[string](t, ctx, `document.querySelector("#`+id+` .switch__state").innerText`))
	}
	do("open the portal", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)))
	do("sign in", chromedp.Click(chromedp.CSS(`input[value="`+citizen.ID+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))

	do("switch page (en)", chromedp.Navigate(base+"/switches?lang=en"), chromedp.WaitVisible(chromedp.CSS("#"+anchor)))
	if got := text(anchor); !strings.Contains(got, step.Optional.Why.EN) || !strings.Contains(got, step.Title.EN) || !strings.Contains(got, "Switch off") {
		t.Errorf("the step's toggle does not show its title, its own reason and a switch:\n%s", got)
	}
	do("switch the step off", chromedp.Click(chromedp.CSS("#"+anchor+" button")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := state(anchor); !strings.HasPrefix(got, "switched off") {
		t.Errorf("after switching the step off, its toggle says:\n%s", got)
	}
	if got := state("sw-" + j.ID); !strings.HasPrefix(got, "on") {
		t.Errorf("switching one step off changed the journey's switch: %q", got)
	}
	portaltest.Screenshot(t, ctx, "stepswitch-01-off-en")
	err := release()
	wantReason(t, err, "SWITCHED_OFF", "journey", j.ID, "step", step.ID, "scope", "step")

	do("data path (en)", chromedp.Navigate(base+"/journeys/"+j.ID), chromedp.WaitVisible(chromedp.CSS("#step-"+step.ID)))
	if got := portaltest.Eval[string](t, ctx, `document.getElementById("step-`+step.ID+`").closest("section").innerText`); !strings.Contains(strings.ToLower(got), "you have switched this step off") {
		t.Errorf("the data path does not show the step's switch:\n%s", got)
	}

	do("switch page (da)", chromedp.Navigate(base+"/switches?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #`+anchor)))
	got := text(anchor)
	if !strings.Contains(got, step.Optional.Why.In("da")) || !strings.Contains(got, step.Title.In("da")) || !strings.HasPrefix(state(anchor), "slået fra") {
		t.Errorf("Danish step toggle:\n%s", got)
	}
	if strings.Contains(got, step.Optional.Why.EN) {
		t.Errorf("the Danish step toggle shows the English reason:\n%s", got)
	}
	portaltest.Screenshot(t, ctx, "stepswitch-02-off-da")
	do("switch the step on (da)", chromedp.Click(chromedp.CSS("#"+anchor+" button")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := state(anchor); !strings.HasPrefix(got, "til") {
		t.Errorf("after switching on in Danish, the toggle says:\n%s", got)
	}
	if err := release(); err != nil {
		t.Fatalf("switched on again in the browser, the release is still refused: %v", err)
	}
	if errs := portaltest.ConsoleErrors(ctx); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
