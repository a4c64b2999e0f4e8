package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// TestPortalWords walks a journey with a covert step to its end through the broker's gRPC API — every
// dataset of every step released, a field outside a step asked for (refused), a release after the case
// closed (refused) — and then reads every portal page in a real headless Chromium, in English and
// Danish, on a desktop and a 390 px phone. No page shows a field path, dataset id, enum constant or ISO
// time; a phone never scrolls sideways; the closed case shows every step done and no call to action;
// the covert step's accesses are shown once the case closed; a fact that came out false reads as a
// check with its question; every refusal has a sentence. The journey, its steps, datasets and facts
// are read from the policies. Screenshots are kept under portaltest.ArtifactsDir
// ($APERTURE_ARTIFACTS, default $TMPDIR/aperture-artifacts/TestPortalWords).
func TestPortalWords(t *testing.T) {
	bundle, err := loadPolicyTree(os.DirFS(filepath.Join("..", "..", "policies")), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	var j *policy.Journey
	for _, cand := range bundle.Journeys() {
		if j == nil && slices.ContainsFunc(cand.Steps, func(s *policy.Step) bool { return s.Covert != nil }) {
			j = cand
		}
	}
	if j == nil {
		t.Skip("no journey has a covert step")
	}
	var datasetIDs []string
	for _, a := range bundle.Registry.Authorities {
		datasetIDs = append(datasetIDs, a.Datasets...)
	}

	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0"
	})
	citizen := ts.citizenFor(j.ID)
	c := ts.open(j.Steps[0].Agency, j.ID, citizen)

	// boolFact is a released bool fact: where its access is listed, its description, its answer, and
	// whether the policy lets the citizen see the answer.
	type boolFact struct {
		journey, access, en, da string
		answer, shown           bool
	}
	var (
		covertAccesses []string
		boolFacts      []boolFact
		refused        []string
	)
	for _, st := range j.Steps {
		ag := ts.agency(st.Agency)
		if st.Consent != nil {
			ts.grantConsent(citizen, j.ID, st.ID)
		}
		for _, r := range st.Rules {
			res, err := ag.Release(cw("cw-words-1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: r.Authority, Dataset: r.Dataset})
			if err != nil {
				t.Logf("%s %s.%s: %v", st.ID, r.Authority, r.Dataset, err)
				continue
			}
			if st.Covert != nil {
				covertAccesses = append(covertAccesses, res.GetAccessId())
			}
			for _, d := range res.GetDerived() {
				if bv, ok := d.GetValue().GetKind().(*structpb.Value_BoolValue); ok {
					for _, pd := range r.Derived {
						if pd.Name == d.GetName() {
							boolFacts = append(boolFacts, boolFact{j.ID, res.GetAccessId(), pd.Description.EN, pd.Description.DA, bv.BoolValue, pd.ShowsAnswer()})
						}
					}
				}
			}
			// A field the step does not allow: refused, with a reason the citizen can read.
			if len(refused) == 0 && r.Message != nil && st.Covert == nil {
				for _, leaf := range fieldmask.Leaves(r.Message) {
					if fieldmask.Covers(r.Fields, leaf) {
						continue
					}
					_, err := ag.Release(cw("cw-words-1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: r.Authority, Dataset: r.Dataset, Fields: []string{leaf}})
					if err == nil {
						t.Fatalf("%s: %s.%s %s released although the step does not allow it", st.ID, r.Authority, r.Dataset, leaf)
					}
					refused = append(refused, leaf)
					break
				}
			}
		}
		if _, err := ag.CompleteStep(cw("cw-words-1"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: st.ID}); err != nil {
			t.Fatalf("complete %s: %v", st.ID, err)
		}
	}
	last := j.Steps[len(j.Steps)-1]
	got, err := ts.agency(last.Agency).GetCase(cw("cw-words-1"), &brokerv1.GetCaseRequest{CaseId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetCase().GetState() != brokerv1.CaseState_CASE_STATE_CLOSED {
		t.Fatalf("case state after every step: %v", got.GetCase().GetState())
	}
	if r := last.Rules; len(r) > 0 {
		if _, err := ts.agency(last.Agency).Release(cw("cw-words-1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: r[0].Authority, Dataset: r[0].Dataset}); err == nil {
			t.Fatal("a closed case released data")
		}
	}
	if len(covertAccesses) == 0 {
		t.Fatalf("the covert step of %s released nothing: the reveal is not tested", j.ID)
	}
	// A false fact: the answers come from the citizen's data, so walk the other journeys for the same
	// citizen until a bool fact comes out false.
	for _, oj := range bundle.Journeys() {
		if oj.ID == j.ID || slices.ContainsFunc(boolFacts, func(f boolFact) bool { return !f.answer }) {
			continue
		}
		oc := ts.open(oj.Steps[0].Agency, oj.ID, citizen)
	walk:
		for _, st := range oj.Steps {
			ag := ts.agency(st.Agency)
			if st.Consent != nil {
				ts.grantConsent(citizen, oj.ID, st.ID)
			}
			for _, r := range st.Rules {
				if len(r.Derived) == 0 {
					continue
				}
				res, err := ag.Release(cw("cw-words-1"), &brokerv1.ReleaseRequest{CaseId: oc.GetId(), Authority: r.Authority, Dataset: r.Dataset})
				if err != nil {
					t.Logf("%s %s %s.%s: %v", oj.ID, st.ID, r.Authority, r.Dataset, err)
					continue
				}
				for _, d := range res.GetDerived() {
					bv, ok := d.GetValue().GetKind().(*structpb.Value_BoolValue)
					for _, pd := range r.Derived {
						if ok && pd.Name == d.GetName() {
							boolFacts = append(boolFacts, boolFact{oj.ID, res.GetAccessId(), pd.Description.EN, pd.Description.DA, bv.BoolValue, pd.ShowsAnswer()})
						}
					}
				}
			}
			if slices.ContainsFunc(boolFacts, func(f boolFact) bool { return !f.answer && f.shown }) {
				break walk
			}
			if _, err := ag.CompleteStep(cw("cw-words-1"), &brokerv1.CompleteStepRequest{CaseId: oc.GetId(), Step: st.ID}); err != nil {
				t.Logf("%s: complete %s: %v", oj.ID, st.ID, err)
				break walk
			}
		}
	}
	if !slices.ContainsFunc(boolFacts, func(f boolFact) bool { return !f.answer && f.shown }) {
		t.Fatalf("no journey released a false bool fact with a shown answer about citizen %s: a false fact is not tested", citizen)
	}
	falseFacts := 0
	for _, f := range boolFacts {
		if !f.answer {
			falseFacts++
		}
	}
	if !slices.ContainsFunc(boolFacts, func(f boolFact) bool { return f.shown }) {
		t.Fatalf("%s released no bool fact whose answer the citizen may see: the answers are not tested", j.ID)
	}
	t.Logf("%s: %d covert accesses, %d bool facts (%d false), a refused field: %v", j.ID, len(covertAccesses), len(boolFacts), falseFacts, refused)
	// The register check made before the case was opened: it reads as a check of the register, by name.
	var checkID string
	var register *policy.Authority
	if reg := bundle.Registry.CitizenRegister; reg != nil {
		register, _ = bundle.Registry.Authority(reg.Authority)
		for _, r := range ts.accessRecords(citizen) {
			if ts.isRegisterCheck(r) && r.GetCaseId() == c.GetId() {
				checkID = r.GetId()
			}
		}
		if checkID == "" || register == nil {
			t.Fatalf("no register check of %s.%s for case %s in the citizen's log", reg.Authority, reg.Dataset, c.GetId())
		}
	}

	ctx := portaltest.NewBrowser(t)
	base := ts.Portal.base
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		portaltest.Do(t, ctx, what, steps...)
	}
	portaltest.SetViewport(t, ctx, portaltest.Desktop)
	do("open the portal", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)))
	do("sign in", chromedp.Click(chromedp.CSS(`input[value="`+citizen+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))

	pages := []string{"/?journey=" + j.ID, "/cases", "/cases/" + c.GetId(), "/journeys", "/consents", "/data"}
	for _, jj := range bundle.Journeys() {
		pages = append(pages, "/journeys/"+jj.ID)
		for _, st := range jj.Steps {
			if st.Consent != nil {
				pages = append(pages, "/consents/"+jj.ID+"/"+st.ID)
			}
		}
	}
	for _, a := range bundle.Registry.Authorities {
		for _, d := range a.Datasets {
			pages = append(pages, "/data/"+a.ID+"/"+d)
		}
	}
	shot := 0
	for _, lang := range []string{"en", "da"} {
		for _, vp := range []struct {
			name string
			v    portaltest.Viewport
		}{{"desktop", portaltest.Desktop}, {"phone", portaltest.Phone}} {
			portaltest.SetViewport(t, ctx, vp.v)
			for _, pg := range pages {
				sep := "?"
				if strings.Contains(pg, "?") {
					sep = "&"
				}
				do(lang+" "+pg, chromedp.Navigate(base+pg+sep+"lang="+lang), chromedp.WaitVisible(chromedp.CSS("main h1")))
				where := fmt.Sprintf("%s %s %s", lang, vp.name, pg)
				text := portaltest.Eval[string](t, ctx, `document.body.innerText`)
				for _, leak := range portaltest.Leaks(text, datasetIDs...) {
					t.Errorf("%s: shows %s", where, leak)
				}
				if strings.Contains(text, "⟦") {
					t.Errorf("%s: a message has no translation", where)
				}
				if w := portaltest.Eval[int](t, ctx, `document.documentElement.scrollWidth - window.innerWidth`); w > 1 {
					t.Errorf("%s: the page scrolls sideways by %d px", where, w)
				}
				// Every piece of diagram text stays inside the diagram.
				if n := portaltest.Eval[int](t, ctx, `(() => { let n = 0; for (const svg of document.querySelectorAll("svg.datapath")) {
					if (svg.getBoundingClientRect().width === 0) continue;
					const vb = svg.viewBox.baseVal;
					for (const tx of svg.querySelectorAll("text")) { const b = tx.getBBox(); if (b.x < 0 || b.x + b.width > vb.width + 0.5) n++; } }
					return n; })()`); n > 0 {
					t.Errorf("%s: %d lines of the data path diagram run out of it", where, n)
				}
				shot++
				if vp.name == "phone" {
					portaltest.ScreenshotViewport(t, ctx, fmt.Sprintf("%02d-%s-%s-%s", shot, lang, vp.name, pg))
				} else {
					portaltest.Screenshot(t, ctx, fmt.Sprintf("%02d-%s-%s-%s", shot, lang, vp.name, pg))
				}
			}

			// The closed case: every step done, no call to action.
			do("case "+lang, chromedp.Navigate(base+"/cases/"+c.GetId()+"?lang="+lang), chromedp.WaitVisible(chromedp.CSS("ol.steps")))
			states := portaltest.Eval[[]string](t, ctx, `[...document.querySelectorAll("ol.steps > li")].map(li => li.className)`)
			if len(states) != len(j.Steps) {
				t.Errorf("%s: the case shows %d steps, want %d", lang, len(states), len(j.Steps))
			}
			for i, cls := range states {
				if !strings.Contains(cls, "steps__item--done") {
					t.Errorf("%s: step %d of the closed case is %q, want done", lang, i+1, cls)
				}
			}
			if n := portaltest.Eval[int](t, ctx, `document.querySelectorAll("main .consent-line, main form").length`); n > 0 {
				t.Errorf("%s: the closed case offers %d calls to action", lang, n)
			}

			// The timeline of the journey: the covert accesses are shown now, false facts read as
			// checks, refusals have a sentence.
			do("timeline "+lang, chromedp.Navigate(base+"/?journey="+j.ID+"&lang="+lang), chromedp.WaitVisible(chromedp.CSS("#timeline")))
			for _, id := range covertAccesses {
				if !portaltest.Eval[bool](t, ctx, fmt.Sprintf(`!!document.getElementById(%q)`, id)) {
					t.Errorf("%s: the covert access %s is not shown after the case closed", lang, id)
				}
			}
			if checkID != "" {
				entry := portaltest.Eval[string](t, ctx, fmt.Sprintf(`(document.getElementById(%q) || {}).innerText || ""`, checkID))
				did, name, title, why, stepWhy := "checked the register", register.Name.EN, j.Title.EN, "So that a case is only opened", j.Steps[0].Purpose.EN
				if lang == "da" {
					did, name, title, why, stepWhy = "tjekkede registret", register.Name.DA, j.Title.DA, "Så en sag kun bliver oprettet", j.Steps[0].Purpose.DA
				}
				if !strings.Contains(entry, did) || !strings.Contains(entry, name) || !strings.Contains(entry, title) ||
					strings.Contains(entry, register.ID+".") || strings.Contains(entry, "case_") {
					t.Errorf("%s: the register check does not read as a check of %q for %q:\n%s", lang, name, title, entry)
				}
				// Why: the check itself, not the purpose of the step it came before.
				if !strings.Contains(entry, why) || (stepWhy != "" && strings.Contains(entry, stepWhy)) {
					t.Errorf("%s: the register check does not say why it was made (%q), or gives the first step's purpose:\n%s", lang, why, entry)
				}
			}
			reasons := portaltest.Eval[[]string](t, ctx, `[...document.querySelectorAll(".entry--refused")].map(e => (e.querySelector(".entry__reason") || {}).innerText || "")`)
			if len(reasons) < 2 {
				t.Errorf("%s: %d refusals in the timeline, want the refused field and the closed case", lang, len(reasons))
			}
			for _, r := range reasons {
				if !strings.HasSuffix(strings.TrimSpace(r), ".") || strings.Contains(r, `"`) || strings.Contains(r, "case_") {
					t.Errorf("%s: refusal reason %q is not a sentence for the citizen", lang, r)
				}
			}
			// A fact reads as a check with its answer where the policy shows it ("…: no"), and a
			// false one never as a statement about the citizen.
			for _, f := range boolFacts {
				do("facts "+f.journey+" "+lang, chromedp.Navigate(base+"/?journey="+f.journey+"&lang="+lang), chromedp.WaitVisible(chromedp.CSS("#timeline")))
				entry := portaltest.Eval[string](t, ctx, fmt.Sprintf(`(document.getElementById(%q) || {}).innerText || ""`, f.access))
				desc, check, yes, no := f.en, "checked whether", "yes", "no"
				if lang == "da" {
					desc, check, yes, no = f.da, "tjekkede, om", "ja", "nej"
				}
				want := lowerFirstRune(strings.TrimSuffix(desc, "."))
				answer, other := no, yes
				if f.answer {
					answer, other = yes, no
				}
				switch {
				case !strings.Contains(entry, want) || !strings.Contains(entry, check):
					t.Errorf("%s: a fact does not read as a check %q (%q):\n%s", lang, check, want, entry)
				case f.shown && !strings.Contains(entry, want+": "+answer):
					t.Errorf("%s: the fact %q does not read with its answer %q:\n%s", lang, want, answer, entry)
				case strings.Contains(entry, want+": "+other) || !f.shown && strings.Contains(entry, want+": "+answer):
					t.Errorf("%s: the fact %q reads with an answer it must not show (shown by policy: %v):\n%s", lang, want, f.shown, entry)
				}
			}
		}
	}
	if errs := portaltest.ConsoleErrors(ctx); len(errs) > 0 {
		t.Errorf("browser errors: %v", errs)
	}
}

func lowerFirstRune(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	r2, _ := utf8.DecodeRuneInString(s[n:])
	if n == 0 || unicode.IsUpper(r2) {
		return s
	}
	return string(unicode.ToLower(r)) + s[n:]
}
