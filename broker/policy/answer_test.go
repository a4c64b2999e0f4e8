package policy_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/aperture-gov/aperture/broker/policy"
)

// TestCitizenSeesAnswer: the citizen is shown a bool fact's answer unless the policy says no, and never
// the value of a fact that is not a bool.
func TestCitizenSeesAnswer(t *testing.T) {
	fsys := realRegistryFS(t)
	fsys["journeys/fixture.yaml"] = &fstest.MapFile{Data: []byte(header + strings.Replace(step, "fields: [name]", `fields: [name]
        derived:
          - name: shown
            description: {en: Shown.}
            type: bool
            expression: size(record.household) > 1
          - name: hidden
            description: {en: Hidden.}
            type: bool
            citizen_sees_answer: false
            expression: size(record.household) > 1
          - name: said_yes
            description: {en: Said yes.}
            type: bool
            citizen_sees_answer: true
            expression: size(record.household) > 1
          - name: count
            description: {en: Count.}
            type: int
            range: {min: 0, max: 10}
            expression: size(record.household)`, 1))}
	reg, err := policy.LoadRegistry(fsys, "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.LoadBundle(fsys, reg, exampleDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	j, _ := b.Journey("fixture")
	r, ok := j.Steps[0].Rule("population", "person")
	if !ok {
		t.Fatal("fixture has no population.person rule")
	}
	want := map[string]bool{"shown": true, "hidden": false, "said_yes": true, "count": false}
	for _, d := range r.Derived {
		if got := d.ShowsAnswer(); got != want[d.Name] {
			t.Errorf("fact %s: ShowsAnswer = %v, want %v", d.Name, got, want[d.Name])
		}
		delete(want, d.Name)
	}
	if len(want) > 0 {
		t.Errorf("facts not loaded: %v", want)
	}
}
