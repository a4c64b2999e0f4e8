package release

import (
	"context"
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/refusal"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// Explain says what the current step of a case may see and whether consent is in place. It reads no
// citizen data, so it is not an access and is not logged; like GetCase, it answers only an agency one of
// whose steps is current or done.
func (s *Service) Explain(ctx context.Context, caller Caller, caseID string) (*brokerv1.ExplainStepResponse, error) {
	c, err := s.cfg.Cases.Get(ctx, caseID)
	if errors.Is(err, cases.ErrNotFound) {
		return nil, refusal.New(refusal.NotFound, "case %s does not exist", caseID)
	}
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable")
	}
	if !c.Involves(caller.Agency) {
		return nil, refusal.Wrap(refusal.NotFound, cases.ErrNotParticipant, "case %s does not exist", caseID)
	}
	if !cases.Reached(c, caller.Agency) {
		// Like GetCase: an agency learns of a case (and where it is) when one of its steps starts.
		return nil, refusal.New(refusal.NotFound, "case %s does not exist", caseID)
	}
	j, step, ref := currentStep(s.cfg.Policies(), c)
	if ref != nil {
		return nil, ref
	}
	out := &brokerv1.ExplainStepResponse{
		CaseId: c.ID, Journey: j.ID, Step: step.ID, StepTitle: step.Title.EN, Agency: step.Agency,
		Role: step.Role, Purpose: step.Purpose.EN, LegalBasis: step.LegalBasis,
		CallerMayRelease: step.Agency == caller.Agency,
	}
	for _, r := range step.Rules {
		ar := &brokerv1.AllowedRelease{Authority: r.Authority, Dataset: r.Dataset, Fields: r.Fields}
		for _, d := range r.Derived {
			ar.Derived = append(ar.Derived, &brokerv1.DerivedFactInfo{Name: d.Name, Description: d.Description.EN})
		}
		out.Releases = append(out.Releases, ar)
	}
	if step.Consent != nil {
		out.ConsentRequired = true
		pn := s.cfg.Pseudonyms.Pseudonym(c.CitizenID)
		cn, err := s.cfg.Consents.Get(ctx, pn.Value, j.ID, step.ID)
		switch {
		case errors.Is(err, consent.ErrNotFound):
		case err != nil:
			return nil, refusal.Wrap(refusal.Unavailable, err, "consent state is unavailable")
		default:
			out.ConsentValid = cn.ValidAt(s.cfg.Now(), step.Consent.MaxDays)
			out.ConsentExpiresAt = timestamppb.New(cn.ExpiresAt)
		}
	}
	return out, nil
}
