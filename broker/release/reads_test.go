package release_test

import (
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/release"
)

// covertJourney finds, in the policy, a journey with a covert step and a step after it that is not
// covert: the situations CovertPosition tells apart.
func covertJourney(t *testing.T, b *policy.Bundle) (j *policy.Journey, covert int) {
	t.Helper()
	for _, j := range b.Journeys() {
		for i, s := range j.Steps {
			if s.Covert != nil && i+1 < len(j.Steps) && j.Steps[i+1].Covert == nil {
				return j, i
			}
		}
	}
	t.Fatal("the policy has no journey with a covert step followed by an open one; the covert rules are untested")
	return nil, 0
}

// TestCovertPosition: anything logged about a case is hidden while the case is at a covert step, or
// closed at one until the step's accesses are all visible; not before and not after.
func TestCovertPosition(t *testing.T) {
	b := realBundle(t)
	j, k := covertJourney(t, b)
	covert := j.Steps[k]
	opened := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	atCovert := func() *cases.Case {
		c := cases.New(j, "0101901234", "pn", j.Steps[0].Agency, b.Version, opened)
		for _, s := range j.Steps[:k] {
			if err := c.Complete(s.ID, "cw", opened); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	afterCovert := atCovert()
	if err := afterCovert.Complete(covert.ID, "cw", opened); err != nil {
		t.Fatal(err)
	}
	closedAtCovert := atCovert()
	if err := closedAtCovert.Close("nothing found", opened); err != nil {
		t.Fatal(err)
	}
	closedLater := atCovert()
	if err := closedLater.Complete(covert.ID, "cw", opened); err != nil {
		t.Fatal(err)
	}
	if err := closedLater.Close("withdrawn", opened); err != nil {
		t.Fatal(err)
	}
	delay := covert.Covert.MaxDelay()
	for _, tc := range []struct {
		name string
		c    *cases.Case
		now  time.Time
		want string
	}{
		{"at the covert step", atCovert(), opened.Add(time.Hour), covert.ID},
		{"at the covert step after its delay (still running)", atCovert(), opened.Add(2 * delay), covert.ID},
		{"at the open step after it", afterCovert, opened.Add(time.Hour), ""},
		{"closed at the covert step", closedAtCovert, opened.Add(time.Hour), covert.ID},
		{"closed at the covert step, delay over", closedAtCovert, opened.Add(delay), ""},
		{"closed after the covert step", closedLater, opened.Add(time.Hour), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stepID(release.CovertPosition(b, tc.c, tc.now)); got != tc.want {
				t.Fatalf("CovertPosition = %q, want %q", got, tc.want)
			}
		})
	}
}
