package citizen

import (
	"context"
	"errors"

	"github.com/aperture-gov/aperture/broker/answers"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Answers reads the answers of released facts kept for the citizen (package answers): they are values,
// so they are not in the access log.
type Answers interface {
	Get(ctx context.Context, pseudonym, accessID string) (map[string]bool, error)
}

// addAnswers sets the answer of each fact of a, listed from rec in the log of the citizen pseudonym
// names, that the citizen may see: a released bool fact whose policy (now, as when it was released)
// does not say no, and whose answer is kept. A missing or unreadable answer leaves the fact as a check
// without its answer; the access is listed all the same (the record, not the answer, is what the
// citizen's log guarantees).
func (s *Service) addAnswers(ctx context.Context, n names, pseudonym string, rec *auditv1.AccessRecord, a *citizenv1.Access) {
	if s.cfg.Answers == nil || len(a.GetFacts()) == 0 || rec.GetDecision() != auditv1.Decision_DECISION_RELEASED ||
		rec.GetCitizenPseudonym() != pseudonym {
		return
	}
	j, ok := n.b.Journey(rec.GetJourney())
	if !ok {
		return
	}
	st, _, ok := j.Step(rec.GetStep())
	if !ok {
		return
	}
	rule, ok := st.Rule(rec.GetAuthority(), rec.GetDataset())
	if !ok {
		return
	}
	got, err := s.cfg.Answers.Get(ctx, pseudonym, rec.GetId())
	if err != nil {
		if !errors.Is(err, answers.ErrNotFound) {
			s.log.Warn("fact answers unreadable; listed without them", "access_id", rec.GetId(), "err", err)
		}
		return
	}
	for _, f := range a.GetFacts() {
		v, kept := got[f.GetName()]
		if !kept {
			continue
		}
		for _, d := range rule.Derived {
			if d.Name == f.GetName() && d.ShowsAnswer() {
				f.Answer = &v
			}
		}
	}
}
