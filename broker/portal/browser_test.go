package portal

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/chromedp/chromedp"
)

// TestBrowser drives the portal in a real headless Chromium: sign-in redirect, the live timeline
// (an access streamed by the API appears without reload and is announced), keyboard-only use, the
// language switch, the data path diagram, the consent and question forms, and the layout on a
// phone. Screenshots go to portaltest.ArtifactsDir.
func TestBrowser(t *testing.T) {
	s := newStack(t)
	ctx := portaltest.NewBrowser(t)
	base := s.srv.URL
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		portaltest.Do(t, ctx, what, steps...)
	}
	text := func(sel string) string {
		t.Helper()
		return portaltest.Eval[string](t, ctx, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
	}
	active := func() string {
		t.Helper()
		return portaltest.Eval[string](t, ctx, `(document.activeElement.id || "") + "|" + document.activeElement.className + "|" + document.activeElement.textContent.trim()`)
	}
	waitFor := func(what, expr string) {
		t.Helper()
		// Evaluate in a loop rather than chromedp.Poll: the page may be navigating, which ends the
		// JavaScript context a poll runs in.
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var ok bool
			ok, err = chromedp.Run(sctx, chromedp.Evaluate[bool](expr))
			cancel()
			if err == nil && ok {
				return
			}
		}
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("browser: %s: %s not true (%v) on %s", what, expr, err, loc)
	}
	portaltest.SetViewport(t, ctx, portaltest.Desktop)

	// Signed out: the portal sends the browser to the login, which comes back to the timeline.
	do("open the timeline", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	if h1 := text("h1"); h1 != "Who has seen my data" {
		t.Fatalf("h1 = %q", h1)
	}

	// Live: once the page listens, an access logged now appears at the top, announced politely.
	select {
	case <-s.fake.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the page did not open the event stream")
	}
	do("live indicator", chromedp.WaitVisible(chromedp.CSS("#live-indicator")))
	live := testAccesses()[2]
	live.Id, live.Time = accID(42), nil
	live.Time = ts(testNow.Add(time.Minute))
	s.fake.watch <- live
	do("live entry", chromedp.WaitVisible(chromedp.CSS("#"+accID(42))))
	if first := portaltest.Eval[string](t, ctx, `document.querySelector('#timeline > li').id`); first != accID(42) {
		t.Errorf("first entry = %s, want the live one", first)
	}
	if got := text("#live-status"); !strings.Contains(got, "New access: Copenhagen Municipality (Jobcentre), caseworker jc-207 looked at your data") {
		t.Errorf("live announcement = %q", got)
	}
	if n := portaltest.Eval[int](t, ctx, `document.querySelectorAll('#timeline > li').length`); n != 4 {
		t.Errorf("%d entries, want 4", n)
	}
	portaltest.Screenshot(t, ctx, "01-timeline-desktop")

	// Keyboard only: the skip link comes first and is visible when focused; it moves focus to main.
	do("tab", chromedp.KeyEvent("\t"))
	if a := active(); !strings.Contains(a, "skip-link") {
		t.Fatalf("first Tab focused %q, want the skip link", a)
	}
	if top := portaltest.Eval[float64](t, ctx, `document.activeElement.getBoundingClientRect().top`); top < 0 {
		t.Errorf("focused skip link is off screen (top %v)", top)
	}
	if o := portaltest.Eval[string](t, ctx, `getComputedStyle(document.activeElement).outlineStyle`); o == "none" {
		t.Error("no visible focus outline")
	}
	do("enter", chromedp.KeyEvent("\r"))
	waitFor("focus on main", `document.activeElement.id === "main"`)
	do("tab", chromedp.KeyEvent("\t"))
	if a := active(); !strings.HasPrefix(a, "f-authority|") {
		t.Errorf("Tab after the skip link focused %q, want the first filter", a)
	}
	// Tab on to the first "Question this access" and follow it with Enter.
	for i := 0; i < 40 && !strings.Contains(active(), "Question this access"); i++ {
		do("tab", chromedp.KeyEvent("\t"))
	}
	if a := active(); !strings.Contains(a, "Question this access") {
		t.Fatalf("never reached a question link by keyboard; at %q", a)
	}
	do("follow the link", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("#message")))
	portaltest.Screenshot(t, ctx, "02-question-form")
	do("write the question", chromedp.SendKeys(chromedp.CSS("#message"), "Why did the jobcentre need this?"), chromedp.KeyEvent("\t"))
	if a := active(); !strings.Contains(a, "Send the question") {
		t.Fatalf("Tab after the question focused %q", a)
	}
	do("send by keyboard", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS(".flash")))
	q := s.fake.last("QuestionAccess")
	if q == nil || q.req.(*citizenv1.QuestionAccessRequest).GetMessage() != "Why did the jobcentre need this?" || q.token != testToken {
		t.Fatalf("QuestionAccess = %+v", q)
	}
	if id := q.req.(*citizenv1.QuestionAccessRequest).GetAccessId(); id != accID(42) {
		t.Errorf("questioned %s, want the first (live) entry %s", id, accID(42))
	}
	portaltest.Screenshot(t, ctx, "03-questions")

	// Danish: the switch changes the language and it stays.
	do("timeline", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	do("switch to Danish", chromedp.Click(chromedp.CSS(".lang-switch")))
	waitFor("Danish page", `document.documentElement.lang === "da"`)
	if h1 := text("h1"); h1 != "Hvem har set mine data" {
		t.Errorf("Danish h1 = %q", h1)
	}
	portaltest.Screenshot(t, ctx, "04-timeline-da")
	do("cases in Danish", chromedp.Navigate(base+"/cases"), chromedp.WaitVisible(chromedp.CSS("h1")))
	if h1 := text("h1"); h1 != "Mine sager" {
		t.Errorf("language not kept: h1 = %q", h1)
	}
	do("back to English", chromedp.Click(chromedp.CSS(".lang-switch")))
	waitFor("English page", `document.documentElement.lang === "en"`)

	// My cases and one case.
	do("open a case", chromedp.Click(chromedp.CSS(`a[href="/cases/`+caseID(1)+`"]`)), chromedp.WaitVisible(chromedp.CSS("ol.steps")))
	portaltest.Screenshot(t, ctx, "05-case")

	// Journeys: the data path diagram.
	do("journeys", chromedp.Navigate(base+"/journeys"), chromedp.WaitVisible(chromedp.CSS(".cards")))
	do("open the data path", chromedp.Click(chromedp.CSS(`a[href="/journeys/sickness-benefit"]`)), chromedp.WaitVisible(chromedp.CSS("svg.datapath")))
	if title := text("svg.datapath title"); title != "Data path of Sickness benefit" {
		t.Errorf("svg title = %q", title)
	}
	if w := portaltest.Eval[float64](t, ctx, `document.querySelector('svg.datapath').getBoundingClientRect().width`); w < 600 {
		t.Errorf("diagram is %vpx wide", w)
	}
	portaltest.Screenshot(t, ctx, "06-datapath-desktop")

	// Consent: preview with another duration, grant, revoke.
	do("consent preview", chromedp.Navigate(base+"/consents/sickness-benefit/assess-work-capacity"), chromedp.WaitVisible(chromedp.CSS("#days")))
	do("ask for 45 days", chromedp.SetValue(chromedp.CSS("#days"), "45"), chromedp.Click(chromedp.CSS(`button[formmethod="get"]`)))
	// The new page may still be loading when its address changes: wait for its content.
	waitFor("preview for 45 days", `location.search.includes("days=45") && document.readyState === "complete" && !!document.querySelector("dl.summary")`)
	if got := text("dl.summary"); !strings.Contains(got, "28 April 2026") {
		t.Errorf("preview for 45 days does not show 28 April 2026: %q", got)
	}
	portaltest.Screenshot(t, ctx, "07-consent-preview")
	do("grant", chromedp.Click(chromedp.CSS(`form.form button:not([formmethod])`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if g := s.fake.last("GrantConsent"); g == nil || g.req.(*citizenv1.GrantConsentRequest).GetDays() != 45 {
		t.Fatalf("GrantConsent = %+v", g)
	}
	if !strings.Contains(text(".flash"), "Your consent has been given") {
		t.Errorf("flash = %q", text(".flash"))
	}
	do("revoke", chromedp.Click(chromedp.CSS(`form[action$="/revoke"] button`)))
	waitFor("revoked", `location.search.includes("done=revoked")`)
	if s.fake.count("RevokeConsent") != 1 {
		t.Error("RevokeConsent not called")
	}
	do("consents", chromedp.Navigate(base+"/consents"), chromedp.WaitVisible(chromedp.CSS("h1")))
	portaltest.Screenshot(t, ctx, "08-consents")

	// My data.
	do("my data", chromedp.Navigate(base+"/data"), chromedp.WaitVisible(chromedp.CSS(".cards")))
	portaltest.Screenshot(t, ctx, "09-data")
	do("a dataset", chromedp.Click(chromedp.CSS(`a[href="/data/population/person"]`)), chromedp.WaitVisible(chromedp.CSS("dl.record")))
	portaltest.Screenshot(t, ctx, "10-dataset")

	// A phone: nothing but the diagram (which scrolls in its own box) may be wider than the screen.
	portaltest.SetViewport(t, ctx, portaltest.Phone)
	for _, pg := range []struct{ name, path, top string }{
		{"11-timeline-phone", "/", "h1"},
		{"12-datapath-phone", "/journeys/sickness-benefit", "#diagram-h"},
		{"13-consent-phone", "/consents/sickness-benefit/assess-work-capacity", "#grant-h"},
		{"14-case-phone", "/cases/" + caseID(1), "h1"},
		{"15-dataset-phone", "/data/population/person", "dl.record"},
	} {
		do(pg.name, chromedp.Navigate(base+pg.path), chromedp.WaitVisible(chromedp.CSS("h1")))
		if over := portaltest.Eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`); over {
			t.Errorf("%s: the page scrolls sideways on a phone (%v > %v)", pg.path,
				portaltest.Eval[float64](t, ctx, `document.documentElement.scrollWidth`), portaltest.Eval[float64](t, ctx, `window.innerWidth`))
		}
		if strings.HasPrefix(pg.path, "/journeys/") {
			// The diagram is stacked for the phone: the wide one is hidden, the narrow one fits.
			if w := portaltest.Eval[float64](t, ctx, `document.querySelector("svg.datapath--wide").getBoundingClientRect().width`); w != 0 {
				t.Errorf("the wide diagram shows on a phone (%vpx)", w)
			}
			if w := portaltest.Eval[float64](t, ctx, `document.querySelector("svg.datapath--narrow").getBoundingClientRect().width`); w < 300 {
				t.Errorf("the stacked diagram is %vpx wide on a phone", w)
			}
			if over := portaltest.Eval[float64](t, ctx, `(d => d.scrollWidth - d.clientWidth)(document.querySelector(".diagram"))`); over > 0 {
				t.Errorf("the diagram scrolls sideways on a phone by %vpx", over)
			}
		}
		portaltest.Screenshot(t, ctx, pg.name)
		do("scroll", chromedp.ScrollIntoView(chromedp.CSS(pg.top)))
		portaltest.ScreenshotViewport(t, ctx, pg.name+"-top")
	}

	if errs := portaltest.ConsoleErrors(ctx); len(errs) > 0 {
		t.Errorf("browser errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestBrowserRefusals: every kind of refusal reads as its own plain sentence in English and Danish,
// on a desktop and a phone, in a real browser — never the broker's text for caseworkers, a field path
// or a reason code. Screenshots go to portaltest.ArtifactsDir.
func TestBrowserRefusals(t *testing.T) {
	s := newStack(t)
	ctx := portaltest.NewBrowser(t)
	var datasets []string
	for _, d := range testLabels().GetDatasets() {
		datasets = append(datasets, d.GetDataset())
	}
	for _, lang := range []string{"en", "da"} {
		// The sentences the portal words from each reason, with the labels the API gives.
		v := &view{Lang: lang, lab: labelSet{}}
		for _, d := range testLabels().GetDatasets() {
			dl := &datasetLabels{label: d.GetLabel(), fields: map[string]*citizenv1.FieldLabel{}, order: d.GetFields()}
			for _, f := range d.GetFields() {
				dl.fields[f.GetPath()] = f
			}
			v.lab[labelKey(d.GetAuthority().GetId(), d.GetDataset())] = dl
		}
		for _, vp := range []struct {
			name string
			v    portaltest.Viewport
		}{{"desktop", portaltest.Desktop}, {"phone", portaltest.Phone}} {
			portaltest.SetViewport(t, ctx, vp.v)
			portaltest.Do(t, ctx, "refusals", chromedp.Navigate(s.srv.URL+"/?page=refusals&lang="+lang), chromedp.WaitVisible(chromedp.CSS("#timeline")))
			seen := map[string]auditv1.RefusalReason{}
			for _, a := range refusalAccesses() {
				want := v.refusal(a)
				got := portaltest.Eval[string](t, ctx, fmt.Sprintf(`((document.getElementById(%q) || {querySelector: () => null}).querySelector(".entry__reason") || {}).textContent || ""`, a.GetId()))
				if got != want || got == "" {
					t.Errorf("%s %s: %v reads %q, want %q", lang, vp.name, a.GetRefusalReason(), got, want)
				}
				if other, dup := seen[got]; dup && a.GetRefusalReason() != auditv1.RefusalReason_REFUSAL_REASON_UNSPECIFIED && other != auditv1.RefusalReason_REFUSAL_REASON_UNSPECIFIED {
					t.Errorf("%s: %v and %v read the same: %q", lang, other, a.GetRefusalReason(), got)
				}
				seen[got] = a.GetRefusalReason()
			}
			body := portaltest.Eval[string](t, ctx, `document.body.innerText`)
			for _, leak := range portaltest.Leaks(body, datasets...) {
				t.Errorf("%s %s: the page shows %s", lang, vp.name, leak)
			}
			if strings.Contains(body, "is not released at step") {
				t.Errorf("%s %s: the broker's text for caseworkers is shown", lang, vp.name)
			}
			if over := portaltest.Eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`); over {
				t.Errorf("%s: the refusals scroll sideways on a phone", lang)
			}
			// The first screenful: a full-page shot of 20 entries is slow enough to time out on a busy machine.
			portaltest.ScreenshotViewport(t, ctx, "refusals-"+lang+"-"+vp.name)
		}
	}
}
