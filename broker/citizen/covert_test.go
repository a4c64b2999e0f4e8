package citizen

import (
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
)

func TestRevealedAt(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	at := func(h int) *time.Time { x := t0.Add(time.Duration(h) * time.Hour); return &x }
	covert := func(r policy.Reveal) *policy.Step {
		return &policy.Step{ID: "check", Covert: &policy.Covert{MaxDays: 90, Reveal: r}}
	}
	open := func(steps ...cases.Step) *cases.Case {
		return &cases.Case{State: cases.StateOpen, Steps: steps, UpdatedAt: t0.Add(100 * time.Hour)}
	}
	closed := func(steps ...cases.Step) *cases.Case {
		c := open(steps...)
		c.State = cases.StateClosed
		return c
	}
	current := cases.Step{ID: "check", State: cases.StepCurrent, StartedAt: at(0)}
	done := cases.Step{ID: "check", State: cases.StepCompleted, StartedAt: at(0), CompletedAt: at(5)}
	hearing := cases.Step{ID: "hear", State: cases.StepCurrent, StartedAt: at(5)}
	pending := cases.Step{ID: "hear", State: cases.StepPending}
	skipped := cases.Step{ID: "hear", State: cases.StepSkipped}

	for _, tc := range []struct {
		name string
		st   *policy.Step
		cs   *cases.Case
		want *time.Time
	}{
		{"open case at the covert step", covert(policy.RevealCaseClosed), open(current, pending), nil},
		{"case-closed: a later step does not reveal", covert(policy.RevealCaseClosed), open(done, hearing), nil},
		{"case-closed: closing reveals", covert(policy.RevealCaseClosed), closed(done, skipped), at(100)},
		{"next-step: the hearing reveals", covert(policy.RevealNextStep), open(done, hearing), at(5)},
		{"next-step: closing before the hearing reveals", covert(policy.RevealNextStep), closed(done, skipped), at(100)},
		{"next-step: still at the covert step", covert(policy.RevealNextStep), open(current, pending), nil},
		{"max-days: closing does not reveal", covert(policy.RevealMaxDays), closed(done, skipped), nil},
		{"max-days: the hearing does not reveal", covert(policy.RevealMaxDays), open(done, hearing), nil},
		{"not covert", &policy.Step{ID: "check"}, closed(done, skipped), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cases.RevealedAt(tc.st, tc.cs, 0)
			switch {
			case tc.want == nil && !got.IsZero():
				t.Errorf("revealed at %v, want not revealed", got)
			case tc.want != nil && !got.Equal(*tc.want):
				t.Errorf("revealed at %v, want %v", got, *tc.want)
			}
		})
	}
}
