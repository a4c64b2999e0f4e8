package citizen_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/policy"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestConsentLongerThanPolicyIsNotValid: a consent in the store that lasts longer than the step's
// current maximum (a grant from before the policy lowered it, or a record the grant path did not make)
// is shown to the citizen as not valid — in their consents, the preview and the case — and to the
// caseworker's explain, and the release is refused. A consent of exactly the maximum is valid
// everywhere. The journey and step come from the policy bundle.
func TestConsentLongerThanPolicyIsNotValid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j, cs := firstConsentStep(t, e.b.Bundle())
	c := e.citizen()
	kase := e.open(j.Steps[0].Agency, j.ID, anna)
	for _, s := range j.Steps {
		if s == cs {
			break
		}
		e.complete(s.Agency, kase.GetId(), s.ID)
	}
	pn := e.pn.Pseudonym(anna).Value
	granted := e.clock.Now().Add(-time.Hour)
	maxValidity := consent.MaxValidity(cs.Consent.MaxDays)

	for _, tc := range []struct {
		name     string
		validity time.Duration
		valid    bool
	}{
		{"a day longer than the maximum", maxValidity + 24*time.Hour, false},
		{"exactly the maximum", maxValidity, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.b.Consent.Grant(context.Background(), pn, j.ID, cs.ID, granted, tc.validity); err != nil {
				t.Fatal(err)
			}
			lc, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{})
			if err != nil || len(lc.GetConsents()) != 1 || lc.GetConsents()[0].GetValid() != tc.valid {
				t.Fatalf("ListConsents = %v, %v; want one consent, valid %v", lc.GetConsents(), err, tc.valid)
			}
			pv, err := c.PreviewConsent(as(tokAnna), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID})
			if err != nil || pv.GetCurrent().GetValid() != tc.valid {
				t.Fatalf("PreviewConsent current = %v, %v; want valid %v", pv.GetCurrent(), err, tc.valid)
			}
			gc, err := c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: kase.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range gc.GetCase().GetSteps() {
				if st.GetStep().GetId() == cs.ID && (!st.GetConsentRequired() || st.GetConsentGiven() != tc.valid) {
					t.Fatalf("case step %v; want consent given %v", st, tc.valid)
				}
			}
			ex, err := e.agency(cs.Agency).ExplainStep(cw("cw-9"), &brokerv1.ExplainStepRequest{CaseId: kase.GetId()})
			if err != nil || !ex.GetConsentRequired() || ex.GetConsentValid() != tc.valid {
				t.Fatalf("ExplainStep = %v, %v; want consent valid %v", ex, err, tc.valid)
			}
			rule := cs.Rules[0]
			_, err = e.agency(cs.Agency).Release(cw("cw-9"), &brokerv1.ReleaseRequest{CaseId: kase.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
			if tc.valid {
				if err != nil {
					t.Fatalf("release with a consent of exactly the maximum: %v", err)
				}
				return
			}
			wantCode(t, err, codes.FailedPrecondition, "longer than the policy allows")
		})
	}
}

// firstConsentStep is the first step in the bundle that needs consent, releases something and is not
// covert, with its journey.
func firstConsentStep(t *testing.T, b *policy.Bundle) (*policy.Journey, *policy.Step) {
	t.Helper()
	for _, j := range b.Journeys() {
		for _, s := range j.Steps {
			if s.Consent != nil && s.Covert == nil && len(s.Rules) > 0 {
				return j, s
			}
		}
	}
	t.Fatal("no journey in the policies has a non-covert step that needs consent")
	return nil, nil
}
