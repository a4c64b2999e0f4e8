package main

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// TestPortalCorrectMyData is the citizen's side of "correct my data" in a real headless Chromium
// against the whole stack: from My data the citizen opens the form, is told when the reason is
// missing, flags a field released in one of their cases (chosen by its label), and sees the request
// waiting with the case that used the field; the authority's staff reject it; the citizen sees the
// outcome and the authority's reason, in English and Danish. Journey, dataset and field come from the
// policies.
func TestPortalCorrectMyData(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	base := ts.Portal.base
	j, rule := plainReleaseStep(t, ts.Broker.Bundle())
	citizen := ts.citizenFor(j.ID)
	c := ts.open(j.Steps[0].Agency, j.ID, citizen)
	if _, err := ts.agency(j.Steps[0].Agency).Release(cw("cw-1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset}); err != nil {
		t.Fatal(err)
	}

	ctx := portaltest.NewBrowser(t)
	portaltest.SetViewport(t, ctx, portaltest.Desktop)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		portaltest.Do(t, ctx, what, steps...)
	}
	text := func(sel string) string {
		return portaltest.Eval[string](t, ctx, `document.querySelector(`+jsString(sel)+`).innerText`)
	}
	do("open the portal", chromedp.Navigate(base+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)))
	do("sign in", chromedp.Click(chromedp.CSS(`input[value="`+citizen+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))

	do("my dataset", chromedp.Navigate(base+"/data/"+rule.Authority+"/"+rule.Dataset), chromedp.WaitVisible(chromedp.CSS("#correct a")))
	do("open the form", chromedp.Click(chromedp.CSS("#correct a")), chromedp.WaitVisible(chromedp.CSS("select#field")))
	// The field released in the case, as the form offers it (leaf fields, by label).
	paths := portaltest.Eval[[]string](t, ctx, `Array.from(document.querySelectorAll("#field option")).map(o => o.value)`)
	field := ""
	for _, p := range paths {
		if p == rule.Fields[0] || strings.HasPrefix(p, rule.Fields[0]+".") {
			field = p
			break
		}
	}
	if field == "" {
		t.Fatalf("the form does not offer %s (offers %v)", rule.Fields[0], paths)
	}
	if opt := text(`#field option[value="` + field + `"]`); opt == field || strings.Contains(opt, "_") {
		t.Errorf("the form names the field %q, want its label", opt)
	}
	portaltest.Screenshot(t, ctx, "correct-01-form-en")
	do("send without a reason", chromedp.SetValue(chromedp.CSS("#field"), field), chromedp.Click(chromedp.CSS(`form.form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(".error-summary")))
	if got := text(".error-summary"); !strings.Contains(got, "why") {
		t.Errorf("missing reason says:\n%s", got)
	}
	const reason, value = "I moved in the spring.", "The value the citizen says is right"
	do("send", chromedp.SetValue(chromedp.CSS("#field"), field), chromedp.SendKeys(chromedp.CSS("#reason"), reason),
		chromedp.SendKeys(chromedp.CSS("#value"), value), chromedp.Click(chromedp.CSS(`form.form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")), chromedp.WaitVisible(chromedp.CSS("#corrections")))
	list := text("#corrections")
	for _, want := range []string{"Waiting for the authority", reason, value, j.Title.EN} {
		if !strings.Contains(list, want) {
			t.Errorf("the request list lacks %q:\n%s", want, list)
		}
	}
	if href := portaltest.Eval[string](t, ctx, `document.querySelector("#corrections .cases-used a").getAttribute("href")`); href != "/cases/"+c.GetId() {
		t.Errorf("the case that used the field links to %q", href)
	}
	portaltest.Screenshot(t, ctx, "correct-02-waiting-en")

	// The request is in the timeline, as the citizen's own act, with the way to the answer.
	var reqID string
	for _, r := range ts.accessRecords(citizen) {
		if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED {
			reqID = r.GetId()
		}
	}
	do("timeline", chromedp.Navigate(base+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("#"+reqID)))
	if entry := text("#" + reqID); !strings.Contains(entry, "You asked") ||
		!strings.Contains(entry, "See the answer") || strings.Contains(entry, "Question this access") {
		t.Errorf("the request's timeline entry:\n%s", entry)
	}

	// The authority's staff reject it; the citizen reads the answer, in Danish too.
	q := kit.NewCorrections(ts.conn(mtls.KindAuthority, rule.Authority))
	open, err := q.Open(context.Background())
	if err != nil || len(open) != 1 {
		t.Fatalf("the authority's open requests: %v, %v", open, err)
	}
	answer := "Vores oplysning stemmer med registreringen."
	if _, err := q.Decide(context.Background(), open[0].GetId(), false, answer, "staff-1"); err != nil {
		t.Fatal(err)
	}
	do("Danish", chromedp.Navigate(base+"/corrections?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #corrections`)))
	list = text("#corrections")
	for _, want := range []string{"Ikke godkendt", answer, j.Title.In("da"), "Hvor det blev brugt"} {
		if !strings.Contains(list, want) {
			t.Errorf("the Danish request list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "Waiting") || strings.Contains(list, "Not accepted") {
		t.Errorf("English words on the Danish page:\n%s", list)
	}
	portaltest.Screenshot(t, ctx, "correct-03-rejected-da")
	do("English", chromedp.Navigate(base+"/corrections?lang=en"), chromedp.WaitVisible(chromedp.CSS(`html[lang="en"] #corrections`)))
	if list = text("#corrections"); !strings.Contains(list, "Not accepted") || !strings.Contains(list, answer) {
		t.Errorf("the English request list after the decision:\n%s", list)
	}
	// No machine words on the correction pages, in either language.
	var datasetIDs []string
	for _, a := range ts.Broker.Bundle().Registry.Authorities {
		datasetIDs = append(datasetIDs, a.Datasets...)
	}
	for _, lang := range []string{"en", "da"} {
		for _, pg := range []string{"/corrections?", "/corrections/new?authority=" + rule.Authority + "&dataset=" + rule.Dataset + "&", "/?"} {
			do(lang+" "+pg, chromedp.Navigate(base+pg+"lang="+lang), chromedp.WaitVisible(chromedp.CSS("main h1")))
			body := portaltest.Eval[string](t, ctx, `document.body.innerText`)
			for _, leak := range portaltest.Leaks(body, datasetIDs...) {
				t.Errorf("%s %s: shows %s", lang, pg, leak)
			}
			if strings.Contains(body, "⟦") {
				t.Errorf("%s %s: a message has no translation", lang, pg)
			}
		}
	}
	// The one expected: the form sent without a reason is answered 400 with the form and the error.
	for _, e := range portaltest.ConsoleErrors(ctx) {
		if !strings.Contains(e, "status of 400") || !strings.HasSuffix(e, "/corrections)") {
			t.Errorf("console error: %v", e)
		}
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
