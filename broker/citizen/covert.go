package citizen

import (
	"context"
	"errors"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

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
//
// A record of an early reveal (ACCESS_KIND_COVERT_REVEALED) is written before the change of the case
// that reveals; should that change then fail (another replica changed the case first), the record
// would tell of checks still hidden. So it is shown only once the case says the step is revealed, or
// when the case (or its step) is no longer there to say otherwise: the reveal record has no
// hidden_until of its own to end the wait.
func (v *covertView) hidden(ctx context.Context, rec *auditv1.AccessRecord) bool {
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED {
		return v.stillHidden(ctx, rec, false)
	}
	if rec.GetHiddenUntil() == nil || !rec.GetHiddenUntil().AsTime().After(v.now) {
		return false
	}
	return v.stillHidden(ctx, rec, true)
}

// stillHidden reports whether the case of rec has not yet reached the point at which the policy
// reveals the accesses of rec's step; unknown is the answer when the case, its journey or the step
// cannot be found.
func (v *covertView) stillHidden(ctx context.Context, rec *auditv1.AccessRecord, unknown bool) bool {
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
		return unknown
	}
	j, ok := v.s.cfg.Policies().Journey(cs.Journey)
	if !ok {
		return unknown
	}
	st, _, ok := j.Step(rec.GetStep())
	if !ok {
		return unknown
	}
	at := cases.RevealedAt(st, cs, stepIndex(cs, rec.GetStep()))
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
