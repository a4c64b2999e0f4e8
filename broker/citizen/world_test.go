package citizen_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aperture-gov/aperture/broker/policy"
)

// The finders here give a test the journey, step, agency or authority of the shape it needs, read from
// the policy bundle the broker loaded and its registry — never by the example policies' names, so
// that an architect who adds, renames or reshapes an example journey or authority leaves the tests
// meaning the same. Each fails the test saying which shape the policies lack.

// openJourney is the first journey whose first step is not covert and releases something: a case of
// it is the citizen's to see from its first access.
func openJourney(t *testing.T, b *policy.Bundle) *policy.Journey {
	t.Helper()
	for _, j := range b.Journeys() {
		if j.Steps[0].Covert == nil && len(j.Steps[0].Rules) > 0 {
			return j
		}
	}
	t.Fatal("the policies have no journey whose first step is not covert and releases something")
	return nil
}

// covertJourney is the first journey whose first step is covert and releases something and whose
// second step is not covert: a case the citizen does not see until the open step begins.
func covertJourney(t *testing.T, b *policy.Bundle) *policy.Journey {
	t.Helper()
	for _, j := range b.Journeys() {
		if len(j.Steps) > 1 && j.Steps[0].Covert != nil && len(j.Steps[0].Rules) > 0 && j.Steps[1].Covert == nil {
			return j
		}
	}
	t.Fatal("the policies have no journey whose first step is covert and releases something and whose second step is not covert")
	return nil
}

// caseJourney is a journey for following one case through the citizen's eyes: its first step is not
// covert and releases at least two datasets, one of them (rule facts) with fields and derived facts;
// its second step is not covert either, and a later step, not covert, needs consent (index consent).
func caseJourney(t *testing.T, b *policy.Bundle) (j *policy.Journey, facts, other *policy.Rule, consent int) {
	t.Helper()
	for _, j := range b.Journeys() {
		first := j.Steps[0]
		if first.Covert != nil || len(first.Rules) < 2 || len(j.Steps) < 2 || j.Steps[1].Covert != nil {
			continue
		}
		k := slices.IndexFunc(j.Steps, func(s *policy.Step) bool { return s.Consent != nil && s.Covert == nil })
		if k < 1 {
			continue
		}
		for i, r := range first.Rules {
			if len(r.Fields) > 0 && len(r.Derived) > 0 {
				return j, r, first.Rules[(i+1)%len(first.Rules)], k
			}
		}
	}
	t.Fatal("the policies have no journey whose first two steps are not covert, whose first step releases two datasets, " +
		"one with fields and facts, and with a later open step that needs consent")
	return nil, nil, nil, 0
}

// indexOfStep is the index of step s in journey j.
func indexOfStep(t *testing.T, j *policy.Journey, s *policy.Step) int {
	t.Helper()
	_, k, ok := j.Step(s.ID)
	if !ok {
		t.Fatalf("journey %s has no step %s", j.ID, s.ID)
	}
	return k
}

// stepWithoutConsent is a step of j that needs no consent.
func stepWithoutConsent(t *testing.T, j *policy.Journey) *policy.Step {
	t.Helper()
	for _, s := range j.Steps {
		if s.Consent == nil {
			return s
		}
	}
	t.Fatalf("every step of journey %s needs consent; the test needs one that does not", j.ID)
	return nil
}

// otherAgency is an agency of the registry other than id.
func otherAgency(t *testing.T, b *policy.Bundle, id string) string {
	t.Helper()
	for _, a := range b.Registry.Agencies {
		if a.ID != id {
			return a.ID
		}
	}
	t.Fatalf("the registry has no agency besides %s", id)
	return ""
}

// anyAgency is the registry's first agency.
func anyAgency(t testing.TB, b *policy.Bundle) string {
	t.Helper()
	if len(b.Registry.Agencies) == 0 {
		t.Fatal("the registry names no agency")
	}
	return b.Registry.Agencies[0].ID
}

// authorityIDs are the ids of the registry's authorities; the test needs at least n.
func authorityIDs(t *testing.T, b *policy.Bundle, n int) []string {
	t.Helper()
	var out []string
	for _, a := range b.Registry.Authorities {
		out = append(out, a.ID)
	}
	if len(out) < n {
		t.Fatalf("the registry names %d authorities; the test needs %d", len(out), n)
	}
	return out
}

// someDataset is the first dataset of the registry's first authority that serves one.
func someDataset(t *testing.T, b *policy.Bundle) (authority, dataset string) {
	t.Helper()
	for _, a := range b.Registry.Authorities {
		if len(a.Datasets) > 0 {
			return a.ID, a.Datasets[0]
		}
	}
	t.Fatal("no authority in the registry serves a dataset")
	return "", ""
}

// foreignDataset is the name of a dataset another authority serves and authority does not.
func foreignDataset(t *testing.T, b *policy.Bundle, authority string) string {
	t.Helper()
	own, _ := b.Registry.Authority(authority)
	for _, a := range b.Registry.Authorities {
		for _, ds := range a.Datasets {
			if own == nil || !slices.Contains(own.Datasets, ds) {
				return ds
			}
		}
	}
	t.Fatalf("every dataset in the registry is also one of %s's", authority)
	return ""
}

// namedDataset is a dataset of the registry whose test record (fixtures) carries the citizen's given
// name, so that a test can tell whose record an answer is.
func namedDataset(t *testing.T, b *policy.Bundle) (authority, dataset string) {
	t.Helper()
	for _, a := range b.Registry.Authorities {
		for _, ds := range a.Datasets {
			if strings.Contains(fixtures[a.ID+"."+ds], "%[2]s") {
				return a.ID, ds
			}
		}
	}
	t.Fatal("no dataset of the registry has a test record carrying the citizen's given name (fixtures)")
	return "", ""
}

// pathOf is the dotted path of the first string leaf of rec equal to value ("" if none), looking
// through nested records and lists.
func pathOf(rec map[string]any, value string) string {
	keys := make([]string, 0, len(rec))
	for k := range rec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if p := pathIn(rec[k], value); p != "" {
			return strings.TrimSuffix(k+"."+p, ".")
		}
	}
	return ""
}

// pathIn is pathOf for any JSON value: "." when v itself is value.
func pathIn(v any, value string) string {
	switch v := v.(type) {
	case string:
		if v == value {
			return "."
		}
	case map[string]any:
		return pathOf(v, value)
	case []any:
		for _, x := range v {
			if p := pathIn(x, value); p != "" {
				return p
			}
		}
	}
	return ""
}

// hasPath reports whether the dotted path names a value present in rec, looking through lists.
func hasPath(rec *structpb.Struct, path string) bool {
	var walk func(v any, parts []string) bool
	walk = func(v any, parts []string) bool {
		if len(parts) == 0 {
			return v != nil
		}
		switch v := v.(type) {
		case map[string]any:
			x, ok := v[parts[0]]
			return ok && walk(x, parts[1:])
		case []any:
			return slices.ContainsFunc(v, func(x any) bool { return walk(x, parts) })
		}
		return false
	}
	return walk(rec.AsMap(), strings.Split(path, "."))
}

// capitalised is id with its first letter upper case: an id no policy may use.
func capitalised(id string) string {
	if id == "" {
		return "X"
	}
	return strings.ToUpper(id[:1]) + id[1:]
}

// otherDays is a consent duration c allows other than its default, to tell a chosen duration from it.
func otherDays(t *testing.T, c *policy.Consent) int {
	t.Helper()
	for _, d := range []int{c.DefaultDays / 3, c.DefaultDays - 1, c.DefaultDays + 1} {
		if d >= 1 && d <= c.MaxDays && d != c.DefaultDays {
			return d
		}
	}
	t.Fatalf("a consent of default %d and at most %d days allows no other duration", c.DefaultDays, c.MaxDays)
	return 0
}
