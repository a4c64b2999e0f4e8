package citizen_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// splitReveals separates the early reveals of covert steps (ACCESS_KIND_COVERT_REVEALED) from the rest.
func splitReveals(as []*citizenv1.Access) (rest, reveals []*citizenv1.Access) {
	for _, a := range as {
		if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED {
			reveals = append(reveals, a)
		} else {
			rest = append(rest, a)
		}
	}
	return rest, reveals
}

// TestRevealRecordWaitsForTheCase: the broker writes the reveal record before it stores the change of
// the case, so a change that then fails (another replica changed the case first) leaves a record that
// speaks of checks still hidden. The citizen is not shown it until the case says the step is revealed;
// a reveal record whose case is gone is shown.
func TestRevealRecordWaitsForTheCase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var (
		j   *policy.Journey
		idx int
	)
	for _, cand := range e.b.Bundle().Journeys() {
		for i, st := range cand.Steps {
			if j == nil && st.Covert != nil && st.Covert.Reveal != policy.RevealMaxDays && st.Consent == nil && len(st.Rules) > 0 && i == 0 {
				j, idx = cand, i
			}
		}
	}
	if j == nil {
		t.Fatal("no journey starts with a covert step that a closed case reveals")
	}
	st := j.Steps[idx]
	cs := e.open(st.Agency, j.ID, anna)
	e.release(st.Agency, cs.GetId(), st.Rules[0].Authority, st.Rules[0].Dataset)
	dangling := func(caseID string) {
		pn := e.pn.Pseudonym(anna)
		now := e.clock.Now()
		if err := e.b.AccessLog().Append(context.Background(), &auditv1.AccessRecord{
			Id: ids.New("acc", now), Time: timestamppb.New(now), CitizenPseudonym: pn.Value, PseudonymKeyId: pn.KeyID,
			Kind: auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED, Agency: st.Agency, CaseId: caseID, Journey: j.ID, Step: st.ID,
			Decision:     auditv1.Decision_DECISION_RELEASED,
			CovertReveal: &auditv1.CovertReveal{Accesses: 1, Cause: auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_CASE_CLOSED},
		}); err != nil {
			t.Fatal(err)
		}
	}
	dangling(cs.GetId())
	if _, reveals := splitReveals(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})); len(reveals) != 0 {
		t.Fatalf("a reveal is shown while the case still hides the step: %v", reveals)
	}
	// The close that does happen writes its own record; then both are shown.
	if _, err := e.agency(st.Agency).CloseCase(cw("cw-x"), &brokerv1.CloseCaseRequest{CaseId: cs.GetId(), Reason: "nothing found"}); err != nil {
		t.Fatal(err)
	}
	rest, reveals := splitReveals(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
	if len(reveals) != 2 || len(rest) == 0 {
		t.Fatalf("after the close: %d reveals, %d other accesses", len(reveals), len(rest))
	}
	e.clock.advance(time.Minute)
	dangling("case_00000000000000000000000000")
	if _, reveals := splitReveals(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})); len(reveals) != 3 {
		t.Fatalf("a reveal of a case that is gone is not shown: %d reveals", len(reveals))
	}
}
