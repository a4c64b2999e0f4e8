package release

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// History is what a Log may also offer: one citizen's records, newest first (accesslog.Log.List). The
// broker finds there the covert accesses a transition reveals early.
type History interface {
	List(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]*auditv1.AccessRecord, string, error)
}

// errNoHistory means the Log cannot list a citizen's records, so an early reveal cannot be counted.
var errNoHistory = errors.New("the access log cannot list records")

const (
	// revealPage is the log page read while counting a case's hidden accesses.
	revealPage = 500
	// clockSlack is how far out of time order records may be in the log.
	clockSlack = time.Minute
)

// LogCovertReveals is a cases.Before hook: when the transition from prev to next shows the citizen the
// accesses of a covert step before their hidden_until (the case closes, or a later step begins, as the
// step's reveal rule says), it writes one ACCESS_KIND_COVERT_REVEALED record per such step with the
// number of accesses revealed, and returns nil only once they are durable. Otherwise the transition
// MUST NOT be stored (the error is an Unavailable refusal): a reveal the log does not hold would be
// one the yearly report cannot count. A covert step with no access still hidden gets no record.
func (s *Service) LogCovertReveals(ctx context.Context, caller Caller, prev, next *cases.Case) error {
	b := s.cfg.Policies()
	j, _ := b.Journey(next.Journey)
	reveals := cases.EarlyReveals(j, prev, next)
	if len(reveals) == 0 {
		return nil
	}
	now := next.UpdatedAt
	pn := s.cfg.Pseudonyms.Pseudonym(next.CitizenID)
	counts, err := s.hiddenAccesses(ctx, pn.Value, next)
	if err != nil {
		return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; the case was not changed").
			Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	for _, r := range reveals {
		n := counts[r.Step.ID]
		if n == 0 {
			continue
		}
		cause := auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_NEXT_STEP
		if r.Cause == cases.RevealClosed {
			cause = auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_CASE_CLOSED
		}
		// The caseworker who made the change, when the agency is the covert step's own: another agency
		// (the one that opened the case and closed it) is not named beside it.
		caseworker := ""
		if caller.Agency == r.Step.Agency {
			caseworker = caller.Caseworker
		}
		rec := &auditv1.AccessRecord{
			Id:               ids.New("acc", now),
			Time:             timestamppb.New(now),
			CitizenPseudonym: pn.Value,
			PseudonymKeyId:   pn.KeyID,
			Kind:             auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED,
			Agency:           r.Step.Agency,
			Caseworker:       caseworker,
			CaseId:           next.ID,
			Journey:          next.Journey,
			Step:             r.Step.ID,
			Purpose:          r.Step.Purpose.EN,
			LegalBasis:       r.Step.LegalBasis,
			Decision:         auditv1.Decision_DECISION_RELEASED,
			PolicyVersion:    b.Version,
			CovertReveal:     &auditv1.CovertReveal{Accesses: uint32(n), Cause: cause},
		}
		if err := s.appendRecord(ctx, rec); err != nil {
			return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; the case was not changed").
				Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
		}
	}
	return nil
}

// hiddenAccesses counts, per step, the records of case c in the citizen's log that are still hidden
// when c changes (c.UpdatedAt). It reads newest first and stops at the records from well before the
// case was opened (clockSlack: records of concurrent decisions and replicas' clocks are not in strict
// time order).
func (s *Service) hiddenAccesses(ctx context.Context, pseudonym string, c *cases.Case) (map[string]int, error) {
	h, ok := s.cfg.Log.(History)
	if !ok {
		return nil, errNoHistory
	}
	at := c.UpdatedAt
	opened := c.OpenedAt.Add(-clockSlack)
	counts := map[string]int{}
	token := ""
	for {
		recs, next, err := h.List(ctx, pseudonym, revealPage, token)
		if err != nil {
			return nil, fmt.Errorf("list the citizen's records: %w", err)
		}
		for _, r := range recs {
			if r.GetTime().AsTime().Before(opened) {
				return counts, nil
			}
			if r.GetCaseId() == c.ID && r.GetHiddenUntil() != nil && r.GetHiddenUntil().AsTime().After(at) &&
				r.GetKind() != auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED {
				counts[r.GetStep()]++
			}
		}
		if next == "" {
			return counts, nil
		}
		token = next
	}
}
