package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/labels"
)

// TestPortalEndToEnd is the citizen's side of the whole system in a real headless Chromium, against
// the stack `aperture dev` runs: development login → a caseworker's release made through the broker's
// gRPC API appears in the citizen's timeline without reload → preview and grant consent → the consent
// step releases → revoke → the next release is refused → question an access → the agency answers
// through its API → the citizen sees the answer. Screenshots of every page are saved as artefacts.
func TestPortalEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0"
	})
	base := ts.Portal.base
	lars := ts.Population.Featured()[0].ID
	c := ts.open("municipality", "sickness-benefit", lars)
	mun := ts.agency("municipality")

	ctx := portaltest.NewBrowser(t)
	portaltest.SetViewport(t, ctx, portaltest.Desktop)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		portaltest.Do(t, ctx, what, steps...)
	}
	pageText := func() string { return portaltest.Eval[string](t, ctx, `document.querySelector("main").innerText`) }

	// Signed out, the portal sends the browser to the development login, which is marked as such.
	do("open the portal", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)))
	if body := portaltest.Eval[string](t, ctx, `document.body.innerText`); !strings.Contains(body, "DEVELOPMENT LOGIN") {
		t.Fatalf("the development login is not marked as such:\n%s", body)
	}
	portaltest.Screenshot(t, ctx, "01-dev-login")
	do("sign in as Lars", chromedp.Click(chromedp.CSS(`input[value="`+lars+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))
	// The indicator shows once the event stream is open, which the portal answers only after the
	// citizen API has subscribed to the citizen's new accesses: nothing released from here on is missed.
	do("live", chromedp.WaitVisible(chromedp.CSS("#live-indicator")))

	// A caseworker releases through the gRPC API; the entry appears without reload.
	rel, err := mun.Release(cw("4411"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "population", Dataset: "person"})
	if err != nil {
		t.Fatal(err)
	}
	do("live entry", chromedp.WaitVisible(chromedp.CSS("#"+rel.GetAccessId())))
	if entry := portaltest.Eval[string](t, ctx, `document.getElementById("`+rel.GetAccessId()+`").innerText`); !strings.Contains(entry, "caseworker 4411") || !strings.Contains(entry, "Sickness benefit") {
		t.Errorf("live entry does not say who and why:\n%s", entry)
	}
	portaltest.Screenshot(t, ctx, "02-timeline-live")

	// Steps 1 and 2, so that the consent step is current.
	for _, step := range []string{"register-absence", "check-employment-requirement"} {
		if _, err := mun.CompleteStep(cw("4411"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: step}); err != nil {
			t.Fatalf("complete %s: %v", step, err)
		}
	}
	releaseHealth := func() (*brokerv1.ReleaseResponse, error) {
		return mun.Release(cw("4411"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "health", Dataset: "patient"})
	}
	_, err = releaseHealth()
	wantCode(t, err, codes.FailedPrecondition, "consent")

	// The case page shows where the case is.
	do("my case", chromedp.Navigate(base+"/cases/"+c.GetId()), chromedp.WaitVisible(chromedp.CSS("ol.steps")))
	if txt := pageText(); !strings.Contains(txt, "Step 3: Assess your work capacity") {
		t.Errorf("case page does not show the current step:\n%s", txt)
	}
	portaltest.Screenshot(t, ctx, "03-case")

	// Preview, then grant consent in the browser; the consent step releases.
	do("consent preview", chromedp.Navigate(base+"/consents/sickness-benefit/assess-work-capacity"), chromedp.WaitVisible(chromedp.CSS("#days")))
	// Every field the step may see is listed by the label its authority gives it (read from the
	// policies and the authorities' protos), never by its path.
	bundle, err := loadPolicyTree(os.DirFS(filepath.Join("..", "..", "policies")), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	j, _ := bundle.Journey("sickness-benefit")
	txt := strings.ToLower(pageText())
	for _, st := range j.Steps {
		if st.ID != "assess-work-capacity" {
			continue
		}
		for _, r := range st.Rules {
			for _, f := range r.Fields {
				fds, err := labels.Fields(r.Message, f)
				if err != nil {
					t.Fatal(err)
				}
				if l := labels.Field(fds[len(fds)-1]).GetEn(); l == "" || !strings.Contains(txt, strings.ToLower(l)) || strings.Contains(txt, f) {
					t.Errorf("preview does not list %s as %q:\n%s", f, l, txt)
				}
			}
		}
	}
	portaltest.Screenshot(t, ctx, "04-consent-preview")
	do("grant", chromedp.Click(chromedp.CSS(`form.form button:not([formmethod])`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	// After the grant the page shows the consent given, with its end date and a way to withdraw it,
	// and no longer offers to give it.
	if n := portaltest.Eval[int](t, ctx, `document.querySelectorAll('form[action$="/grant"]').length`); n != 0 {
		t.Errorf("the consent page still offers the grant form after the grant")
	}
	if n := portaltest.Eval[int](t, ctx, `document.querySelectorAll('form[action$="/revoke"] button').length`); n != 1 {
		t.Errorf("the consent page offers %d ways to withdraw, want 1", n)
	}
	portaltest.Screenshot(t, ctx, "05-consent-granted")
	health, err := releaseHealth()
	if err != nil {
		t.Fatalf("release after consent: %v", err)
	}

	// Revoke in the browser: the very next release is refused.
	do("back to the consent", chromedp.Navigate(base+"/consents/sickness-benefit/assess-work-capacity"), chromedp.WaitVisible(chromedp.CSS(`form[action$="/revoke"] button`)))
	do("revoke", chromedp.Click(chromedp.CSS(`form[action$="/revoke"] button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	_, err = releaseHealth()
	wantCode(t, err, codes.FailedPrecondition, "consent")
	do("consents", chromedp.Navigate(base+"/consents"), chromedp.WaitVisible(chromedp.CSS("h1")))
	portaltest.Screenshot(t, ctx, "06-consents")

	// The timeline shows the release under consent and the refusal after revocation.
	do("timeline", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#"+health.GetAccessId())))
	if n := portaltest.Eval[int](t, ctx, `document.querySelectorAll("#timeline > li").length`); n < 4 {
		t.Errorf("timeline has %d entries, want at least 4 (release, refusal, consent release, refusal)", n)
	}
	portaltest.Screenshot(t, ctx, "07-timeline")

	// Question the health access; the agency answers through its API; the citizen sees the answer.
	do("question form", chromedp.Navigate(base+"/questions/new?access="+health.GetAccessId()), chromedp.WaitVisible(chromedp.CSS("#message")))
	do("ask", chromedp.SendKeys(chromedp.CSS("#message"), "Why did the jobcentre need my sick note?"),
		chromedp.Submit(chromedp.CSS("#message")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	qs, err := mun.ListQuestions(cw("4411"), &brokerv1.ListQuestionsRequest{OnlyOpen: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(qs.GetQuestions()) != 1 || qs.GetQuestions()[0].GetAccessId() != health.GetAccessId() {
		t.Fatalf("agency sees questions %v, want the one about %s", qs.GetQuestions(), health.GetAccessId())
	}
	if _, err := mun.AnswerQuestion(cw("4411"), &brokerv1.AnswerQuestionRequest{
		QuestionId: qs.GetQuestions()[0].GetId(), Answer: "To plan your return to work: only the expected duration and work capacity, never the diagnosis.",
	}); err != nil {
		t.Fatal(err)
	}
	do("my questions", chromedp.Navigate(base+"/questions"), chromedp.WaitVisible(chromedp.CSS("h1")))
	if txt := pageText(); !strings.Contains(txt, "never the diagnosis") {
		t.Errorf("the answer is not shown:\n%s", txt)
	}
	portaltest.Screenshot(t, ctx, "08-questions")

	// The data path before any case, and what an authority holds (a logged look of one's own).
	do("data path", chromedp.Navigate(base+"/journeys/benefit-control"), chromedp.WaitVisible(chromedp.CSS("svg.datapath")))
	portaltest.Screenshot(t, ctx, "09-datapath")
	do("my data", chromedp.Navigate(base+"/data/population/person"), chromedp.WaitVisible(chromedp.CSS("dl.record")))
	portaltest.Screenshot(t, ctx, "10-my-data")
	do("timeline again", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	if first := portaltest.Eval[string](t, ctx, `document.querySelector("#timeline > li").innerText`); !strings.Contains(first, "You") {
		t.Errorf("the citizen's own look is not the newest entry:\n%s", first)
	}

	portaltest.SetViewport(t, ctx, portaltest.Phone)
	portaltest.Screenshot(t, ctx, "11-timeline-phone")
	if errs := portaltest.ConsoleErrors(ctx); len(errs) > 0 {
		t.Errorf("browser errors: %v", errs)
	}
}
