package main

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestCaseOpenAsksTheCitizenRegister: over mTLS, opening a case asks the registry's citizen register
// whether the citizen exists. A citizen it does not know gets NotFound with ErrorInfo RECORD_NOT_FOUND
// and no case; a known one gets the case. Both checks are in the citizen's access log, as a case read
// of the register's dataset with no field released.
func TestCaseOpenAsksTheCitizenRegister(t *testing.T) {
	ts := newTestStack(t)
	b := ts.Broker.Bundle()
	reg := b.Registry.CitizenRegister
	if reg == nil {
		t.Fatal("the example registry names no citizen register")
	}
	// A journey whose first step is not covert, so that the check is visible at once.
	j := b.Journeys()[0]
	for _, cand := range b.Journeys() {
		if cand.Steps[0].Covert == nil {
			j = cand
			break
		}
	}
	first := j.Steps[0]
	ag := ts.agency(first.Agency)

	// A well-formed citizen id the population does not hold.
	unknown := ""
	for n := 1; unknown == ""; n++ {
		id := fmt.Sprintf("99%08d", n)
		if _, ok := ts.Population.Citizen(id); !ok {
			unknown = id
		}
	}
	_, err := ag.OpenCase(cw("cw-register-1"), &brokerv1.OpenCaseRequest{Journey: j.ID, CitizenId: unknown})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("open %s for an unknown citizen: %v, want NotFound", j.ID, err)
	}
	wantReason(t, err, "RECORD_NOT_FOUND", "authority", reg.Authority, "dataset", reg.Authority+"."+reg.Dataset)
	recs := ts.accessRecords(unknown)
	if len(recs) != 1 {
		t.Fatalf("the unknown citizen's log has %d records, want the one check: %v", len(recs), recs)
	}
	checkRecord(t, recs[0], first.Agency, j.ID, reg.Authority, reg.Dataset, auditv1.Decision_DECISION_REFUSED)
	if recs[0].GetCaseId() != "" {
		t.Errorf("the refused check names case %s: no case was opened", recs[0].GetCaseId())
	}
	cases, err := ag.ListCases(cw("cw-register-1"), &brokerv1.ListCasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases.GetCases() {
		if c.GetCitizenId() == unknown {
			t.Fatalf("a case was opened for the unknown citizen: %s", c.GetId())
		}
	}

	known := ts.citizenFor(j.ID)
	before := len(ts.accessRecords(known))
	c := ts.open(first.Agency, j.ID, known)
	recs = ts.accessRecords(known)
	if len(recs) != before+1 {
		t.Fatalf("opening a case added %d records to the citizen's log, want the one check", len(recs)-before)
	}
	var check *auditv1.AccessRecord
	for _, r := range recs {
		if r.GetCaseId() == c.GetId() {
			check = r
		}
	}
	if check == nil {
		t.Fatalf("no record of case %s in the citizen's log", c.GetId())
	}
	checkRecord(t, check, first.Agency, j.ID, reg.Authority, reg.Dataset, auditv1.Decision_DECISION_RELEASED)
	if check.GetStep() != first.ID {
		t.Errorf("the check is logged at step %q, want %q", check.GetStep(), first.ID)
	}
}

func checkRecord(t *testing.T, r *auditv1.AccessRecord, agency, journey, authority, dataset string, d auditv1.Decision) {
	t.Helper()
	if r.GetKind() != auditv1.AccessKind_ACCESS_KIND_CASE_READ || r.GetAgency() != agency || r.GetJourney() != journey ||
		r.GetAuthority() != authority || r.GetDataset() != dataset || r.GetDecision() != d ||
		len(r.GetFields()) != 0 || len(r.GetDerived()) != 0 {
		t.Errorf("check record %v, want a %v case read by %s for %s of %s.%s with no fields", r, d, agency, journey, authority, dataset)
	}
}

// isRegisterCheck reports whether r is the broker's check with the registry's citizen register before
// a case was opened (release.CheckRegistered): a case read of the register's dataset. A read of the case
// itself names no authority.
func (st *stack) isRegisterCheck(r *auditv1.AccessRecord) bool {
	reg := st.Broker.Bundle().Registry.CitizenRegister
	return reg != nil && r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ &&
		r.GetAuthority() == reg.Authority && r.GetDataset() == reg.Dataset
}

// checksPerOpen is how many records opening one case writes to the citizen's log before anything is
// released: the register check when the registry names a citizen register, else none.
func (st *stack) checksPerOpen() int {
	if st.Broker.Bundle().Registry.CitizenRegister == nil {
		return 0
	}
	return 1
}

// splitChecks separates access records into the register checks (isRegisterCheck) and the rest, each
// in the order given.
func (st *stack) splitChecks(recs []*auditv1.AccessRecord) (rest, checks []*auditv1.AccessRecord) {
	for _, r := range recs {
		if st.isRegisterCheck(r) {
			checks = append(checks, r)
		} else {
			rest = append(rest, r)
		}
	}
	return rest, checks
}

// wantChecks fails t unless checks are the register checks of opening exactly the cases caseIDs
// (checksPerOpen each, passed, releasing no field).
func (st *stack) wantChecks(t testing.TB, checks []*auditv1.AccessRecord, caseIDs ...string) {
	t.Helper()
	var want, got []string
	for _, id := range caseIDs {
		for range st.checksPerOpen() {
			want = append(want, id)
		}
	}
	for _, c := range checks {
		got = append(got, c.GetCaseId())
		if c.GetDecision() != auditv1.Decision_DECISION_RELEASED || len(c.GetFields()) != 0 || len(c.GetDerived()) != 0 {
			t.Errorf("register check %v: want one that passed and released nothing", c)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("register checks of cases %v, want %v", got, want)
	}
}
