package cases_test

import (
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
)

// TestEarlyReveals: which transitions show a covert step's accesses before their hidden_until, and why.
// The transitions are made with the case's own methods, as the service makes them.
func TestEarlyReveals(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	covertJourney := func(r policy.Reveal) *policy.Journey {
		return &policy.Journey{ID: "j", Steps: []*policy.Step{
			{ID: "check", Agency: "a", Covert: &policy.Covert{MaxDays: 90, Reveal: r}},
			{ID: "hear", Agency: "a"},
			{ID: "decide", Agency: "b"},
		}}
	}
	type move func(c *cases.Case) error
	complete := func(step string) move {
		return func(c *cases.Case) error { return c.Complete(step, "cw", t0.Add(time.Hour)) }
	}
	closeNow := func(c *cases.Case) error { return c.Close("done", t0.Add(time.Hour)) }
	for _, tc := range []struct {
		name   string
		reveal policy.Reveal
		before []move // brings the case to where the transition starts
		move   move
		want   cases.RevealCause // 0: nothing revealed
	}{
		{"next-step: the next step begins", policy.RevealNextStep, nil, complete("check"), cases.RevealNextStep},
		{"next-step: closed at the covert step", policy.RevealNextStep, nil, closeNow, cases.RevealClosed},
		{"next-step: already revealed when the step after begins", policy.RevealNextStep, []move{complete("check")}, complete("hear"), 0},
		{"case-closed: the next step begins, nothing yet", policy.RevealCaseClosed, nil, complete("check"), 0},
		{"case-closed: closed early", policy.RevealCaseClosed, []move{complete("check")}, closeNow, cases.RevealClosed},
		{"case-closed: the last step completed", policy.RevealCaseClosed, []move{complete("check"), complete("hear")}, complete("decide"), cases.RevealClosed},
		{"max-days: never early", policy.RevealMaxDays, nil, closeNow, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := covertJourney(tc.reveal)
			c := cases.New(j, "citizen", "ps", "a", "v1", t0)
			for _, m := range tc.before {
				if err := m(c); err != nil {
					t.Fatal(err)
				}
			}
			prev := *c
			prev.Steps = append([]cases.Step(nil), c.Steps...)
			if err := tc.move(c); err != nil {
				t.Fatal(err)
			}
			got := cases.EarlyReveals(j, &prev, c)
			switch {
			case tc.want == 0 && len(got) != 0:
				t.Errorf("revealed %+v, want nothing", got)
			case tc.want != 0 && (len(got) != 1 || got[0].Step.ID != "check" || got[0].Cause != tc.want):
				t.Errorf("revealed %+v, want the covert step with cause %v", got, tc.want)
			}
		})
	}
}
