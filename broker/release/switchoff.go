package release

import (
	"context"
	"errors"

	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Switches reads citizens' switch-offs (switchoff.Store).
type Switches interface {
	Off(ctx context.Context, pseudonym, journey, step string) (switchoff.Scope, error)
}

// switchedOff is the refusal of a release at an optional step the citizen switched off, or whose
// switch cannot be verified or read; nil when the step may release.
func (s *Service) switchedOff(ctx context.Context, pseudonym, journey, step string) *refusal.Error {
	if s.cfg.Switches == nil {
		return SwitchRefusal(switchoff.ScopeNone, errors.New("no switch-off store configured"), journey, step)
	}
	sctx, cancel := s.stateCtx(ctx)
	defer cancel()
	scope, err := s.cfg.Switches.Off(sctx, pseudonym, journey, step)
	return SwitchRefusal(scope, err, journey, step)
}

// SwitchRefusal decides an optional step given what Switches.Off answered: nil when the citizen has not
// switched it off. A switch that does not authenticate refuses (the citizen may have said no); one that
// cannot be read is Unavailable. `aperture policy test` runs the same function.
func SwitchRefusal(scope switchoff.Scope, err error, journey, step string) *refusal.Error {
	switch {
	case errors.Is(err, switchoff.ErrUnverified):
		return refusal.Wrap(refusal.FailedPrecondition, err, "step %q of journey %q is optional and the citizen's choice to switch it off or not cannot be verified; nothing was released", step, journey).
			Because(auditv1.RefusalReason_REFUSAL_REASON_SWITCH_UNVERIFIED, "journey", journey, "step", step)
	case err != nil:
		return refusal.Wrap(refusal.Unavailable, err, "the citizen's switch-offs are unavailable; nothing was released").
			Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	case scope == switchoff.ScopeAll:
		return refusal.New(refusal.FailedPrecondition, "step %q of journey %q is optional and the citizen has switched off optional steps in all journeys", step, journey).
			Because(auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF, "journey", journey, "step", step, "scope", string(scope))
	case scope == switchoff.ScopeStep:
		return refusal.New(refusal.FailedPrecondition, "step %q of journey %q is optional and the citizen has switched this step off", step, journey).
			Because(auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF, "journey", journey, "step", step, "scope", string(scope))
	case scope == switchoff.ScopeJourney:
		return refusal.New(refusal.FailedPrecondition, "step %q of journey %q is optional and the citizen has switched it off", step, journey).
			Because(auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF, "journey", journey, "step", step, "scope", string(scope))
	}
	return nil
}
