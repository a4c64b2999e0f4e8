package policy_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/aperture-gov/aperture/broker/policy"
)

// eventsFixture is a valid events.yaml for the lint fixture tree (registry lintRegistry, journey
// "fixture" whose first step is the municipality's). A "# <-" marks the line of the finding.
const eventsFixture = `events:
  - type: birth_registered
    label: {en: Birth registered, da: Fødsel registreret}
    published_by: [population]
proactive:
  - event: birth_registered
    journey: fixture
    agency: municipality
`

// TestLintEvents: every name in events.yaml is checked against the registry and the journeys, with
// file and line, and the valid fixture has no finding at all.
func TestLintEvents(t *testing.T) {
	for _, tc := range []struct {
		name, events, message string
	}{
		{"valid", eventsFixture, ""},
		{"unknown event", strings.Replace(eventsFixture, "  - event: birth_registered", "  - event: birth_registerd # <-", 1),
			`event "birth_registerd" is not declared under events (did you mean "birth_registered"?)`},
		{"unknown journey", strings.Replace(eventsFixture, "journey: fixture", "journey: fixtures # <-", 1),
			`journey "fixtures" does not exist (did you mean "fixture"?)`},
		{"unknown agency", strings.Replace(eventsFixture, "agency: municipality", "agency: municipalty # <-", 1),
			`agency "municipalty" is not in the registry (did you mean "municipality"?)`},
		{"unknown publishing authority", strings.Replace(eventsFixture, "published_by: [population]", "published_by: [populaton] # <-", 1),
			`authority "populaton" is not in the registry (did you mean "population"?)`},
		{"agency that does not open the journey", strings.Replace(eventsFixture, "agency: municipality", "agency: payments # <-", 1),
			`journey "fixture" starts with agency "municipality", so "payments" cannot open it`},
		{"event type declared twice", strings.Replace(eventsFixture, "proactive:", `  - type: birth_registered # <-
    label: {en: Again}
    published_by: [population]
proactive:`, 1), `event type "birth_registered" is declared twice`},
		{"schema", strings.Replace(eventsFixture, "    published_by: [population]\n", "    published_by: [] # <-\n", 1), "published_by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A second agency, so that an agency that exists but does not open the journey can be named.
			reg := strings.Replace(lintRegistry, "agencies:\n", "agencies:\n  - id: payments\n    name: {en: Payments}\n    identity: spiffe://t.test/agency/payments\n", 1)
			events := tc.events
			fsys := fstest.MapFS{
				"registry.yaml":         {Data: []byte(reg)},
				"journeys/fixture.yaml": {Data: []byte(header + step)},
				"events.yaml":           {Data: []byte(events)},
			}
			got, err := policy.Lint(fsys, "registry.yaml", exampleDescriptors())
			if err != nil {
				t.Fatal(err)
			}
			if tc.message == "" {
				for _, f := range got {
					t.Errorf("finding in a valid events.yaml: %s", f)
				}
				return
			}
			line, _ := markedLine(t, events, "")
			var found bool
			for _, f := range got {
				if f.File == policy.EventsFile && f.Severity == policy.SeverityError && strings.Contains(f.Message, tc.message) &&
					(f.Line == line || tc.name == "schema") {
					found = true
				}
			}
			if !found {
				t.Errorf("want an error at %s:%d containing %q; got:", policy.EventsFile, line, tc.message)
				for _, f := range got {
					t.Errorf("  %s", f)
				}
			}
		})
	}
}

// TestRealEvents: every proactive start of the shipped policies opens a journey at the agency of its
// first step, and every event is published by at least one registered authority.
func TestRealEvents(t *testing.T) {
	b := loadReal(t)
	if len(b.Events()) == 0 {
		t.Fatal("the shipped policies declare no life events")
	}
	for _, e := range b.Events() {
		for _, a := range e.PublishedBy {
			if _, ok := b.Registry.Authority(a); !ok {
				t.Errorf("event %s: publisher %q is not an authority", e.Type, a)
			}
		}
		for _, st := range e.Starts {
			j, ok := b.Journey(st.Journey)
			if !ok || j.Steps[0].Agency != st.Agency {
				t.Errorf("event %s starts %s at %s, which does not open it", e.Type, st.Journey, st.Agency)
			}
		}
	}
}
