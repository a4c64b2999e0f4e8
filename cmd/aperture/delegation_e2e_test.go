package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// delegationAPI is the power-of-attorney API over the portal's TLS connection, as the citizen with
// the ID token the development OpenID provider mints for them.
func (ts *testStack) delegationAPI(citizen string) (citizenv1.CitizenDelegationServiceClient, context.Context) {
	ts.t.Helper()
	tok, err := ts.Portal.issuer.Mint(citizen, time.Now().Add(time.Hour))
	if err != nil {
		ts.t.Fatal(err)
	}
	return citizenv1.NewCitizenDelegationServiceClient(ts.Portal.conn), metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// TestDelegationEndToEnd: over the whole stack (real gRPC over TLS with OpenID tokens, the embedded
// NATS server), a citizen gives another power of attorney to see their cases for one journey; the
// holder sees that journey's case and no other, a third citizen nothing; each look is in the giver's
// log before it is answered, naming no one; after the giver revokes it the holder gets nothing and
// the log gets nothing more. Use is counted in aperture_delegation_actions_total. Journeys and
// citizens come from the policies and the population.
func TestDelegationEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen, o.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	})
	b := ts.Broker.Bundle()
	j, _ := plainReleaseStep(t, b)
	var other string
	for _, o := range b.Journeys() {
		if o.ID != j.ID && o.Steps[0].Covert == nil {
			other = o.ID
			break
		}
	}
	people := ts.Population.Featured()
	giver, holder, stranger := people[0].ID, people[1].ID, people[2].ID
	inScope := ts.open(j.Steps[0].Agency, j.ID, giver)
	if oj, ok := b.Journey(other); ok {
		ts.open(oj.Steps[0].Agency, other, giver)
	}
	delegateRecords := func() []*auditv1.AccessRecord {
		var out []*auditv1.AccessRecord
		for _, r := range ts.accessRecords(giver) {
			if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE {
				out = append(out, r)
			}
		}
		return out
	}

	gAPI, gctx := ts.delegationAPI(giver)
	g, err := gAPI.GrantDelegation(gctx, &citizenv1.GrantDelegationRequest{
		HolderCitizenId: holder, Journeys: []string{j.ID}, ExpiresAt: timestamppb.New(time.Now().Add(24 * time.Hour)),
		Scopes: []citizenv1.DelegationScope{citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := g.GetDelegation().GetId()

	hc, hctx := ts.citizenAPI(holder)
	lc, err := hc.ListCases(hctx, &citizenv1.ListCasesRequest{OnBehalfOf: id})
	if err != nil || len(lc.GetCases()) != 1 || lc.GetCases()[0].GetId() != inScope.GetId() {
		t.Fatalf("the holder's view of the giver's cases: %v, %v", lc, err)
	}
	recs := delegateRecords()
	if len(recs) != 1 || recs[0].GetDelegate().GetAction() != auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES || recs[0].GetDelegate().GetDelegationId() != id {
		t.Fatalf("the giver's log after one look: %v", recs)
	}
	holderPN := []byte(ts.Pseudonyms.Pseudonym(holder).Value)
	if raw, _ := proto.Marshal(recs[0]); bytes.Contains(raw, holderPN) || bytes.Contains(raw, []byte(holder)) {
		t.Fatal("the giver's log record names the holder")
	}
	// Outside scope, and a third citizen with the same id: nothing, and nothing logged.
	_, err = hc.ListAccesses(hctx, &citizenv1.ListAccessesRequest{OnBehalfOf: id})
	wantCode(t, err, codes.PermissionDenied)
	sc, sctx := ts.citizenAPI(stranger)
	_, err = sc.ListCases(sctx, &citizenv1.ListCasesRequest{OnBehalfOf: id})
	wantCode(t, err, codes.NotFound)
	if n := len(delegateRecords()); n != 1 {
		t.Fatalf("denied calls logged: %d delegate records, want 1", n)
	}

	// The giver sees it, in both languages, and ends it.
	gc, gcctx := ts.citizenAPI(giver)
	la, err := gc.ListAccesses(gcctx, &citizenv1.ListAccessesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seen *citizenv1.Access
	for _, a := range la.GetAccesses() {
		if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE {
			seen = a
		}
	}
	if seen == nil || !strings.Contains(seen.GetPurpose().GetEn(), "power of attorney") || !strings.Contains(seen.GetPurpose().GetDa(), "fuldmagt") {
		t.Fatalf("the giver's view of the look: %v", seen)
	}
	if _, err := gAPI.RevokeDelegation(gctx, &citizenv1.RevokeDelegationRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	_, err = hc.ListCases(hctx, &citizenv1.ListCasesRequest{OnBehalfOf: id})
	wantCode(t, err, codes.NotFound)
	if n := len(delegateRecords()); n != 1 {
		t.Fatalf("after revocation: %d delegate records, want 1", n)
	}

	for _, c := range []struct {
		action, outcome string
		want            float64
	}{{"view_cases", "allowed", 1}, {"view_cases", "denied", 2}, {"view_accesses", "denied", 1}, {"grant", "granted", 1}, {"revoke", "revoked", 1}} {
		if n, ok := scrape(t, ts.Metrics.Addr(), "aperture_delegation_actions_total", `action="`+c.action+`"`, `outcome="`+c.outcome+`"`); !ok || n != c.want {
			t.Errorf("aperture_delegation_actions_total{action=%q,outcome=%q} = %v (found %v), want %v", c.action, c.outcome, n, ok, c.want)
		}
	}
}

// TestPortalPowerOfAttorney is power of attorney in a real headless Chromium against the whole
// stack, in English and Danish: a citizen gives another power of attorney in the portal (and is told
// when they forget what it allows); the holder switches to acting for them, sees their cases under a
// banner with a reduced menu, and switches back; the giver's timeline says someone they gave power
// of attorney looked at their cases, naming no one; the giver ends it and the holder can no longer
// act. Journeys and citizens come from the policies and the population.
func TestPortalPowerOfAttorney(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	base := ts.Portal.base
	j, _ := plainReleaseStep(t, ts.Broker.Bundle())
	people := ts.Population.Featured()
	giver, holder := people[0], people[1]
	kase := ts.open(j.Steps[0].Agency, j.ID, giver.ID)

	br := ts.browser(t)
	ctx, do, text, signIn, signOut := br.ctx, br.do, br.text, br.signIn, br.signOut

	// The giver gives power of attorney for one journey.
	signIn(giver.ID)
	do("power of attorney page", chromedp.Navigate(base+"/delegations?lang=en"), chromedp.WaitVisible(chromedp.CSS("#grant-form")))
	until := time.Now().AddDate(0, 1, 0).Format("2006-01-02")
	do("give without saying what it allows", chromedp.SendKeys(chromedp.CSS("#holder"), holder.ID), chromedp.SetValue(chromedp.CSS("#expires"), until),
		chromedp.Click(chromedp.CSS(`#grant-form button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#grant-error")))
	if got := text("#grant-error"); !strings.Contains(got, "at least one") {
		t.Errorf("the error says %q", got)
	}
	do("give", chromedp.SetValue(chromedp.CSS("#holder"), holder.ID), chromedp.SetValue(chromedp.CSS("#expires"), until),
		chromedp.Click(chromedp.CSS(`input[name="scope_cases"]`)), chromedp.Click(chromedp.CSS(`input[name="journey"][value="`+j.ID+`"]`)),
		chromedp.Click(chromedp.CSS(`#grant-form button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#granted")))
	if got := text("#granted"); !strings.Contains(strings.ToLower(got), "active") || !strings.Contains(got, j.Title.EN) || !strings.Contains(got, "see their cases") || strings.Contains(got, holder.ID) {
		t.Errorf("the power of attorney as its giver sees it:\n%s", got)
	}
	portaltest.Screenshot(t, ctx, "delegation-01-given-en")
	signOut()

	// The holder acts for the giver, sees the case under the banner, and switches back.
	signIn(holder.ID)
	do("held", chromedp.Navigate(base+"/delegations?lang=en"), chromedp.WaitVisible(chromedp.CSS("#held")))
	do("act for them", chromedp.Click(chromedp.CSS(`#held li:not(.delegation--child) button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#acting-banner")))
	do("their cases", chromedp.Navigate(base+"/cases?lang=en"), chromedp.WaitVisible(chromedp.CSS("#acting-banner")))
	if body := text("main"); !strings.Contains(body, j.Title.EN) || !strings.Contains(body, "You are acting for someone who gave you power of attorney") {
		t.Errorf("the holder's view of the giver's cases:\n%s", body)
	}
	if nav := text(".site-nav"); strings.Contains(nav, "My data") || strings.Contains(nav, "Switch off") {
		t.Errorf("while acting, the menu offers the holder's own pages:\n%s", nav)
	}
	portaltest.Screenshot(t, ctx, "delegation-02-acting-en")
	do("Danish banner", chromedp.Navigate(base+"/cases?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #acting-banner`)))
	if got := text("#acting-banner"); !strings.Contains(got, "Du handler for en, der har givet dig fuldmagt") {
		t.Errorf("Danish banner: %q", got)
	}
	portaltest.Screenshot(t, ctx, "delegation-03-acting-da")
	do("act for myself", chromedp.Click(chromedp.CSS(`#acting-banner button`)), chromedp.WaitVisible(chromedp.CSS("#held")))
	do("my own cases", chromedp.Navigate(base+"/cases?lang=en"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if portaltest.Eval[bool](t, ctx, `!!document.getElementById("acting-banner")`) || strings.Contains(text("main"), kase.GetId()) {
		t.Error("after switching back the holder still sees the giver's cases")
	}
	// Act again; the giver ends it meanwhile (in their app): the holder's next page sends them back
	// to acting for themselves.
	do("held again", chromedp.Navigate(base+"/delegations?lang=en"), chromedp.WaitVisible(chromedp.CSS("#held")))
	do("act again", chromedp.Click(chromedp.CSS(`#held li:not(.delegation--child) button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#acting-banner")))
	gAPI, gctx := ts.delegationAPI(giver.ID)
	given, err := gAPI.ListDelegations(gctx, &citizenv1.ListDelegationsRequest{})
	if err != nil || len(given.GetGranted()) != 1 {
		t.Fatalf("the giver's delegations: %v, %v", given, err)
	}
	if _, err := gAPI.RevokeDelegation(gctx, &citizenv1.RevokeDelegationRequest{Id: given.GetGranted()[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	do("their cases, once more", chromedp.Navigate(base+"/cases?lang=en"), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(".flash"); !strings.Contains(got, "has ended") || portaltest.Eval[bool](t, ctx, `!!document.getElementById("acting-banner")`) {
		t.Errorf("after the giver ended it, the holder sees %q", got)
	}
	// (A holder who is a parent still holds their children, from the custody register.)
	if portaltest.Eval[bool](t, ctx, `!!document.querySelector("#held li:not(.delegation--child)")`) {
		t.Error("the holder still holds the ended power of attorney")
	}
	signOut()

	// The giver reads the look in their timeline, in both languages, and ends the power of attorney.
	signIn(giver.ID)
	var look string
	for _, r := range ts.accessRecords(giver.ID) {
		if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE {
			look = r.GetId()
		}
	}
	if look == "" {
		t.Fatal("the holder's look is not in the giver's log")
	}
	do("timeline", chromedp.Navigate(base+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("#"+look)))
	if got := text("#" + look); !strings.Contains(got, "Someone you gave power of attorney looked at") || strings.Contains(got, holder.ID) || strings.Contains(got, "Question this access") {
		t.Errorf("the look in the giver's timeline:\n%s", got)
	}
	do("Danish timeline", chromedp.Navigate(base+"/?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #`+look)))
	if got := text("#" + look); !strings.Contains(got, "En, du har givet fuldmagt") || strings.Contains(got, "power of attorney") {
		t.Errorf("the look in the Danish timeline:\n%s", got)
	}
	portaltest.Screenshot(t, ctx, "delegation-04-look-da")
	// A second power of attorney, ended with the portal's button.
	if _, err := gAPI.GrantDelegation(gctx, &citizenv1.GrantDelegationRequest{
		HolderCitizenId: holder.ID, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
		Scopes: []citizenv1.DelegationScope{citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CONSENTS},
	}); err != nil {
		t.Fatal(err)
	}
	do("end it", chromedp.Navigate(base+"/delegations?lang=da"), chromedp.WaitVisible(chromedp.CSS("#granted form button")),
		chromedp.Click(chromedp.CSS(`#granted form button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text("#granted"); strings.Count(strings.ToLower(got), "afsluttet af dig") != 2 || portaltest.Eval[bool](t, ctx, `!!document.querySelector("#granted form button")`) {
		t.Errorf("the ended powers of attorney in Danish:\n%s", got)
	}
	portaltest.Screenshot(t, ctx, "delegation-05-ended-da")

	// No machine words and no missing translations on the pages, in either language.
	for _, lang := range []string{"en", "da"} {
		do(lang, chromedp.Navigate(base+"/delegations?lang="+lang), chromedp.WaitVisible(chromedp.CSS("main h1")))
		body := portaltest.Eval[string](t, ctx, `document.body.innerText`)
		if strings.Contains(body, "⟦") || strings.Contains(body, "del_") || strings.Contains(body, "DELEGATION_") {
			t.Errorf("%s: machine words or a missing translation:\n%s", lang, body)
		}
	}
}

// TestPortalConsentOnBehalf is consent given for someone else in a real headless Chromium against the
// whole stack, in English and Danish: a citizen gives another power of attorney to give consent for
// one journey, and a second one to see their cases. Acting with the first, the holder's menu offers
// consents only; they preview what a consent would release (the page says, with no id and no name,
// that they give it on behalf of the person who gave them power of attorney), give it, and the
// consent is the giver's, logged in the giver's log as given by a delegate, as the giver's timeline
// says in both languages. A page the power of attorney does not cover says so (403, nothing asked of
// the API on the giver's behalf); a page that is only ever one's own offers to act for oneself again
// and opens it. Acting with the second, the menu offers cases only. Journeys and citizens come from
// the policies and the population.
func TestPortalConsentOnBehalf(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	base := ts.Portal.base
	j, cs := consentStep(t, ts.Broker.Bundle())
	people := ts.Population.Featured()
	giver, holder := people[0], people[1]

	gAPI, gctx := ts.delegationAPI(giver.ID)
	grant := func(scope citizenv1.DelegationScope, journeys ...string) string {
		t.Helper()
		g, err := gAPI.GrantDelegation(gctx, &citizenv1.GrantDelegationRequest{
			HolderCitizenId: holder.ID, Journeys: journeys, ExpiresAt: timestamppb.New(time.Now().Add(24 * time.Hour)),
			Scopes: []citizenv1.DelegationScope{scope},
		})
		if err != nil {
			t.Fatal(err)
		}
		return g.GetDelegation().GetId()
	}
	consentFor := grant(citizenv1.DelegationScope_DELEGATION_SCOPE_GRANT_CONSENT, j.ID)
	casesOnly := grant(citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES)

	br := ts.browser(t)
	ctx, do, text := br.ctx, br.do, br.text
	status := func(path string) int {
		t.Helper()
		return portaltest.Eval[int](t, ctx, `(() => { const x = new XMLHttpRequest(); x.open("GET", `+jsString(path)+`, false); x.send(); return x.status })()`)
	}
	signIn := br.signIn
	actWith := func(id string) {
		t.Helper()
		do("held", chromedp.Navigate(base+"/delegations?lang=en"), chromedp.WaitVisible(chromedp.CSS("#held-"+id)))
		do("act", chromedp.Click(chromedp.CSS(`#held-`+id+` button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#acting-banner")))
	}
	noMachineWords := func(where string, people ...string) {
		t.Helper()
		// The page itself: the header names whoever is signed in, as on every page.
		body := text("main")
		for _, bad := range append([]string{"⟦", "del_"}, people...) {
			if bad != "" && strings.Contains(body, bad) {
				t.Errorf("%s shows %q:\n%s", where, bad, body)
			}
		}
	}

	signIn(holder.ID)
	actWith(consentFor)
	// The menu offers what the power of attorney covers: consents, and the power-of-attorney page.
	if nav := text(".site-nav"); !strings.Contains(nav, "Consents") || strings.Contains(nav, "Who has seen") ||
		strings.Contains(nav, "My cases") || strings.Contains(nav, "My data") || strings.Contains(nav, "Journeys") {
		t.Errorf("the menu while acting with a power of attorney to give consent:\n%s", nav)
	}
	do("their consents", chromedp.Navigate(base+"/consents?lang=en"), chromedp.WaitVisible(chromedp.CSS("#consent-steps")))
	if got := text("#consent-steps"); !strings.Contains(got, j.Title.EN) {
		t.Errorf("the steps the holder may consent to for the giver:\n%s", got)
	}
	preview := "/consents/" + j.ID + "/" + cs.ID
	do("preview", chromedp.Navigate(base+preview+"?lang=en"), chromedp.WaitVisible(chromedp.CSS("#acting-consent")))
	if got := text("#acting-consent"); !strings.Contains(got, "You are giving consent on behalf of the person who gave you power of attorney") {
		t.Errorf("the English preview says %q", got)
	}
	noMachineWords("the English preview", holder.ID, giver.ID, holder.Name, giver.Name)
	portaltest.Screenshot(t, ctx, "delegation-consent-01-preview-en")
	do("Danish preview", chromedp.Navigate(base+preview+"?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #acting-consent`)))
	if got := text("#acting-consent"); !strings.Contains(got, "Du giver samtykke på vegne af den, der har givet dig fuldmagt") {
		t.Errorf("the Danish preview says %q", got)
	}
	noMachineWords("the Danish preview", holder.ID, giver.ID, holder.Name, giver.Name)
	do("give it for them", chromedp.Click(chromedp.CSS(`form[action$="/grant"] button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text(".flash"); !strings.Contains(got, "på deres vegne") {
		t.Errorf("after giving consent for them, the flash says %q", got)
	}
	if strings.Contains(text("main"), "Træk dit samtykke tilbage") || portaltest.Eval[bool](t, ctx, `!!document.querySelector('form[action$="/revoke"]')`) {
		t.Error("the holder is offered to withdraw the giver's consent, which no power of attorney allows")
	}
	portaltest.Screenshot(t, ctx, "delegation-consent-02-given-da")

	// The consent is the giver's, not the holder's.
	gc, gcctx := ts.citizenAPI(giver.ID)
	if own, err := gc.ListConsents(gcctx, &citizenv1.ListConsentsRequest{}); err != nil || len(own.GetConsents()) != 1 || !own.GetConsents()[0].GetValid() ||
		own.GetConsents()[0].GetStep().GetId() != cs.ID {
		t.Fatalf("the giver's consents: %v, %v", own, err)
	}
	hc, hctx := ts.citizenAPI(holder.ID)
	if own, err := hc.ListConsents(hctx, &citizenv1.ListConsentsRequest{}); err != nil || len(own.GetConsents()) != 0 {
		t.Fatalf("the holder's own consents: %v, %v", own, err)
	}

	// Outside the scope: a clear page, and nothing asked on the giver's behalf.
	before := len(ts.accessRecords(giver.ID))
	for _, path := range []string{"/", "/cases"} {
		if code := status(path); code != 403 {
			t.Errorf("GET %s while acting with a power of attorney to give consent: %d, want 403", path, code)
		}
	}
	do("cases, not covered", chromedp.Navigate(base+"/cases?lang=en"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if got := text("main h1"); got != "Your power of attorney does not cover this" {
		t.Errorf("a page outside the scope says %q", got)
	}
	if after := len(ts.accessRecords(giver.ID)); after != before {
		t.Errorf("pages outside the scope wrote %d records to the giver's log", after-before)
	}
	// A page that is only ever one's own says so, and opens after acting for oneself again.
	do("my data while acting", chromedp.Navigate(base+"/data?lang=en"), chromedp.WaitVisible(chromedp.CSS("#act-for-myself")))
	if got := text("main"); !strings.Contains(got, "This page is only about you") {
		t.Errorf("my data while acting:\n%s", got)
	}
	do("act for myself and open it", chromedp.Click(chromedp.CSS("#act-for-myself button")), chromedp.WaitNotPresent(chromedp.CSS("#act-for-myself")),
		chromedp.WaitVisible(chromedp.CSS("main h1")))
	if portaltest.Eval[bool](t, ctx, `!!document.getElementById("acting-banner")`) || !strings.HasSuffix(portaltest.Eval[string](t, ctx, `location.pathname`), "/data") {
		t.Errorf("after acting for myself, %s with a banner: %v", portaltest.Eval[string](t, ctx, `location.pathname`), portaltest.Eval[bool](t, ctx, `!!document.getElementById("acting-banner")`))
	}

	// With a power of attorney to see cases only, the menu offers cases only, in both languages.
	actWith(casesOnly)
	for _, c := range []struct{ lang, cases, timeline, consents string }{
		{"en", "My cases", "Who has seen", "Consents"},
		{"da", "Mine sager", "Hvem har set", "Samtykker"},
	} {
		do("cases menu "+c.lang, chromedp.Navigate(base+"/cases?lang="+c.lang), chromedp.WaitVisible(chromedp.CSS(`html[lang="`+c.lang+`"] #acting-banner`)))
		if nav := text(".site-nav"); !strings.Contains(nav, c.cases) || strings.Contains(nav, c.timeline) || strings.Contains(nav, c.consents) {
			t.Errorf("%s: the menu while acting with a power of attorney to see cases:\n%s", c.lang, nav)
		}
	}
	portaltest.Screenshot(t, ctx, "delegation-consent-03-cases-menu-da")
	do("consents, not covered (da)", chromedp.Navigate(base+"/consents?lang=da"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if got := text("main h1"); got != "Din fuldmagt dækker ikke dette" {
		t.Errorf("a page outside the scope in Danish says %q", got)
	}

	// The giver's log: the previews and the consent, each marked as a delegate's, naming no one.
	var given string
	previews := 0
	for _, r := range ts.accessRecords(giver.ID) {
		switch {
		case r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED && r.GetDelegate().GetAction() == auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT:
			given = r.GetId()
		case r.GetDelegate().GetAction() == auditv1.DelegateAction_DELEGATE_ACTION_PREVIEW_CONSENT && r.GetStep() == cs.ID:
			previews++
		}
	}
	if given == "" || previews == 0 {
		t.Fatalf("the giver's log: consent %q, %d previews", given, previews)
	}
	do("sign out", chromedp.Click(chromedp.CSS(`form.signout button`)), chromedp.WaitNotPresent(chromedp.CSS(`form.signout`)))
	signIn(giver.ID)
	for _, c := range []struct{ lang, who string }{{"en", "Someone you gave power of attorney"}, {"da", "En, du har givet fuldmagt"}} {
		do("giver's timeline "+c.lang, chromedp.Navigate(base+"/?lang="+c.lang), chromedp.WaitVisible(chromedp.CSS(`html[lang="`+c.lang+`"] #`+given)))
		if got := text("#" + given); !strings.Contains(got, c.who) || !strings.Contains(got, cs.Title.EN) && !strings.Contains(got, cs.Title.DA) {
			t.Errorf("%s: the consent given for the giver, in their timeline:\n%s", c.lang, got)
		}
		noMachineWords("the giver's timeline", holder.ID, holder.Name)
	}
	portaltest.Screenshot(t, ctx, "delegation-consent-04-giver-da")
}
