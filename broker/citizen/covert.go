package citizen

import (
	"context"
	"errors"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// revealedAt is when the citizen is shown the accesses at covert step idx of cs because the case
// reached the point its policy reveals them at, or the zero time while it has not.
//
// An access's hidden_until is fixed when it is logged (the policy's maximum delay, or a shorter one the
// caseworker chose). What can end the wait earlier is the case itself: by default a closed case hides
// nothing, and a journey that tells the citizen at a later step (a hearing before a decision) may
// reveal the check when that step begins. Only the case's current state tells, so it is decided when
// the citizen reads, not when the access is logged.
func revealedAt(st *policy.Step, cs *cases.Case, idx int) time.Time {
	if st == nil || st.Covert == nil || idx < 0 || idx >= len(cs.Steps) {
		return time.Time{}
	}
	var at time.Time
	if st.Covert.Reveal != policy.RevealMaxDays && cs.State == cases.StateClosed {
		at = cs.UpdatedAt // the close is the case's last change
	}
	if st.Covert.Reveal == policy.RevealNextStep {
		for _, later := range cs.Steps[idx+1:] {
			if later.StartedAt != nil && later.State != cases.StepSkipped {
				if at.IsZero() || later.StartedAt.Before(at) {
					at = *later.StartedAt
				}
				break
			}
		}
	}
	return at
}

// covertView tells whether an access is still kept from the citizen, looking up each case at most
// once per request.
type covertView struct {
	s   *Service
	now time.Time
	// cases read so far (made on the first hidden access); a nil value: the case is gone (or never
	// verified), so nothing is revealed early.
	cases map[string]*cases.Case
}

func (s *Service) covertView(now time.Time) *covertView {
	return &covertView{s: s, now: now}
}

// hidden reports whether rec is still kept from the citizen: it was made at a covert step, its maximum
// delay has not passed, and its case has not reached the point its policy reveals it at. A case that
// cannot be read keeps the access hidden (it appears at the latest when its delay ends) and is logged:
// showing a covert access early can spoil a lawful check, showing it late cannot be undone either,
// but it is bounded by the policy.
func (v *covertView) hidden(ctx context.Context, rec *auditv1.AccessRecord) bool {
	if rec.GetHiddenUntil() == nil || !rec.GetHiddenUntil().AsTime().After(v.now) {
		return false
	}
	if v.cases == nil {
		v.cases = map[string]*cases.Case{}
	}
	cs, ok := v.cases[rec.GetCaseId()]
	if !ok {
		got, err := v.s.cfg.Cases.Get(ctx, rec.GetCaseId())
		if err != nil && !errors.Is(err, cases.ErrNotFound) {
			v.s.cfg.Logger.Warn("covert access kept hidden: its case cannot be read", "case", rec.GetCaseId(), "err", err)
		}
		v.cases[rec.GetCaseId()], cs = got, got
	}
	if cs == nil {
		return true
	}
	j, ok := v.s.cfg.Policies().Journey(cs.Journey)
	if !ok {
		return true
	}
	st, _, ok := j.Step(rec.GetStep())
	if !ok {
		return true
	}
	at := revealedAt(st, cs, stepIndex(cs, rec.GetStep()))
	return at.IsZero() || at.After(v.now)
}

// stepIndex is the index of step id in cs, or -1.
func stepIndex(cs *cases.Case, id string) int {
	for i, st := range cs.Steps {
		if st.ID == id {
			return i
		}
	}
	return -1
}
