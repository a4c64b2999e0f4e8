package citizen_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

const day = 24 * time.Hour

// TestUnauthenticated: every call, unary or stream, without a usable token is refused with
// UNAUTHENTICATED, and the answer never repeats the token.
func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	authority, dataset := someDataset(t, e.b.Bundle())
	bearer := func(vals ...string) context.Context {
		ctx := context.Background()
		for _, v := range vals {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
		}
		return ctx
	}
	cases := []struct {
		name string
		ctx  context.Context
	}{
		{"no token", context.Background()},
		{"empty bearer", bearer("Bearer ")},
		{"other scheme", bearer("Basic " + tokAnna)},
		{"no scheme", bearer(tokAnna)},
		{"two tokens", bearer("Bearer "+tokAnna, "Bearer "+tokBo)},
		{"unknown token", bearer("Bearer not-a-token-5512")},
		{"expired token", bearer("Bearer " + tokExpired)},
		{"token with a space", bearer("Bearer " + tokAnna + " x")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := map[string]func() error{
				"ListAccesses": func() error { _, err := c.ListAccesses(tc.ctx, &citizenv1.ListAccessesRequest{}); return err },
				"ListCases":    func() error { _, err := c.ListCases(tc.ctx, &citizenv1.ListCasesRequest{}); return err },
				"ListJourneys": func() error { _, err := c.ListJourneys(tc.ctx, &citizenv1.ListJourneysRequest{}); return err },
				"GetMyData": func() error {
					_, err := c.GetMyData(tc.ctx, &citizenv1.GetMyDataRequest{Authority: authority, Dataset: dataset})
					return err
				},
				"ListDelegations": func() error {
					_, err := e.delegations().ListDelegations(tc.ctx, &citizenv1.ListDelegationsRequest{})
					return err
				},
				"GrantDelegation": func() error {
					_, err := e.delegations().GrantDelegation(tc.ctx, &citizenv1.GrantDelegationRequest{HolderCitizenId: bo})
					return err
				},
				"ListCases on someone's behalf": func() error {
					_, err := c.ListCases(tc.ctx, &citizenv1.ListCasesRequest{OnBehalfOf: "del_01jd3x0m6k9w2e5r7t8y4b1c0a"})
					return err
				},
				// Invalid input too: authentication comes first and says nothing about the request.
				"GetCase bad id": func() error { _, err := c.GetCase(tc.ctx, &citizenv1.GetCaseRequest{CaseId: "x"}); return err },
				"WatchAccesses": func() error {
					ctx, cancel := context.WithTimeout(tc.ctx, 5*time.Second)
					defer cancel()
					s, err := c.WatchAccesses(ctx, &citizenv1.WatchAccessesRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
			}
			for name, call := range calls {
				err := call()
				wantCode(t, err, codes.Unauthenticated)
				for _, secret := range []string{tokAnna, tokBo, tokExpired, "not-a-token-5512", anna} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("%s: the error %q repeats %q", name, err, secret)
					}
				}
			}
		})
	}
	// A valid token works on the same connection.
	if _, err := c.ListJourneys(as(tokAnna), &citizenv1.ListJourneysRequest{}); err != nil {
		t.Fatal(err)
	}
	// The refusals were logged (without the tokens or ids: newEnv checks every line at the end).
	if !strings.Contains(e.logs.String(), "citizen token refused") {
		t.Fatal("refused tokens were not logged at all; the log check proves nothing")
	}
}

// TestJourneysAndDataPath: the policies as the citizen reads them, before any case exists.
func TestJourneysAndDataPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	js, err := c.ListJourneys(as(tokAnna), &citizenv1.ListJourneysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := e.b.Bundle()
	if len(js.GetJourneys()) != len(bundle.Journeys()) {
		t.Fatalf("%d journeys, want %d", len(js.GetJourneys()), len(bundle.Journeys()))
	}
	for _, j := range js.GetJourneys() {
		if j.GetJourney().GetTitle().GetEn() == "" || j.GetJourney().GetTitle().GetDa() == "" || j.GetSteps() == 0 || j.GetDescription().GetEn() == "" {
			t.Errorf("journey summary %v", j)
		}
	}

	// Every journey's data path says what the policies say, step by step; any citizen may read any.
	var facts, consents, coverts int
	for i, j := range bundle.Journeys() {
		dp, err := c.GetDataPath(as([]string{tokAnna, tokBo}[i%2]), &citizenv1.GetDataPathRequest{Journey: j.ID})
		if err != nil {
			t.Fatal(err)
		}
		if dp.GetPolicyVersion() != bundle.Version || len(dp.GetSteps()) != len(j.Steps) {
			t.Fatalf("data path of %s: version %q, %d steps, want %q and %d", j.ID, dp.GetPolicyVersion(), len(dp.GetSteps()), bundle.Version, len(j.Steps))
		}
		for k, st := range j.Steps {
			got := dp.GetSteps()[k]
			if got.GetStep().GetNumber() != int32(k+1) || got.GetStep().GetId() != st.ID || got.GetAgency().GetId() != st.Agency ||
				got.GetAgency().GetName().GetEn() == "" || got.GetLegalBasis() != st.LegalBasis || got.GetPurpose().GetDa() == "" {
				t.Errorf("%s step %d: %v", j.ID, k+1, got)
			}
			facts += wantReleases(t, got.GetReleases(), st.Rules)
			switch {
			case st.Consent != nil:
				consents++
				if !got.GetConsentRequired() || got.GetConsentDefaultDays() != int32(st.Consent.DefaultDays) || got.GetConsentMaxDays() != int32(st.Consent.MaxDays) {
					t.Errorf("%s: consent step %v, want %d and at most %d days", j.ID, got, st.Consent.DefaultDays, st.Consent.MaxDays)
				}
			case got.GetConsentRequired() || got.GetConsentDefaultDays() != 0 || got.GetConsentMaxDays() != 0:
				t.Errorf("%s: step without consent shows consent: %v", j.ID, got)
			}
			switch {
			case st.Covert != nil:
				coverts++
				if got.GetCovertMaxDays() != int32(st.Covert.MaxDays) || got.GetCovertReason().GetEn() != st.Covert.Reason.EN ||
					got.GetCovertReason().GetDa() != st.Covert.Reason.DA || got.GetCovertReason().GetEn() == "" || got.GetCovertReason().GetDa() == "" {
					t.Errorf("%s: covert step %v", j.ID, got)
				}
			case got.GetCovertReason() != nil || got.GetCovertMaxDays() != 0:
				t.Errorf("%s: open step shows as covert: %v", j.ID, got)
			}
		}
	}
	// Otherwise the checks above proved nothing about facts, consent or covert steps.
	if facts == 0 || consents == 0 || coverts == 0 {
		t.Fatalf("the policies need a step with a derived fact, one that needs consent and a covert one; found %d, %d and %d", facts, consents, coverts)
	}

	_, err = c.GetDataPath(as(tokAnna), &citizenv1.GetDataPathRequest{Journey: "no-such-journey"})
	wantCode(t, err, codes.NotFound)
	_, err = c.GetDataPath(as(tokAnna), &citizenv1.GetDataPathRequest{Journey: "Bad Journey"})
	wantCode(t, err, codes.InvalidArgument)
}

// TestAccessesAndCases: a caseworker's releases appear in the citizen's access list in the policies'
// words, the case with its steps; the other citizen sees none of it, by any id.
func TestAccessesAndCases(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	b := e.b.Bundle()
	j, factRule, otherRule, k := caseJourney(t, b)
	first := j.Steps[0]
	cs := e.open(first.Agency, j.ID, anna)
	r1 := e.release(first.Agency, cs.GetId(), factRule.Authority, factRule.Dataset)
	r2 := e.release(first.Agency, cs.GetId(), otherRule.Authority, otherRule.Dataset)

	// Besides the releases, the citizen's list holds the register check made before the case was opened.
	got, checks := e.splitChecks(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
	if len(got) != 2 || got[0].GetId() != r2.GetAccessId() || got[1].GetId() != r1.GetAccessId() {
		t.Fatalf("accesses %v, want %s then %s", accessIDs(got), r2.GetAccessId(), r1.GetAccessId())
	}
	e.wantChecks(checks, cs.GetId())
	a := got[1]
	var facts, wantFacts []string
	for _, f := range a.GetFacts() {
		facts = append(facts, f.GetName())
		if f.GetDescription().GetDa() == "" {
			t.Errorf("fact %v has no Danish description", f)
		}
	}
	for _, d := range factRule.Derived {
		wantFacts = append(wantFacts, d.Name)
	}
	switch {
	case a.GetKind() != auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
		a.GetAgency().GetId() != first.Agency || a.GetAgency().GetName().GetDa() == "",
		a.GetCaseworker() != "cw-7",
		a.GetAuthority().GetId() != factRule.Authority || a.GetAuthority().GetName().GetEn() == "",
		a.GetDataset() != factRule.Dataset,
		a.GetCaseId() != cs.GetId(),
		a.GetJourney().GetId() != j.ID || a.GetJourney().GetTitle().GetDa() != j.Title.DA || j.Title.DA == "",
		a.GetStep().GetId() != first.ID || a.GetStep().GetNumber() != 1 || a.GetStep().GetTitle().GetEn() == "",
		a.GetPurpose().GetEn() == "" || a.GetPurpose().GetDa() == "",
		a.GetLegalBasis() != first.LegalBasis || first.LegalBasis == "",
		a.GetDecision() != auditv1.Decision_DECISION_RELEASED,
		len(a.GetFields()) == 0,
		len(facts) == 0 || !slices.Equal(facts, wantFacts),
		a.GetTime() == nil, a.GetHiddenUntil() != nil:
		t.Fatalf("access in the citizen's words: %v; want facts %v", a, wantFacts)
	}
	if n := len(e.accesses(tokBo, &citizenv1.ListAccessesRequest{})); n != 0 {
		t.Fatalf("Bo sees %d of Anna's accesses", n)
	}

	// Cases.
	lc, err := c.ListCases(as(tokAnna), &citizenv1.ListCasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(lc.GetCases()) != 1 {
		t.Fatalf("Anna has %d cases, want 1", len(lc.GetCases()))
	}
	pc := lc.GetCases()[0]
	if pc.GetId() != cs.GetId() || pc.GetStatus() != citizenv1.CaseStatus_CASE_STATUS_OPEN || pc.GetCurrentStep().GetId() != first.ID ||
		pc.GetCurrentAgency().GetId() != first.Agency || len(pc.GetSteps()) != len(j.Steps) || pc.GetOpenedBy().GetId() != first.Agency || pc.GetOpenedAt() == nil {
		t.Fatalf("case %v", pc)
	}
	if s := pc.GetSteps()[0]; s.GetStatus() != citizenv1.StepStatus_STEP_STATUS_CURRENT || s.GetStartedAt() == nil {
		t.Errorf("first step %v", s)
	}
	if s := pc.GetSteps()[k]; s.GetStatus() != citizenv1.StepStatus_STEP_STATUS_PENDING || !s.GetConsentRequired() || s.GetConsentGiven() {
		t.Errorf("consent step %v", s)
	}
	e.complete(first.Agency, cs.GetId(), first.ID)
	gc, err := c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if s := gc.GetCase().GetSteps(); s[0].GetStatus() != citizenv1.StepStatus_STEP_STATUS_COMPLETED || s[0].GetCompletedAt() == nil ||
		s[1].GetStatus() != citizenv1.StepStatus_STEP_STATUS_CURRENT || gc.GetCase().GetCurrentStep().GetNumber() != 2 {
		t.Errorf("after completing step 1: %v", gc.GetCase())
	}

	// Bo: none of Anna's cases, by listing or by id; a case that does not exist looks the same.
	lb, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{})
	if err != nil || len(lb.GetCases()) != 0 {
		t.Fatalf("Bo's cases: %v, %v", lb.GetCases(), err)
	}
	_, err = c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	wantCode(t, err, codes.NotFound)
	msgOther := err.Error()
	_, err = c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: "case_00000000000000000000000000"})
	wantCode(t, err, codes.NotFound)
	if strings.Replace(msgOther, cs.GetId(), "case_00000000000000000000000000", 1) != err.Error() {
		t.Errorf("another citizen's case and a missing case are refused differently: %q vs %q", msgOther, err)
	}
	_, err = c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: "case_X"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.ListCases(as(tokAnna), &citizenv1.ListCasesRequest{PageToken: "garbage"})
	wantCode(t, err, codes.InvalidArgument)

	// Paging cases: three more cases of another journey the citizen sees from the start, pages of two.
	other := otherJourney(t, b, j)
	for range 3 {
		e.open(other.Steps[0].Agency, other.ID, anna)
	}
	var all []string
	tok := ""
	for page := 0; ; page++ {
		resp, err := c.ListCases(as(tokAnna), &citizenv1.ListCasesRequest{PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range resp.GetCases() {
			all = append(all, x.GetId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
		if page == 0 {
			// A case opened while paging is on a new first page, not this listing: nothing twice,
			// nothing skipped. Another citizen cannot continue Anna's listing.
			e.open(other.Steps[0].Agency, other.ID, anna)
			_, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{PageSize: 2, PageToken: tok})
			wantCode(t, err, codes.InvalidArgument)
		}
	}
	if len(all) != 4 || !slices.IsSortedFunc(all, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Fatalf("paged cases %v: want the 4 there were when paging began, newest first", all)
	}
	if resp, err := c.ListCases(as(tokAnna), &citizenv1.ListCasesRequest{}); err != nil || len(resp.GetCases()) != 5 || resp.GetCases()[0].GetId() <= all[0] {
		t.Fatalf("a new listing: %v, %v; want the case opened while paging first", resp.GetCases(), err)
	}
}

// wantReleases fails the test unless a data path step's releases are the step's rules: authority (with
// its name), dataset, fields and facts (with their descriptions). It returns the number of facts.
func wantReleases(t *testing.T, got []*citizenv1.DataPathRelease, rules []*policy.Rule) int {
	t.Helper()
	if len(got) != len(rules) {
		t.Errorf("%d releases, want %d", len(got), len(rules))
		return 0
	}
	var n int
	for i, r := range got {
		want := rules[i]
		var names, wantNames []string
		for _, f := range r.GetFacts() {
			names = append(names, f.GetName())
			if f.GetDescription().GetEn() == "" || f.GetDescription().GetDa() == "" {
				t.Errorf("fact %v has no description", f)
			}
		}
		for _, d := range want.Derived {
			wantNames = append(wantNames, d.Name)
		}
		if r.GetAuthority().GetId() != want.Authority || r.GetAuthority().GetName().GetEn() == "" || r.GetDataset() != want.Dataset ||
			!slices.Equal(r.GetFields(), want.Fields) || !slices.Equal(names, wantNames) {
			t.Errorf("release %v, want %s.%s with fields %v and facts %v", r, want.Authority, want.Dataset, want.Fields, wantNames)
		}
		n += len(names)
	}
	return n
}

func accessIDs(as []*citizenv1.Access) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.GetId()
	}
	return out
}

// TestConsent: preview, grant, the release it allows, revocation refusing the very next release, and
// the bad inputs that change nothing.
func TestConsent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	jn, st := firstConsentStep(t, e.b.Bundle())
	k := indexOfStep(t, jn, st)
	rule := st.Rules[0]
	cs := e.open(jn.Steps[0].Agency, jn.ID, anna)
	e.walk(jn, cs.GetId(), k)
	agency := e.agency(st.Agency)
	releaseAtStep := func() error {
		_, err := agency.Release(cw("cw-3"), &brokerv1.ReleaseRequest{CaseId: cs.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
		return err
	}
	wantCode(t, releaseAtStep(), codes.FailedPrecondition, "consent")

	j, s := jn.ID, st.ID
	defaultDays, maxDays, shortDays := st.Consent.DefaultDays, st.Consent.MaxDays, otherDays(t, st.Consent)
	pv, err := c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	if d := pv.GetExpiresAt().AsTime().Sub(now.Add(time.Duration(defaultDays) * day)); d > time.Minute || d < -time.Minute {
		t.Errorf("preview expiry %v, want %d days from now", pv.GetExpiresAt().AsTime(), defaultDays)
	}
	if pv.GetCurrent() != nil || pv.GetStep().GetAgency().GetId() != st.Agency || pv.GetStep().GetStep().GetId() != s {
		t.Errorf("preview %v", pv)
	}
	wantReleases(t, pv.GetStep().GetReleases(), st.Rules) // what the consent lets the step see
	pvShort, err := c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s, Days: int32(shortDays)})
	if err != nil {
		t.Fatal(err)
	}
	if d := pvShort.GetExpiresAt().AsTime().Sub(now.Add(time.Duration(shortDays) * day)); d > time.Minute || d < -time.Minute {
		t.Errorf("preview of %d days: expiry %v", shortDays, pvShort.GetExpiresAt().AsTime())
	}
	noConsent := stepWithoutConsent(t, jn).ID

	// Bad input: nothing is stored.
	bad := []struct {
		name string
		req  *citizenv1.GrantConsentRequest
		code codes.Code
	}{
		{"more than the maximum", &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: int32(maxDays + 1)}, codes.InvalidArgument},
		{"negative days", &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: -1}, codes.InvalidArgument},
		{"malformed step", &citizenv1.GrantConsentRequest{Journey: j, Step: "Assess"}, codes.InvalidArgument},
		{"no such step", &citizenv1.GrantConsentRequest{Journey: j, Step: "no-such-step"}, codes.NotFound},
		{"no such journey", &citizenv1.GrantConsentRequest{Journey: "nope", Step: s}, codes.NotFound},
		{"step needs no consent", &citizenv1.GrantConsentRequest{Journey: j, Step: noConsent}, codes.FailedPrecondition},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := c.GrantConsent(as(tokAnna), b.req)
			wantCode(t, err, b.code)
		})
	}
	_, err = c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: noConsent})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s, Days: int32(maxDays + 1)})
	wantCode(t, err, codes.InvalidArgument, strconv.Itoa(maxDays))
	if lc, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{}); err != nil || len(lc.GetConsents()) != 0 {
		t.Fatalf("after bad input: consents %v, %v", lc.GetConsents(), err)
	}
	_, err = c.RevokeConsent(as(tokAnna), &citizenv1.RevokeConsentRequest{Journey: j, Step: s})
	wantCode(t, err, codes.NotFound)

	g, err := c.GrantConsent(as(tokAnna), &citizenv1.GrantConsentRequest{Journey: j, Step: s})
	if err != nil {
		t.Fatal(err)
	}
	if !g.GetConsent().GetValid() || g.GetConsent().GetExpiresAt().AsTime().Sub(g.GetConsent().GetGrantedAt().AsTime()) != time.Duration(defaultDays)*day ||
		g.GetConsent().GetAgency().GetId() != st.Agency || g.GetConsent().GetStep().GetNumber() != int32(k+1) {
		t.Fatalf("granted %v", g.GetConsent())
	}
	if err := releaseAtStep(); err != nil {
		t.Fatalf("release with consent: %v", err)
	}
	gc, err := c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if cst := gc.GetCase().GetSteps()[k]; !cst.GetConsentRequired() || !cst.GetConsentGiven() {
		t.Errorf("case step with consent: %v", cst)
	}

	// Bo sees none of it and cannot revoke it.
	if lc, err := c.ListConsents(as(tokBo), &citizenv1.ListConsentsRequest{}); err != nil || len(lc.GetConsents()) != 0 {
		t.Fatalf("Bo's consents: %v, %v", lc.GetConsents(), err)
	}
	_, err = c.RevokeConsent(as(tokBo), &citizenv1.RevokeConsentRequest{Journey: j, Step: s})
	wantCode(t, err, codes.NotFound)
	if pb, err := c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j, Step: s}); err != nil || pb.GetCurrent() != nil {
		t.Fatalf("Bo's preview shows Anna's consent: %v, %v", pb.GetCurrent(), err)
	}
	if err := releaseAtStep(); err != nil {
		t.Fatalf("Bo's revocation attempt changed Anna's consent: %v", err)
	}

	rv, err := c.RevokeConsent(as(tokAnna), &citizenv1.RevokeConsentRequest{Journey: j, Step: s})
	if err != nil {
		t.Fatal(err)
	}
	if rv.GetConsent().GetValid() || rv.GetConsent().GetRevokedAt() == nil {
		t.Fatalf("revoked %v", rv.GetConsent())
	}
	// The very next release is refused.
	wantCode(t, releaseAtStep(), codes.FailedPrecondition, "revoked")
	_, err = c.GrantConsent(as(tokAnna), &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: int32(maxDays + 1)})
	wantCode(t, err, codes.InvalidArgument)
	lc, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{})
	if err != nil || len(lc.GetConsents()) != 1 || lc.GetConsents()[0].GetRevokedAt() == nil || lc.GetConsents()[0].GetValid() {
		t.Fatalf("consents after revocation and a refused grant: %v, %v", lc.GetConsents(), err)
	}
	pv, err = c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s})
	if err != nil || pv.GetCurrent().GetRevokedAt() == nil {
		t.Fatalf("preview after revocation: %v, %v", pv.GetCurrent(), err)
	}
	// The refused releases are in the citizen's log too.
	var refused int
	for _, a := range e.accesses(tokAnna, &citizenv1.ListAccessesRequest{Authority: rule.Authority}) {
		if a.GetDecision() == auditv1.Decision_DECISION_REFUSED && a.GetDataset() == rule.Dataset {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d refused %s.%s accesses listed, want 2", refused, rule.Authority, rule.Dataset)
	}
}

// TestGetMyData: the citizen's own record, logged before it is shown, listed as a self-access; no
// record is an answer, not an error; a closed log shows nothing.
func TestGetMyData(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	b := e.b.Bundle()
	// A dataset whose test record carries the citizen's given name, to tell whose record an answer is.
	authority, dataset := namedDataset(t, b)
	md, err := c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: authority, Dataset: dataset})
	if err != nil {
		t.Fatal(err)
	}
	rec := md.GetRecord().AsMap()
	namePath := pathOf(rec, "Anna")
	if !md.GetFound() || namePath == "" || rec["citizen_id"] != anna || md.GetAuthority().GetId() != authority ||
		md.GetAuthority().GetName().GetEn() == "" || md.GetAccessId() == "" {
		t.Fatalf("my data %v", md)
	}
	mb, err := c.GetMyData(as(tokBo), &citizenv1.GetMyDataRequest{Authority: authority, Dataset: dataset})
	if err != nil {
		t.Fatal(err)
	}
	if pathOf(mb.GetRecord().AsMap(), "Bo") != namePath || pathOf(mb.GetRecord().AsMap(), "Anna") != "" {
		t.Fatalf("Bo's data: %v", mb.GetRecord())
	}
	acc := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})
	if len(acc) != 1 {
		t.Fatalf("Anna has %d accesses, want her own one", len(acc))
	}
	a := acc[0]
	if a.GetId() != md.GetAccessId() || a.GetKind() != auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF || a.GetAgency() != nil ||
		a.GetLegalBasis() != "GDPR Art. 15" || !strings.HasPrefix(a.GetPurpose().GetEn(), "You asked to see what ") || a.GetPurpose().GetDa() == "" ||
		!slices.Contains(a.GetFields(), namePath) ||
		a.GetDecision() != auditv1.Decision_DECISION_RELEASED || a.GetAuthority().GetId() != authority || a.GetDataset() != dataset {
		t.Fatalf("self-access %v; want among its fields %s", a, namePath)
	}
	// The record names only what was shown: no field the record does not hold.
	for _, f := range a.GetFields() {
		if !hasPath(md.GetRecord(), f) {
			t.Fatalf("self-access names field %s, which the record shown does not hold: %v", f, a.GetFields())
		}
	}
	// Asked to leave out my own looks, the list has none of them.
	if others := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{ExcludeSelf: true}); len(others) != 0 {
		t.Fatalf("without my own looks: %v", others)
	}
	// A self-access has no agency to ask.
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: a.GetId(), Message: "Why?"})
	wantCode(t, err, codes.FailedPrecondition)

	// Cai is unknown to the authority: found=false, and logged.
	caiAuthority, caiDataset := someDataset(t, b)
	mc, err := c.GetMyData(as(tokCai), &citizenv1.GetMyDataRequest{Authority: caiAuthority, Dataset: caiDataset})
	if err != nil {
		t.Fatal(err)
	}
	if mc.GetFound() || mc.GetRecord() != nil || mc.GetAccessId() == "" {
		t.Fatalf("nothing held: %v", mc)
	}
	if ac := e.accesses(tokCai, &citizenv1.ListAccessesRequest{}); len(ac) != 1 || ac[0].GetId() != mc.GetAccessId() || ac[0].GetDecision() != auditv1.Decision_DECISION_REFUSED {
		t.Fatalf("Cai's accesses: %v", ac)
	}

	// Another authority's dataset, an authority the registry does not name, an id no registry may use.
	_, err = c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: authority, Dataset: foreignDataset(t, b, authority)})
	wantCode(t, err, codes.NotFound)
	_, err = c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: "library", Dataset: "loans"})
	wantCode(t, err, codes.NotFound)
	_, err = c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: capitalised(authority), Dataset: dataset})
	wantCode(t, err, codes.InvalidArgument)
	if n := len(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})); n != 1 {
		t.Fatalf("bad requests were logged: %d accesses", n)
	}

	// Fail closed: with the log unavailable, nothing is shown.
	if err := e.b.AccessLog().Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: authority, Dataset: dataset})
	wantCode(t, err, codes.Unavailable)
	if resp != nil {
		t.Fatal("data shown without a durable access record")
	}
}

// TestQuestions: citizen asks, the agency is told (event without the citizen or the text), lists and
// answers; the citizen sees the answer. Nobody else can see or answer it.
func TestQuestions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	b := e.b.Bundle()
	j := openJourney(t, b)
	first := j.Steps[0]
	cs := e.open(first.Agency, j.ID, anna)
	rel := e.release(first.Agency, cs.GetId(), first.Rules[0].Authority, first.Rules[0].Dataset)

	events, err := e.b.NATSConn().SubscribeSync("aperture.events.agency.*.question_asked")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Unsubscribe()
	if err := e.b.NATSConn().Flush(); err != nil {
		t.Fatal(err)
	}

	const secretText = "Why did you look at my address? secret-7731"
	e.secrets = append(e.secrets, secretText)
	// Bad input and other citizens' accesses change nothing.
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: rel.GetAccessId(), Message: ""})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: "acc_bad", Message: "x"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: rel.GetAccessId(), Message: strings.Repeat("x", 2001)})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.QuestionAccess(as(tokBo), &citizenv1.QuestionAccessRequest{AccessId: rel.GetAccessId(), Message: "Whose is this?"})
	wantCode(t, err, codes.NotFound)
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: "acc_00000000000000000000000000", Message: "x"})
	wantCode(t, err, codes.NotFound)
	if lq, err := c.ListQuestions(as(tokAnna), &citizenv1.ListQuestionsRequest{}); err != nil || len(lq.GetQuestions()) != 0 {
		t.Fatalf("questions after bad input: %v, %v", lq.GetQuestions(), err)
	}

	qa, err := c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: rel.GetAccessId(), Message: secretText})
	if err != nil {
		t.Fatal(err)
	}
	q := qa.GetQuestion()
	if !strings.HasPrefix(q.GetId(), "qst_") || q.GetAccessId() != rel.GetAccessId() || q.GetAgency().GetId() != first.Agency ||
		q.GetAgency().GetName().GetEn() == "" || q.GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_OPEN || q.GetMessage() != secretText {
		t.Fatalf("question %v", q)
	}

	m, err := events.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no question_asked event: %v", err)
	}
	if m.Subject != "aperture.events.agency."+first.Agency+".question_asked" {
		t.Errorf("event subject %s", m.Subject)
	}
	for _, secret := range []string{anna, secretText, e.pn.Pseudonym(anna).Value} {
		if strings.Contains(string(m.Data), secret) {
			t.Fatalf("the event carries %q", secret)
		}
	}
	var ev citizenv1.Question
	if err := proto.Unmarshal(m.Data, &ev); err != nil || ev.GetId() != q.GetId() || ev.GetAccessId() != rel.GetAccessId() || ev.GetMessage() != "" {
		t.Fatalf("event %v, %v", &ev, err)
	}

	// Bo sees nothing; another agency neither lists nor answers it.
	if lq, err := c.ListQuestions(as(tokBo), &citizenv1.ListQuestionsRequest{}); err != nil || len(lq.GetQuestions()) != 0 {
		t.Fatalf("Bo's questions: %v, %v", lq.GetQuestions(), err)
	}
	otherID := otherAgency(t, b, first.Agency)
	other := e.agency(otherID)
	if lq, err := other.ListQuestions(cw("ot-1"), &brokerv1.ListQuestionsRequest{}); err != nil || len(lq.GetQuestions()) != 0 {
		t.Fatalf("agency %s lists %v, %v", otherID, lq.GetQuestions(), err)
	}
	_, err = other.AnswerQuestion(cw("ot-1"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: "Not us."})
	wantCode(t, err, codes.NotFound)

	holder := e.agency(first.Agency)
	_, err = holder.AnswerQuestion(cw("cw-9"), &brokerv1.AnswerQuestionRequest{QuestionId: "qst_bad", Answer: "x"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = holder.AnswerQuestion(cw("cw-9"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: ""})
	wantCode(t, err, codes.InvalidArgument)
	lq, err := holder.ListQuestions(cw("cw-9"), &brokerv1.ListQuestionsRequest{OnlyOpen: true})
	if err != nil || len(lq.GetQuestions()) != 1 || lq.GetQuestions()[0].GetId() != q.GetId() || lq.GetQuestions()[0].GetMessage() != secretText {
		t.Fatalf("%s's open questions: %v, %v", first.Agency, lq.GetQuestions(), err)
	}
	const answer = "To send you the decision letter."
	ans, err := holder.AnswerQuestion(cw("cw-9"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: answer})
	if err != nil {
		t.Fatal(err)
	}
	if a := ans.GetQuestion(); a.GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED || a.GetAnsweredBy() != "cw-9" || a.GetAnswer() != answer || a.GetAnsweredAt() == nil {
		t.Fatalf("answered %v", a)
	}
	_, err = holder.AnswerQuestion(cw("cw-10"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: "again"})
	wantCode(t, err, codes.FailedPrecondition)
	if lq, err := holder.ListQuestions(cw("cw-9"), &brokerv1.ListQuestionsRequest{OnlyOpen: true}); err != nil || len(lq.GetQuestions()) != 0 {
		t.Fatalf("open questions after the answer: %v, %v", lq.GetQuestions(), err)
	}

	mine, err := c.ListQuestions(as(tokAnna), &citizenv1.ListQuestionsRequest{})
	if err != nil || len(mine.GetQuestions()) != 1 {
		t.Fatalf("Anna's questions: %v, %v", mine.GetQuestions(), err)
	}
	if m := mine.GetQuestions()[0]; m.GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED || m.GetAnswer() != answer || m.GetAnsweredBy() != "cw-9" {
		t.Fatalf("Anna sees %v", m)
	}
}
