package release

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// LogCaseReads writes one ACCESS_KIND_CASE_READ record for every case in cs that caller is about to be
// shown: a case names its citizen, so reading it is an access the citizen sees, like a release. It
// returns nil only once every record is durable; otherwise the caller MUST NOT answer (the error is an
// Unavailable refusal). The records are appended concurrently so that a page of cases shares the log's
// group commit instead of paying one durable write each.
//
// A read while a case is at a covert step (or closed at one) is hidden from the citizen exactly like
// that step's own accesses: for the step's maximum delay, with the policy's reason.
func (s *Service) LogCaseReads(ctx context.Context, caller Caller, cs ...*cases.Case) error {
	if len(cs) == 0 {
		return nil
	}
	now := s.cfg.Now()
	b := s.cfg.Policies()
	recs := make([]*auditv1.AccessRecord, len(cs))
	for i, c := range cs {
		recs[i] = s.caseRead(b, c, caller, now)
	}
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() { errs[i] = s.cfg.Log.Append(ctx, rec) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; the case was not shown")
		}
	}
	return nil
}

// caseRead is the access record of caller reading case c at now. It names the agency's own step at the
// case (the current one if it is the agency's, else the agency's latest step reached), so that the
// citizen sees why the agency has the case.
func (s *Service) caseRead(b *policy.Bundle, c *cases.Case, caller Caller, now time.Time) *auditv1.AccessRecord {
	pn := s.cfg.Pseudonyms.Pseudonym(c.CitizenID)
	rec := &auditv1.AccessRecord{
		Id:               ids.New("acc", now),
		Time:             timestamppb.New(now),
		CitizenPseudonym: pn.Value,
		PseudonymKeyId:   pn.KeyID,
		Kind:             auditv1.AccessKind_ACCESS_KIND_CASE_READ,
		Agency:           caller.Agency,
		Caseworker:       caller.Caseworker,
		CaseId:           c.ID,
		Journey:          c.Journey,
		Decision:         auditv1.Decision_DECISION_RELEASED,
		PolicyVersion:    b.Version,
	}
	j, _ := b.Journey(c.Journey)
	if st := agencyStep(c, caller.Agency); st != "" {
		rec.Step = st
		if j != nil {
			if ps, _, ok := j.Step(st); ok {
				rec.Purpose, rec.LegalBasis = ps.Purpose.EN, ps.LegalBasis
			}
		}
	}
	hideAtCovert(b, c, now, rec)
	return rec
}

// agencyStep is the step of c that agency reads it for: the current step if it is the agency's, else
// the agency's latest step reached ("" if none).
func agencyStep(c *cases.Case, agency string) string {
	if cur, ok := c.CurrentStep(); ok && cur.Agency == agency {
		return cur.ID
	}
	id := ""
	for _, st := range c.Steps {
		if st.Agency == agency && st.StartedAt != nil {
			id = st.ID
		}
	}
	return id
}

// CovertPosition returns the policy step c is at at now, when that step is covert: the current step of
// an open case, or the last step a closed case reached (the one that was current when it closed) while
// that step's own accesses may still be hidden (up to its maximum delay after the case closed).
// Anything logged about the case while it is there — a release, a refusal from any agency, a read —
// would tell the citizen of the covert step, so it is hidden like the step's own accesses. It returns
// nil when the step is not covert or no longer in the policy.
func CovertPosition(b *policy.Bundle, c *cases.Case, now time.Time) *policy.Step {
	at, open := "", false
	if cur, ok := c.CurrentStep(); ok {
		at, open = cur.ID, true
	} else {
		for _, st := range c.Steps {
			if st.StartedAt != nil {
				at = st.ID
			}
		}
	}
	j, ok := b.Journey(c.Journey)
	if !ok || at == "" {
		return nil
	}
	st, _, ok := j.Step(at)
	if !ok || st.Covert == nil {
		return nil
	}
	if !open && !now.Before(c.UpdatedAt.Add(st.Covert.MaxDelay())) {
		return nil // every access of the step is visible by now; so is the case
	}
	return st
}

// hideAtCovert hides rec for the covert step's maximum delay when c is at (or closed at) a covert step,
// and names that step in rec when rec names none, so that the citizen's view finds the policy's reason.
func hideAtCovert(b *policy.Bundle, c *cases.Case, now time.Time, rec *auditv1.AccessRecord) {
	st := CovertPosition(b, c, now)
	if st == nil {
		return
	}
	if rec.Step == "" {
		rec.Step = st.ID
	}
	rec.HiddenUntil = timestamppb.New(now.Add(st.Covert.MaxDelay()))
	rec.HiddenReason = st.Covert.Reason.EN
}
