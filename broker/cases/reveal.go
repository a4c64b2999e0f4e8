package cases

import (
	"time"

	"github.com/aperture-gov/aperture/broker/policy"
)

// RevealedAt is when the citizen is shown the accesses at covert step idx of c because the case
// reached the point its policy reveals them at, or the zero time while it has not.
//
// An access's hidden_until is fixed when it is logged (the policy's maximum delay, or a shorter one the
// caseworker chose). What can end the wait earlier is the case itself: by default a closed case hides
// nothing, and a journey that tells the citizen at a later step (a hearing before a decision) may
// reveal the check when that step begins. The transition that does so is logged
// (ACCESS_KIND_COVERT_REVEALED, see [EarlyReveals]); the citizen's view reads it from the case.
func RevealedAt(st *policy.Step, c *Case, idx int) time.Time {
	if st == nil || st.Covert == nil || idx < 0 || idx >= len(c.Steps) {
		return time.Time{}
	}
	var at time.Time
	if st.Covert.Reveal != policy.RevealMaxDays && c.State == StateClosed {
		at = c.UpdatedAt // the close is the case's last change
	}
	if st.Covert.Reveal == policy.RevealNextStep {
		for _, later := range c.Steps[idx+1:] {
			if later.StartedAt != nil && later.State != StepSkipped {
				if at.IsZero() || later.StartedAt.Before(at) {
					at = *later.StartedAt
				}
				break
			}
		}
	}
	return at
}

// RevealCause is the change of a case that shows a covert step's accesses early.
type RevealCause int

// The causes of an early reveal.
const (
	RevealClosed RevealCause = iota + 1
	RevealNextStep
)

// Reveal is one covert step whose accesses a transition shows the citizen.
type Reveal struct {
	Step  *policy.Step
	Cause RevealCause
}

// EarlyReveals lists the covert steps of j that the transition from prev to next reveals: hidden in
// prev, revealed in next. Their accesses still inside their hidden_until are shown early, so the
// transition must log that before it is stored.
func EarlyReveals(j *policy.Journey, prev, next *Case) []Reveal {
	if j == nil {
		return nil
	}
	var out []Reveal
	for i, cs := range next.Steps {
		st, _, ok := j.Step(cs.ID)
		if !ok || st.Covert == nil || i >= len(prev.Steps) {
			continue
		}
		if !RevealedAt(st, prev, i).IsZero() || RevealedAt(st, next, i).IsZero() {
			continue
		}
		cause := RevealNextStep
		if next.State == StateClosed {
			cause = RevealClosed
		}
		out = append(out, Reveal{Step: st, Cause: cause})
	}
	return out
}
