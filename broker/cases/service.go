package cases

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
)

// Service runs case operations for agencies: it checks who may do what and turns store errors into
// refusals a caseworker understands.
type Service struct {
	store      *Store
	policies   func() *policy.Bundle
	pseudonyms keys.Pseudonymizer
	now        func() time.Time
	log        *slog.Logger
}

// NewService returns a Service over store.
func NewService(store *Store, policies func() *policy.Bundle, pseudonyms keys.Pseudonymizer, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, policies: policies, pseudonyms: pseudonyms, now: now, log: log}
}

// Journey returns the journey of a case, if it is still in the policy.
func (s *Service) Journey(id string) *policy.Journey {
	j, _ := s.policies().Journey(id)
	return j
}

// Open starts journey for a citizen. Only the agency of the first step may open it.
func (s *Service) Open(ctx context.Context, agency, journey, citizenID string) (*Case, error) {
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
	if err := s.store.Create(ctx, c); err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; no case was opened")
	}
	s.log.Info("case opened", "case", c.ID, "journey", j.ID, "agency", agency)
	s.store.Publish(ctx, agency, EventCaseOpened, c, c.Steps[0], now)
	s.store.Publish(ctx, first.Agency, EventStepStarted, c, c.Steps[0], now)
	return c, nil
}

// Get returns a case the agency takes part in. To others it does not exist.
func (s *Service) Get(ctx context.Context, agency, id string) (*Case, error) {
	c, err := s.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && !c.Involves(agency)) {
		return nil, refusal.New(refusal.NotFound, "case %s does not exist", id)
	}
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable")
	}
	return c, nil
}

// List returns the agency's cases, newest first; with onlyCurrent, only those waiting for the agency.
func (s *Service) List(ctx context.Context, agency string, onlyCurrent bool) ([]*Case, error) {
	out, err := s.store.List(ctx, func(c *Case) bool {
		if onlyCurrent {
			cur, ok := c.CurrentStep()
			return ok && cur.Agency == agency
		}
		return c.Involves(agency)
	})
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable")
	}
	return out, nil
}

// Complete finishes the current step, which must be step and belong to agency.
func (s *Service) Complete(ctx context.Context, agency, caseworker, id, step string) (*Case, error) {
	c, err := s.Get(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	cur, ok := c.CurrentStep()
	if !ok {
		return nil, refusal.New(refusal.FailedPrecondition, "case %s is closed", id)
	}
	if cur.ID != step {
		return nil, refusal.New(refusal.FailedPrecondition, "step %q is not current; case %s is at step %q", step, id, cur.ID)
	}
	if cur.Agency != agency {
		return nil, refusal.New(refusal.PermissionDenied, "step %q is for agency %q, not %q", step, cur.Agency, agency)
	}
	now := s.now()
	doneIdx := c.Current
	if err := c.Complete(step, caseworker, now); err != nil {
		return nil, refusal.Wrap(refusal.Internal, err, "complete step")
	}
	if err := s.update(ctx, c); err != nil {
		return nil, err
	}
	s.log.Info("step completed", "case", c.ID, "step", step, "agency", agency)
	s.store.Publish(ctx, agency, EventStepCompleted, c, c.Steps[doneIdx], now)
	if next, ok := c.CurrentStep(); ok {
		s.store.Publish(ctx, next.Agency, EventStepStarted, c, next, now)
	} else {
		s.publishClosed(ctx, c, now)
	}
	return c, nil
}

// Close ends an open case early. The opener or the agency of the current step may close it.
func (s *Service) Close(ctx context.Context, agency, id, reason string) (*Case, error) {
	c, err := s.Get(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	cur, ok := c.CurrentStep()
	if !ok {
		return nil, refusal.New(refusal.FailedPrecondition, "case %s is already closed", id)
	}
	if agency != c.OpenedBy && agency != cur.Agency {
		return nil, refusal.New(refusal.PermissionDenied, "only the opening agency %q or the current step's agency %q may close case %s", c.OpenedBy, cur.Agency, id)
	}
	now := s.now()
	if err := c.Close(reason, now); err != nil {
		return nil, refusal.Wrap(refusal.Internal, err, "close case")
	}
	if err := s.update(ctx, c); err != nil {
		return nil, err
	}
	s.log.Info("case closed", "case", c.ID, "agency", agency)
	s.publishClosed(ctx, c, now)
	return c, nil
}

func (s *Service) update(ctx context.Context, c *Case) error {
	err := s.store.Update(ctx, c)
	switch {
	case errors.Is(err, ErrConflict):
		return refusal.Wrap(refusal.Aborted, err, "case %s changed at the same time; read it again and retry", c.ID)
	case err != nil:
		return refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; nothing changed")
	}
	return nil
}

// publishClosed tells every agency of the case that it closed.
func (s *Service) publishClosed(ctx context.Context, c *Case, now time.Time) {
	seen := map[string]bool{}
	for _, st := range c.Steps {
		if !seen[st.Agency] {
			seen[st.Agency] = true
			s.store.Publish(ctx, st.Agency, EventCaseClosed, c, st, now)
		}
	}
}
