package citizen_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

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
					_, err := c.GetMyData(tc.ctx, &citizenv1.GetMyDataRequest{Authority: "population", Dataset: "person"})
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

	dp, err := c.GetDataPath(as(tokAnna), &citizenv1.GetDataPathRequest{Journey: "sickness-benefit"})
	if err != nil {
		t.Fatal(err)
	}
	if dp.GetPolicyVersion() != bundle.Version || len(dp.GetSteps()) != 5 {
		t.Fatalf("data path: version %q, %d steps", dp.GetPolicyVersion(), len(dp.GetSteps()))
	}
	first, consentStep := dp.GetSteps()[0], dp.GetSteps()[2]
	if first.GetStep().GetNumber() != 1 || first.GetAgency().GetName().GetEn() == "" || first.GetLegalBasis() == "" || first.GetPurpose().GetDa() == "" {
		t.Errorf("first step %v", first)
	}
	var facts []string
	for _, r := range first.GetReleases() {
		if r.GetAuthority().GetName().GetEn() == "" || r.GetDataset() == "" {
			t.Errorf("release %v", r)
		}
		for _, f := range r.GetFacts() {
			facts = append(facts, f.GetName())
			if f.GetDescription().GetEn() == "" {
				t.Errorf("fact %v has no description", f)
			}
		}
	}
	if !slices.Contains(facts, "currently_employed") {
		t.Errorf("facts of step 1: %v", facts)
	}
	if !consentStep.GetConsentRequired() || consentStep.GetConsentDefaultDays() != 30 || consentStep.GetConsentMaxDays() != 90 {
		t.Errorf("consent step %v", consentStep)
	}

	bc, err := c.GetDataPath(as(tokBo), &citizenv1.GetDataPathRequest{Journey: "benefit-control"})
	if err != nil {
		t.Fatal(err)
	}
	if s := bc.GetSteps()[0]; s.GetCovertMaxDays() != 90 || s.GetCovertReason().GetEn() == "" || s.GetCovertReason().GetDa() == "" {
		t.Errorf("covert step %v", s)
	}
	if s := bc.GetSteps()[1]; s.GetCovertReason() != nil || s.GetCovertMaxDays() != 0 {
		t.Errorf("open step shows as covert: %v", s)
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
	cs := e.open("municipality", "sickness-benefit", anna)
	r1 := e.release("municipality", cs.GetId(), "employment", "history")
	r2 := e.release("municipality", cs.GetId(), "population", "person")

	// Besides the releases, the citizen's list holds the register check made before the case was opened.
	got, checks := e.splitChecks(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
	if len(got) != 2 || got[0].GetId() != r2.GetAccessId() || got[1].GetId() != r1.GetAccessId() {
		t.Fatalf("accesses %v, want %s then %s", accessIDs(got), r2.GetAccessId(), r1.GetAccessId())
	}
	e.wantChecks(checks, cs.GetId())
	a := got[1]
	switch {
	case a.GetKind() != auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
		a.GetAgency().GetId() != "municipality" || a.GetAgency().GetName().GetDa() == "",
		a.GetCaseworker() != "cw-7",
		a.GetAuthority().GetId() != "employment" || a.GetAuthority().GetName().GetEn() == "",
		a.GetDataset() != "history",
		a.GetCaseId() != cs.GetId(),
		a.GetJourney().GetId() != "sickness-benefit" || a.GetJourney().GetTitle().GetDa() != "Sygedagpenge",
		a.GetStep().GetId() != "register-absence" || a.GetStep().GetNumber() != 1 || a.GetStep().GetTitle().GetEn() == "",
		a.GetPurpose().GetEn() == "" || a.GetPurpose().GetDa() == "",
		a.GetLegalBasis() != "Sygedagpengeloven § 7",
		a.GetDecision() != auditv1.Decision_DECISION_RELEASED,
		len(a.GetFields()) == 0,
		len(a.GetFacts()) != 1 || a.GetFacts()[0].GetName() != "currently_employed" || a.GetFacts()[0].GetDescription().GetDa() == "",
		a.GetTime() == nil, a.GetHiddenUntil() != nil:
		t.Fatalf("access in the citizen's words: %v", a)
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
	if pc.GetId() != cs.GetId() || pc.GetStatus() != citizenv1.CaseStatus_CASE_STATUS_OPEN || pc.GetCurrentStep().GetId() != "register-absence" ||
		pc.GetCurrentAgency().GetId() != "municipality" || len(pc.GetSteps()) != 5 || pc.GetOpenedBy().GetId() != "municipality" || pc.GetOpenedAt() == nil {
		t.Fatalf("case %v", pc)
	}
	if s := pc.GetSteps()[0]; s.GetStatus() != citizenv1.StepStatus_STEP_STATUS_CURRENT || s.GetStartedAt() == nil {
		t.Errorf("first step %v", s)
	}
	if s := pc.GetSteps()[2]; s.GetStatus() != citizenv1.StepStatus_STEP_STATUS_PENDING || !s.GetConsentRequired() || s.GetConsentGiven() {
		t.Errorf("consent step %v", s)
	}
	e.complete("municipality", cs.GetId(), "register-absence")
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

	// Paging cases: three more cases, pages of two.
	for range 3 {
		e.open("municipality", "moving-house", anna)
	}
	var all []string
	tok := ""
	for {
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
	}
	if len(all) != 4 || !slices.IsSortedFunc(all, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Fatalf("paged cases %v: want 4, newest first", all)
	}
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
	cs := e.open("municipality", "sickness-benefit", anna)
	e.complete("municipality", cs.GetId(), "register-absence")
	e.complete("municipality", cs.GetId(), "check-employment-requirement")
	mun := e.agency("municipality")
	releaseHealth := func() error {
		_, err := mun.Release(cw("cw-3"), &brokerv1.ReleaseRequest{CaseId: cs.GetId(), Authority: "health", Dataset: "patient"})
		return err
	}
	wantCode(t, releaseHealth(), codes.FailedPrecondition, "consent")

	const j, s = "sickness-benefit", "assess-work-capacity"
	pv, err := c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	if d := pv.GetExpiresAt().AsTime().Sub(now.Add(30 * day)); d > time.Minute || d < -time.Minute {
		t.Errorf("preview expiry %v, want 30 days from now", pv.GetExpiresAt().AsTime())
	}
	if pv.GetCurrent() != nil || pv.GetStep().GetAgency().GetId() != "municipality" || len(pv.GetStep().GetReleases()) != 1 ||
		!slices.Contains(pv.GetStep().GetReleases()[0].GetFields(), "sick_notes.work_capacity_percent") {
		t.Errorf("preview %v", pv)
	}
	pv10, err := c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s, Days: 10})
	if err != nil {
		t.Fatal(err)
	}
	if d := pv10.GetExpiresAt().AsTime().Sub(now.Add(10 * day)); d > time.Minute || d < -time.Minute {
		t.Errorf("preview of 10 days: expiry %v", pv10.GetExpiresAt().AsTime())
	}

	// Bad input: nothing is stored.
	bad := []struct {
		name string
		req  *citizenv1.GrantConsentRequest
		code codes.Code
	}{
		{"more than the maximum", &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: 91}, codes.InvalidArgument},
		{"negative days", &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: -1}, codes.InvalidArgument},
		{"malformed step", &citizenv1.GrantConsentRequest{Journey: j, Step: "Assess"}, codes.InvalidArgument},
		{"no such step", &citizenv1.GrantConsentRequest{Journey: j, Step: "no-such-step"}, codes.NotFound},
		{"no such journey", &citizenv1.GrantConsentRequest{Journey: "nope", Step: s}, codes.NotFound},
		{"step needs no consent", &citizenv1.GrantConsentRequest{Journey: j, Step: "register-absence"}, codes.FailedPrecondition},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := c.GrantConsent(as(tokAnna), b.req)
			wantCode(t, err, b.code)
		})
	}
	_, err = c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: "register-absence"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j, Step: s, Days: 91})
	wantCode(t, err, codes.InvalidArgument, "90")
	if lc, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{}); err != nil || len(lc.GetConsents()) != 0 {
		t.Fatalf("after bad input: consents %v, %v", lc.GetConsents(), err)
	}
	_, err = c.RevokeConsent(as(tokAnna), &citizenv1.RevokeConsentRequest{Journey: j, Step: s})
	wantCode(t, err, codes.NotFound)

	g, err := c.GrantConsent(as(tokAnna), &citizenv1.GrantConsentRequest{Journey: j, Step: s})
	if err != nil {
		t.Fatal(err)
	}
	if !g.GetConsent().GetValid() || g.GetConsent().GetExpiresAt().AsTime().Sub(g.GetConsent().GetGrantedAt().AsTime()) != 30*day ||
		g.GetConsent().GetAgency().GetId() != "municipality" || g.GetConsent().GetStep().GetNumber() != 3 {
		t.Fatalf("granted %v", g.GetConsent())
	}
	if err := releaseHealth(); err != nil {
		t.Fatalf("release with consent: %v", err)
	}
	gc, err := c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if st := gc.GetCase().GetSteps()[2]; !st.GetConsentRequired() || !st.GetConsentGiven() {
		t.Errorf("case step with consent: %v", st)
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
	if err := releaseHealth(); err != nil {
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
	wantCode(t, releaseHealth(), codes.FailedPrecondition, "revoked")
	_, err = c.GrantConsent(as(tokAnna), &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: 91})
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
	for _, a := range e.accesses(tokAnna, &citizenv1.ListAccessesRequest{Authority: "health"}) {
		if a.GetDecision() == auditv1.Decision_DECISION_REFUSED {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d refused health accesses listed, want 2", refused)
	}
}

// TestGetMyData: the citizen's own record, logged before it is shown, listed as a self-access; no
// record is an answer, not an error; a closed log shows nothing.
func TestGetMyData(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	md, err := c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: "population", Dataset: "person"})
	if err != nil {
		t.Fatal(err)
	}
	rec := md.GetRecord().AsMap()
	name, _ := rec["name"].(map[string]any)
	if !md.GetFound() || name["given_names"] != "Anna" || rec["citizen_id"] != anna || md.GetAuthority().GetName().GetEn() == "" || md.GetAccessId() == "" {
		t.Fatalf("my data %v", md)
	}
	mb, err := c.GetMyData(as(tokBo), &citizenv1.GetMyDataRequest{Authority: "population", Dataset: "person"})
	if err != nil {
		t.Fatal(err)
	}
	if nb, _ := mb.GetRecord().AsMap()["name"].(map[string]any); nb["given_names"] != "Bo" {
		t.Fatalf("Bo's data: %v", mb.GetRecord())
	}
	acc := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})
	if len(acc) != 1 {
		t.Fatalf("Anna has %d accesses, want her own one", len(acc))
	}
	a := acc[0]
	if a.GetId() != md.GetAccessId() || a.GetKind() != auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF || a.GetAgency() != nil ||
		a.GetLegalBasis() != "GDPR Art. 15" || !strings.HasPrefix(a.GetPurpose().GetEn(), "You asked to see what ") || a.GetPurpose().GetDa() == "" ||
		!slices.Contains(a.GetFields(), "name.given_names") || slices.Contains(a.GetFields(), "household") ||
		a.GetDecision() != auditv1.Decision_DECISION_RELEASED || a.GetAuthority().GetId() != "population" {
		t.Fatalf("self-access %v", a)
	}
	// Asked to leave out my own looks, the list has none of them.
	if others := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{ExcludeSelf: true}); len(others) != 0 {
		t.Fatalf("without my own looks: %v", others)
	}
	// A self-access has no agency to ask.
	_, err = c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: a.GetId(), Message: "Why?"})
	wantCode(t, err, codes.FailedPrecondition)

	// Cai is unknown to the authority: found=false, and logged.
	mc, err := c.GetMyData(as(tokCai), &citizenv1.GetMyDataRequest{Authority: "tax", Dataset: "income"})
	if err != nil {
		t.Fatal(err)
	}
	if mc.GetFound() || mc.GetRecord() != nil || mc.GetAccessId() == "" {
		t.Fatalf("nothing held: %v", mc)
	}
	if ac := e.accesses(tokCai, &citizenv1.ListAccessesRequest{}); len(ac) != 1 || ac[0].GetId() != mc.GetAccessId() || ac[0].GetDecision() != auditv1.Decision_DECISION_REFUSED {
		t.Fatalf("Cai's accesses: %v", ac)
	}

	_, err = c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: "population", Dataset: "income"})
	wantCode(t, err, codes.NotFound)
	_, err = c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: "library", Dataset: "loans"})
	wantCode(t, err, codes.NotFound)
	_, err = c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: "Population", Dataset: "person"})
	wantCode(t, err, codes.InvalidArgument)
	if n := len(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})); n != 1 {
		t.Fatalf("bad requests were logged: %d accesses", n)
	}

	// Fail closed: with the log unavailable, nothing is shown.
	if err := e.b.AccessLog().Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetMyData(as(tokAnna), &citizenv1.GetMyDataRequest{Authority: "population", Dataset: "person"})
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
	cs := e.open("municipality", "sickness-benefit", anna)
	rel := e.release("municipality", cs.GetId(), "population", "person")

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
	if !strings.HasPrefix(q.GetId(), "qst_") || q.GetAccessId() != rel.GetAccessId() || q.GetAgency().GetId() != "municipality" ||
		q.GetAgency().GetName().GetEn() == "" || q.GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_OPEN || q.GetMessage() != secretText {
		t.Fatalf("question %v", q)
	}

	m, err := events.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no question_asked event: %v", err)
	}
	if m.Subject != "aperture.events.agency.municipality.question_asked" {
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
	tax := e.agency("tax")
	if lq, err := tax.ListQuestions(cw("tx-1"), &brokerv1.ListQuestionsRequest{}); err != nil || len(lq.GetQuestions()) != 0 {
		t.Fatalf("the tax agency lists %v, %v", lq.GetQuestions(), err)
	}
	_, err = tax.AnswerQuestion(cw("tx-1"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: "Not us."})
	wantCode(t, err, codes.NotFound)

	mun := e.agency("municipality")
	_, err = mun.AnswerQuestion(cw("cw-9"), &brokerv1.AnswerQuestionRequest{QuestionId: "qst_bad", Answer: "x"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = mun.AnswerQuestion(cw("cw-9"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: ""})
	wantCode(t, err, codes.InvalidArgument)
	lq, err := mun.ListQuestions(cw("cw-9"), &brokerv1.ListQuestionsRequest{OnlyOpen: true})
	if err != nil || len(lq.GetQuestions()) != 1 || lq.GetQuestions()[0].GetId() != q.GetId() || lq.GetQuestions()[0].GetMessage() != secretText {
		t.Fatalf("municipality's open questions: %v, %v", lq.GetQuestions(), err)
	}
	const answer = "To send you the decision letter."
	ans, err := mun.AnswerQuestion(cw("cw-9"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: answer})
	if err != nil {
		t.Fatal(err)
	}
	if a := ans.GetQuestion(); a.GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED || a.GetAnsweredBy() != "cw-9" || a.GetAnswer() != answer || a.GetAnsweredAt() == nil {
		t.Fatalf("answered %v", a)
	}
	_, err = mun.AnswerQuestion(cw("cw-10"), &brokerv1.AnswerQuestionRequest{QuestionId: q.GetId(), Answer: "again"})
	wantCode(t, err, codes.FailedPrecondition)
	if lq, err := mun.ListQuestions(cw("cw-9"), &brokerv1.ListQuestionsRequest{OnlyOpen: true}); err != nil || len(lq.GetQuestions()) != 0 {
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
