package main

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestPortalSwitchOffAndBreakGlass is the citizen's side of switch-off and break-glass in a real
// headless Chromium against the whole stack, in English and Danish: the switch page lists what can be
// switched off (with the policy's words) and what the law requires (with the law); switching a
// journey off in the browser makes the broker refuse the optional step over gRPC, the data path says
// it is switched off, and switching on again releases; an emergency release appears in the timeline
// with the emergency and the caseworker's justification.
func TestPortalSwitchOffAndBreakGlass(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	base := ts.Portal.base
	b := ts.Broker.Bundle()
	j, idx := optionalStep(t, b)
	step := j.Steps[idx]
	why := j.OptionalAt(step).Why
	mandatory := j.Steps[0]
	if j.OptionalAt(mandatory) != nil {
		t.Skip("the journey's first step is optional")
	}
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
	section := func(id string) string {
		return portaltest.Eval[string](t, ctx, `document.getElementById("`+id+`").innerText`)
	}
	do("open the portal", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)))
	do("sign in", chromedp.Click(chromedp.CSS(`input[value="`+citizen.ID+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))

	// English: the switch page, with the policy's reason and, for a mandatory step, its law.
	do("switch page", chromedp.Navigate(base+"/switches"), chromedp.WaitVisible(chromedp.CSS("#sw-"+j.ID)))
	txt := section("sw-" + j.ID)
	if !strings.Contains(txt, why.EN) || !strings.Contains(txt, mandatory.LegalBasis) || !strings.Contains(txt, step.Title.EN) {
		t.Errorf("switch page section for %s does not give the reason to switch off and the law of the mandatory step:\n%s", j.ID, txt)
	}
	portaltest.Screenshot(t, ctx, "switch-01-page-en")
	do("switch off", chromedp.Click(chromedp.CSS(`#sw-`+j.ID+` button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	portaltest.Screenshot(t, ctx, "switch-02-off-en")
	err := release()
	wantCode(t, err, codes.FailedPrecondition)
	wantReason(t, err, "SWITCHED_OFF", "journey", j.ID, "step", step.ID)

	// The data path says so; the refusal is in the timeline in the citizen's words (not the broker's).
	do("data path", chromedp.Navigate(base+"/journeys/"+j.ID), chromedp.WaitVisible(chromedp.CSS("#step-"+step.ID)))
	stepText := portaltest.Eval[string](t, ctx, `document.getElementById("step-`+step.ID+`").closest("section").innerText`)
	if !strings.Contains(stepText, why.EN) || !strings.Contains(strings.ToLower(stepText), "switched it off") {
		t.Errorf("the data path does not show the switch:\n%s", stepText)
	}
	mandText := portaltest.Eval[string](t, ctx, `document.getElementById("step-`+mandatory.ID+`").closest("section").innerText`)
	if !strings.Contains(mandText, "law") {
		t.Errorf("the mandatory step does not say the law requires it:\n%s", mandText)
	}
	portaltest.Screenshot(t, ctx, "switch-03-datapath-en")

	// Danish: the same page in Danish, with the policy's Danish words; switch on again.
	do("Danish", chromedp.Navigate(base+"/switches"), chromedp.WaitVisible(chromedp.CSS(".lang-switch")), chromedp.Click(chromedp.CSS(".lang-switch")))
	do("Danish page", chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #sw-`+j.ID)))
	txt = section("sw-" + j.ID)
	if !strings.Contains(txt, why.In("da")) || !strings.Contains(txt, step.Title.In("da")) || !strings.Contains(txt, mandatory.LegalBasis) {
		t.Errorf("Danish switch page section:\n%s", txt)
	}
	if strings.Contains(txt, why.EN) {
		t.Errorf("Danish switch page shows the English reason:\n%s", txt)
	}
	portaltest.Screenshot(t, ctx, "switch-04-page-da")
	do("switch on (da)", chromedp.Click(chromedp.CSS(`#sw-`+j.ID+` button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	portaltest.Screenshot(t, ctx, "switch-05-on-da")
	if err := release(); err != nil {
		t.Fatalf("switched on again in the browser, the release is still refused: %v", err)
	}

	// A break-glass release shows in the timeline at once, with the emergency and the justification.
	bj, bg := breakGlassJourney(t, b)
	bc := c
	if bj.ID != j.ID {
		bc = ts.open(bj.Steps[0].Agency, bj.ID, citizen.ID)
	}
	justification := "Child in intensive care; the parents must be reached now."
	rel, err := ts.agency(bg.Agency).BreakGlassRelease(cw("doc-7"), &brokerv1.BreakGlassReleaseRequest{CaseId: bc.GetId(),
		Authority: bg.Rules[0].Authority, Dataset: bg.Rules[0].Dataset, ReasonCode: bg.Reasons[0].Code, Justification: justification})
	if err != nil {
		t.Fatalf("break-glass release: %v", err)
	}
	for _, lang := range []string{"da", "en"} {
		do("timeline "+lang, chromedp.Navigate(base+"/?lang="+lang), chromedp.WaitVisible(chromedp.CSS("#"+rel.GetAccessId())))
		entry := section(rel.GetAccessId())
		if !strings.Contains(entry, justification) || !strings.Contains(entry, bg.Reasons[0].Title.In(lang)) || !strings.Contains(entry, bg.Purpose.In(lang)) {
			t.Errorf("%s: the break-glass entry does not show the emergency, the purpose and the justification:\n%s", lang, entry)
		}
		portaltest.Screenshot(t, ctx, "breakglass-timeline-"+lang)
	}
	// The auditor's review of it is shown too, with the note and a link to the access reviewed.
	note := "Confirmed with the neonatal ward."
	closed, err := ts.auditor().CloseBreakGlassReview(context.Background(), &auditv1.CloseBreakGlassReviewRequest{
		AccessId: rel.GetAccessId(), Outcome: auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_NOT_JUSTIFIED, Note: note})
	if err != nil {
		t.Fatal(err)
	}
	do("timeline with the review", chromedp.Navigate(base+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("#"+closed.GetReview().GetClosureAccessId())))
	review := section(closed.GetReview().GetClosureAccessId())
	if !strings.Contains(review, note) || !strings.Contains(review, "not justified") || strings.Contains(review, "Question this access") {
		t.Errorf("the review entry:\n%s", review)
	}
	if href := portaltest.Eval[string](t, ctx, `document.querySelector("#`+closed.GetReview().GetClosureAccessId()+` .entry__review a").getAttribute("href")`); href != "/#"+rel.GetAccessId() {
		t.Errorf("the review links to %q, want the access reviewed", href)
	}
	portaltest.Screenshot(t, ctx, "breakglass-review-en")
	if errs := portaltest.ConsoleErrors(ctx); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
