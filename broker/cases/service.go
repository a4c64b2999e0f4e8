package cases

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Service runs case operations for agencies: it checks who may do what and turns store errors into
// refusals a caseworker understands.
type Service struct {
	store      *Store
	policies   func() *policy.Bundle
	pseudonyms keys.Pseudonymizer
	switches   Switches
	now        func() time.Time
	log        *slog.Logger
}

// NewService returns a Service over store. switches is asked before a life event opens a journey the
// citizen may decline (a whole-optional journey); without it such a journey is not opened.
func NewService(store *Store, policies func() *policy.Bundle, pseudonyms keys.Pseudonymizer, switches Switches, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, policies: policies, pseudonyms: pseudonyms, switches: switches, now: now, log: log}
}

// Journey returns the journey of a case, if it is still in the policy.
func (s *Service) Journey(id string) *policy.Journey {
	j, _ := s.policies().Journey(id)
	return j
}

// Open starts journey for a citizen. Only the agency of the first step may open it.
//
// Each before hook runs, in order, on the case about to be stored (after the journey and agency are
// checked); an error from one is returned as it is and nothing is stored.
func (s *Service) Open(ctx context.Context, agency, journey, citizenID string, before ...func(*Case) error) (*Case, error) {
	b := s.policies()
	j, ok := b.Journey(journey)
	if !ok {
		return nil, refusal.New(refusal.NotFound, "there is no journey %q", journey)
	}
	first := j.Steps[0]
	if first.Agency != agency {
		return nil, refusal.New(refusal.PermissionDenied, "journey %q starts with agency %q, so %q cannot open it", j.ID, first.Agency, agency)
	}
	now := s.now()
	c := New(j, citizenID, s.pseudonyms.Pseudonym(citizenID).Value, agency, b.Version, now)
	for _, check := range before {
		if err := check(c); err != nil {
			return nil, err
		}
	}
	events := []Event{NewEvent(EventCaseOpened, agency, c.Steps[0], now), NewEvent(EventStepStarted, first.Agency, c.Steps[0], now)}
	if err := s.store.Create(ctx, c, events...); err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; no case was opened").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	s.log.Info("case opened", "case", c.ID, "journey", j.ID, "agency", agency)
	return c, nil
}

// ErrNotParticipant is the cause of the NotFound refusal an agency gets for a case in which none of the
// journey's steps is its own: to it the case does not exist, exactly as an unknown id, and the edge
// records the attempt in the operator's security log (never in the citizen's access log: the citizen
// is not told that someone probed a case id, and the prober is not told that the id exists).
var ErrNotParticipant = errors.New("agency takes no part in the case")

// load returns the case if agency takes part in it; to any other agency it does not exist.
func (s *Service) load(ctx context.Context, agency, id string) (*Case, error) {
	c, err := s.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, refusal.New(refusal.NotFound, "case %s does not exist", id).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_NOT_FOUND)
	}
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	if !c.Involves(agency) {
		return nil, refusal.Wrap(refusal.NotFound, ErrNotParticipant, "case %s does not exist", id).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_NOT_FOUND)
	}
	return c, nil
}

// Reached reports whether one of agency's steps of c is current or done (or was current when the case
// closed early): only from then on may the agency see the case, and with it whom it is about. An agency
// of a later step learns of the case when its step starts, not when the case is opened.
func Reached(c *Case, agency string) bool {
	for _, st := range c.Steps {
		if st.Agency == agency && st.StartedAt != nil {
			return true
		}
	}
	return false
}

// Get returns a case one of whose steps for agency is current or done. To other agencies it does not
// exist (the same NotFound as an unknown id).
func (s *Service) Get(ctx context.Context, agency, id string) (*Case, error) {
	c, err := s.load(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	if !Reached(c, agency) {
		return nil, refusal.New(refusal.NotFound, "case %s does not exist", id).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_NOT_FOUND)
	}
	return c, nil
}

// List returns a page of the cases the agency may see (Reached), newest first, after the case with id
// after ("" for the first page); with onlyCurrent, only those waiting for the agency. more says whether
// another page may follow (it may turn out empty).
func (s *Service) List(ctx context.Context, agency string, onlyCurrent bool, after string, limit int) (page []*Case, more bool, err error) {
	page, more, err = s.store.Page(ctx, agency, after, limit, func(c *Case) bool {
		if onlyCurrent {
			cur, ok := c.CurrentStep()
			return ok && cur.Agency == agency
		}
		return true
	})
	if err != nil {
		return nil, false, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	return page, more, nil
}

// Before is a hook that runs on a transition after it is checked and made in memory (prev is the
// case as read, next as it will be stored) and before it is stored: an error from it is returned as
// it is and nothing is stored. The broker logs early reveals of covert accesses there (fail closed).
type Before func(ctx context.Context, prev, next *Case) error

// Complete finishes the current step, which must be step and belong to agency. Each before hook runs,
// in order, before the change is stored.
func (s *Service) Complete(ctx context.Context, agency, caseworker, id, step string, before ...Before) (*Case, error) {
	c, err := s.load(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	cur, ok := c.CurrentStep()
	if !ok {
		return nil, refusal.New(refusal.FailedPrecondition, "case %s is closed", id).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_CLOSED, "case", id)
	}
	if cur.ID != step {
		return nil, refusal.New(refusal.FailedPrecondition, "step %q is not current; case %s is at step %q", step, id, cur.ID).Because(auditv1.RefusalReason_REFUSAL_REASON_STEP_NOT_CURRENT, "step", cur.ID)
	}
	if cur.Agency != agency {
		return nil, refusal.New(refusal.PermissionDenied, "step %q is for agency %q, not %q", step, cur.Agency, agency).Because(auditv1.RefusalReason_REFUSAL_REASON_STEP_NOT_CURRENT, "step", step, "agency", cur.Agency)
	}
	now := s.now()
	doneIdx := c.Current
	prev := c.clone()
	if err := c.Complete(step, caseworker, now); err != nil {
		return nil, refusal.Wrap(refusal.Internal, err, "complete step")
	}
	if err := runBefore(ctx, before, prev, c); err != nil {
		return nil, err
	}
	events := []Event{NewEvent(EventStepCompleted, agency, c.Steps[doneIdx], now)}
	if next, ok := c.CurrentStep(); ok {
		events = append(events, NewEvent(EventStepStarted, next.Agency, next, now))
	} else {
		events = append(events, closedEvents(c, now)...)
	}
	if err := s.update(ctx, c, events); err != nil {
		return nil, err
	}
	s.log.Info("step completed", "case", c.ID, "step", step, "agency", agency)
	return c, nil
}

// Close ends an open case early. The opener or the agency of the current step may close it. Each
// before hook runs, in order, before the change is stored.
func (s *Service) Close(ctx context.Context, agency, id, reason string, before ...Before) (*Case, error) {
	c, err := s.load(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	cur, ok := c.CurrentStep()
	if !ok {
		return nil, refusal.New(refusal.FailedPrecondition, "case %s is already closed", id).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_CLOSED, "case", id)
	}
	if agency != c.OpenedBy && agency != cur.Agency {
		return nil, refusal.New(refusal.PermissionDenied, "only the opening agency %q or the current step's agency %q may close case %s", c.OpenedBy, cur.Agency, id)
	}
	now := s.now()
	prev := c.clone()
	if err := c.Close(reason, now); err != nil {
		return nil, refusal.Wrap(refusal.Internal, err, "close case")
	}
	if err := runBefore(ctx, before, prev, c); err != nil {
		return nil, err
	}
	if err := s.update(ctx, c, closedEvents(c, now)); err != nil {
		return nil, err
	}
	s.log.Info("case closed", "case", c.ID, "agency", agency)
	return c, nil
}

func runBefore(ctx context.Context, before []Before, prev, next *Case) error {
	for _, b := range before {
		if err := b(ctx, prev, next); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) update(ctx context.Context, c *Case, events []Event) error {
	err := s.store.Update(ctx, c, events...)
	switch {
	case errors.Is(err, ErrConflict):
		return refusal.Wrap(refusal.Aborted, err, "case %s changed at the same time; read it again and retry", c.ID)
	case err != nil:
		return refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; nothing changed").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	return nil
}

// closedEvents tell every agency of the case that it closed.
func closedEvents(c *Case, now time.Time) []Event {
	var out []Event
	seen := map[string]bool{}
	for _, st := range c.Steps {
		if !seen[st.Agency] {
			seen[st.Agency] = true
			out = append(out, NewEvent(EventCaseClosed, st.Agency, st, now))
		}
	}
	return out
}
