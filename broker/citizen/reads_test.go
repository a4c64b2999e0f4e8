package citizen_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// The tests here take their journeys, steps and agencies from the policy the broker loaded, so that
// they keep meaning the same when an architect changes the example journeys.

// covertWithOther finds a journey with a covert step and an agency of that journey (another step's)
// that is not the covert step's own.
func covertWithOther(t *testing.T, b *policy.Bundle) (j *policy.Journey, k int, other string) {
	t.Helper()
	for _, j := range b.Journeys() {
		for k, s := range j.Steps {
			if s.Covert == nil || len(s.Rules) == 0 {
				continue
			}
			for _, o := range j.Steps {
				if o.Agency != s.Agency {
					return j, k, o.Agency
				}
			}
		}
	}
	t.Fatal("the policy has no covert step in a journey with a second agency")
	return nil, 0, ""
}

// laterAgency finds a journey whose first step is not covert and an agency that acts only at a later
// step of it (so it must not see the case before that step).
func laterAgency(t *testing.T, b *policy.Bundle) (j *policy.Journey, at int) {
	t.Helper()
	for _, j := range b.Journeys() {
		if j.Steps[0].Covert != nil {
			continue
		}
		for i, s := range j.Steps {
			if !slices.ContainsFunc(j.Steps[:i], func(p *policy.Step) bool { return p.Agency == s.Agency }) && i > 0 {
				return j, i
			}
		}
	}
	t.Fatal("the policy has no journey in which a second agency joins at a later step")
	return nil, 0
}

// walk completes the steps of j before step k of case id.
func (e *env) walk(j *policy.Journey, id string, k int) {
	e.t.Helper()
	for _, s := range j.Steps[:k] {
		e.complete(s.Agency, id, s.ID)
	}
}

// auditor returns the AuditService client of the registry's first auditor, and its id.
func (e *env) auditor() (auditv1.AuditServiceClient, *policy.Agency) {
	e.t.Helper()
	reg := e.b.Bundle().Registry
	if len(reg.Auditors) == 0 {
		e.t.Fatal("the registry names no auditor")
	}
	a := reg.Auditors[0]
	src, err := e.ca.Source(mtls.KindAuditor, a.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.b.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, mtls.ID(trustDomain, mtls.KindBroker, "")))))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cc.Close() })
	return auditv1.NewAuditServiceClient(cc), a
}

func ofKind(as []*citizenv1.Access, kind auditv1.AccessKind) []*citizenv1.Access {
	var out []*citizenv1.Access
	for _, a := range as {
		if a.GetKind() == kind {
			out = append(out, a)
		}
	}
	return out
}

func refused(as []*citizenv1.Access) []*citizenv1.Access {
	var out []*citizenv1.Access
	for _, a := range as {
		if a.GetDecision() == auditv1.Decision_DECISION_REFUSED {
			out = append(out, a)
		}
	}
	return out
}

// TestCovertRefusalHiddenUntilDate: a refusal about a case at a covert step — by another agency of the
// journey, or after the case closed at that step — is kept from the citizen exactly like the step's own
// accesses (until the step's maximum delay has passed or the closed case reveals it, then shown with the
// policy's reason in both languages). An agency outside the journey is told the case does not exist and the citizen's log gets
// nothing at all.
func TestCovertRefusalHiddenUntilDate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.b.Bundle()
	j, k, other := covertWithOther(t, b)
	covert := j.Steps[k]
	rule := covert.Rules[0]
	outsider := ""
	for _, a := range b.Registry.Agencies {
		if !slices.ContainsFunc(j.Steps, func(s *policy.Step) bool { return s.Agency == a.ID }) {
			outsider = a.ID
		}
	}
	if outsider == "" {
		t.Fatalf("every agency takes part in %s", j.ID)
	}
	ask := func(agency, caseID string) error {
		_, err := e.agency(agency).Release(cw("cw-x"), &brokerv1.ReleaseRequest{CaseId: caseID, Authority: rule.Authority, Dataset: rule.Dataset})
		return err
	}

	// Anna's case is at the covert step; another agency of the journey asks.
	ca := e.open(j.Steps[0].Agency, j.ID, anna)
	e.walk(j, ca.GetId(), k)
	wantCode(t, ask(other, ca.GetId()), codes.PermissionDenied)
	wantCode(t, ask(outsider, ca.GetId()), codes.NotFound, "does not exist")

	// Bo's case closed at the covert step (the check found nothing); its agency asks again.
	cb := e.open(j.Steps[0].Agency, j.ID, bo)
	e.walk(j, cb.GetId(), k)
	if _, err := e.agency(covert.Agency).CloseCase(cw("cw-x"), &brokerv1.CloseCaseRequest{CaseId: cb.GetId(), Reason: "nothing found"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ask(covert.Agency, cb.GetId()), codes.FailedPrecondition, "closed")

	if got := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}); len(got) != 0 {
		t.Fatalf("refusals at the current covert step are shown at once: %v", got)
	}
	// A closed case reveals its covert step unless its policy waits for the maximum delay.
	gotBo := e.accesses(tokBo, &citizenv1.ListAccessesRequest{})
	if wantShown := covert.Covert.Reveal != policy.RevealMaxDays; (len(gotBo) != 0) != wantShown {
		t.Fatalf("after the case closed (reveal %s): %v, want shown=%v", covert.Covert.Reveal, gotBo, wantShown)
	}

	e.clock.advance(covert.Covert.MaxDelay() + day)
	for _, tc := range []struct {
		tok, caseID, agency string
	}{{tokAnna, ca.GetId(), other}, {tokBo, cb.GetId(), covert.Agency}} {
		// Besides the register check made before the case was opened.
		got, checks := e.splitChecks(e.accesses(tc.tok, &citizenv1.ListAccessesRequest{}))
		got, _ = splitReveals(got) // Bo's close revealed the step early (covert_test.go tests that)
		if len(got) != 1 || len(refused(got)) != 1 {
			t.Fatalf("after the delay: %v, want exactly the one refusal (nothing from %s)", got, outsider)
		}
		e.wantChecks(checks, tc.caseID)
		a := got[0]
		if a.GetCaseId() != tc.caseID || a.GetAgency().GetId() != tc.agency || a.GetStep().GetId() != covert.ID ||
			a.GetHiddenUntil() == nil || a.GetHiddenReason().GetEn() != covert.Covert.Reason.EN || a.GetHiddenReason().GetDa() != covert.Covert.Reason.DA {
			t.Errorf("revealed refusal: %v", a)
		}
	}
}

// TestCaseReadsAreAccesses: an agency sees a case only once one of its steps is current (before that,
// the answer is the unknown case's); every GetCase and every case on a ListCases page is in the
// citizen's list as a case read, with the agency, the caseworker and the step's purpose; a read at a
// covert step is hidden like the step's accesses.
func TestCaseReadsAreAccesses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.b.Bundle()
	j, at := laterAgency(t, b)
	first, later := j.Steps[0], j.Steps[at]
	cs := e.open(first.Agency, j.ID, anna)

	get := func(agency, id string) (*brokerv1.GetCaseResponse, error) {
		return e.agency(agency).GetCase(cw("cw-r"), &brokerv1.GetCaseRequest{CaseId: id})
	}
	listed := func(agency, id string) bool {
		resp, err := e.agency(agency).ListCases(cw("cw-r"), &brokerv1.ListCasesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(resp.GetCases(), func(c *brokerv1.Case) bool { return c.GetId() == id })
	}

	// Before its step, the later agency is told what an unknown id gets.
	const unknown = "case_00000000000000000000000000"
	_, errUnknown := get(later.Agency, unknown)
	_, err := get(later.Agency, cs.GetId())
	wantCode(t, err, codes.NotFound)
	if a, u := status.Convert(err).Message(), status.Convert(errUnknown).Message(); strings.ReplaceAll(u, unknown, cs.GetId()) != a {
		t.Errorf("not-yet agency: %q; unknown case: %q", a, u)
	}
	if listed(later.Agency, cs.GetId()) {
		t.Error("ListCases shows the case to an agency whose step has not started")
	}
	// Only the register check made before the case was opened is in the citizen's list.
	got, checks := e.splitChecks(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
	if len(got) != 0 {
		t.Fatalf("reads that were not answered are logged: %v", got)
	}
	e.wantChecks(checks, cs.GetId())

	gc, err := get(first.Agency, cs.GetId())
	if err != nil || gc.GetCase().GetCitizenId() != anna {
		t.Fatalf("first agency GetCase: %v, %v", gc, err)
	}
	got, _ = e.splitChecks(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
	reads := ofKind(got, auditv1.AccessKind_ACCESS_KIND_CASE_READ)
	if len(reads) != 1 {
		t.Fatalf("%d case reads listed after one GetCase", len(reads))
	}
	r := reads[0]
	if r.GetAgency().GetId() != first.Agency || r.GetCaseworker() != "cw-r" || r.GetCaseId() != cs.GetId() || r.GetStep().GetId() != first.ID ||
		r.GetPurpose().GetEn() != first.Purpose.EN || r.GetDecision() != auditv1.Decision_DECISION_RELEASED || len(r.GetFields()) != 0 || r.GetHiddenUntil() != nil {
		t.Errorf("case read as the citizen sees it: %v", r)
	}

	e.walk(j, cs.GetId(), at)
	if _, err := get(later.Agency, cs.GetId()); err != nil {
		t.Fatalf("GetCase once the agency's step is current: %v", err)
	}
	if !listed(later.Agency, cs.GetId()) {
		t.Error("ListCases does not show the case once the agency's step is current")
	}
	n := 0
	for _, r := range ofKind(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}), auditv1.AccessKind_ACCESS_KIND_CASE_READ) {
		if r.GetAgency().GetId() == later.Agency && r.GetStep().GetId() == later.ID {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d case reads by %s listed, want 2 (GetCase and ListCases)", n, later.Agency)
	}

	// At a covert step the read is hidden like the step's own accesses.
	cj, k, _ := covertWithOther(t, b)
	covert := cj.Steps[k]
	cb := e.open(cj.Steps[0].Agency, cj.ID, bo)
	e.walk(cj, cb.GetId(), k)
	if _, err := get(covert.Agency, cb.GetId()); err != nil {
		t.Fatal(err)
	}
	if got := e.accesses(tokBo, &citizenv1.ListAccessesRequest{}); len(got) != 0 {
		t.Fatalf("a read at a covert step is shown at once: %v", got)
	}
	e.clock.advance(covert.Covert.MaxDelay() + day)
	got, checks = e.splitChecks(e.accesses(tokBo, &citizenv1.ListAccessesRequest{}))
	e.wantChecks(checks, cb.GetId())
	got = ofKind(got, auditv1.AccessKind_ACCESS_KIND_CASE_READ)
	if len(got) != 1 || got[0].GetHiddenReason().GetDa() != covert.Covert.Reason.DA {
		t.Fatalf("covert case read after the delay: %v", got)
	}
}

// TestAuditorReadIsShown: an auditor listing a citizen's access records is itself in the citizen's
// list, named as the registry names the auditor, in English and Danish. One listing is one record: it
// is written before the answer but after the page is read, and the records listed are not logged again.
func TestAuditorReadIsShown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	client, aud := e.auditor()
	list := func() []*auditv1.AccessRecord {
		resp, err := client.ListAccessRecords(cw("dpo"), &auditv1.ListAccessRecordsRequest{CitizenId: anna})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetRecords()
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("first listing of a fresh citizen: %v", got)
	}
	for i := 1; i <= 3; i++ {
		if got := list(); len(got) != i {
			t.Fatalf("listing %d shows %d records, want %d (one per earlier listing)", i+1, len(got), i)
		}
	}
	got := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})
	if len(got) != 4 || len(ofKind(got, auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ)) != 4 {
		t.Fatalf("citizen sees %v, want the 4 auditor reads", got)
	}
	a := got[0]
	if a.GetAgency().GetId() != aud.ID || a.GetAgency().GetName().GetEn() != aud.Name.EN || a.GetAgency().GetName().GetDa() != aud.Name.DA ||
		!strings.Contains(a.GetPurpose().GetEn(), aud.Name.EN) || !strings.Contains(a.GetPurpose().GetDa(), aud.Name.DA) {
		t.Errorf("auditor read as the citizen sees it: %v", a)
	}
	// Bo's log is untouched by reading Anna's.
	if got := e.accesses(tokBo, &citizenv1.ListAccessesRequest{}); len(got) != 0 {
		t.Errorf("another citizen's list: %v", got)
	}
}
