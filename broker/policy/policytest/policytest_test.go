package policytest_test

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/policy/policytest"
	"github.com/aperture-gov/aperture/policies"
	"github.com/aperture-gov/aperture/services/catalog"
)

type descriptors map[string]protoreflect.MessageDescriptor

func (d descriptors) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	if md, ok := d[authority+"."+dataset]; ok {
		return md, nil
	}
	return nil, fmt.Errorf("no dataset %s.%s", authority, dataset)
}

// tree is the shipped registry with one fixture journey releasing a fact of the first dataset of the
// registry's first authority, and tests: a fixture that names no example authority or journey.
func tree(t *testing.T, fact, tests string) (fstest.MapFS, descriptors) {
	t.Helper()
	d := descriptors{}
	for _, a := range catalog.Examples(nil) {
		for _, ds := range a.Datasets {
			d[a.ID+"."+ds.Name] = ds.Message.ProtoReflect().Descriptor()
		}
	}
	reg, err := fs.ReadFile(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := catalog.Examples(nil)[0]
	journey := fmt.Sprintf(`id: j
title: {en: J}
description: {en: J.}
steps:
  - id: one
    title: {en: One}
    agency: municipality
    role: r
    purpose: {en: P.}
    legal_basis: L
    releases:
      - dataset: %s.%s
        derived:
          - name: f
            description: {en: F.}
%s
`, a.ID, a.Datasets[0].Name, fact)
	return fstest.MapFS{"registry.yaml": {Data: reg}, "journeys/j.yaml": {Data: []byte(journey)}, "tests/j.yaml": {Data: []byte(tests)}}, d
}

func TestFacts(t *testing.T) {
	const year = "            type: int\n            range: {min: 2000, max: 2100}\n            expression: now.getFullYear()"
	const leap = "            type: bool\n            expression: now.getFullYear() % 4 == 0"
	row := func(now, want string) string {
		return fmt.Sprintf("  - {name: at %s, fact: f, now: %s, record: {}, want: %s}\n", now, now, want)
	}
	for _, tc := range []struct {
		name, fact, rows string
		fail             []string // problems expected, in order; none: all pass
	}{
		{"an int row", year, row("2026-01-01T00:00:00Z", "2026"), nil},
		{"a wrong value", year, row("2026-01-01T00:00:00Z", "2027"), []string{"f = 2027"}},
		{"a bool needs both values", leap, row("2028-01-01T00:00:00Z", "true"), []string{"a row where fact \"f\" is true and one where it is false"}},
		{"a bool with both", leap, row("2028-01-01T00:00:00Z", "true") + row("2026-01-01T00:00:00Z", "false"), nil},
		{"no rows", year, "", []string{"a truth table"}},
		{"an unknown fact", year, "  - {name: x, fact: g, record: {}, want: 1}\n" + row("2026-01-01T00:00:00Z", "2026"), []string{`no derived fact "g"`}},
		{"a field the schema lacks", year, "  - {name: x, fact: f, record: {no_such_field: 1}, want: 2026}\n", []string{"no_such_field", "a truth table"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tests := "journey: j\ntests:\n  - {name: no dataset, step: one, agency: municipality, request: {dataset: tax.nothing}, expect: {refused: {code: PermissionDenied}}}\n"
			if tc.rows != "" {
				tests += "facts:\n" + tc.rows
			}
			fsys, d := tree(t, tc.fact, tests)
			results, err := policytest.Run(fsys, d, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			if err != nil {
				t.Fatal(err)
			}
			var problems []string
			for _, r := range results {
				if !r.Pass {
					problems = append(problems, r.Problem)
				}
			}
			if len(problems) != len(tc.fail) {
				t.Fatalf("problems %q, want %d", problems, len(tc.fail))
			}
			for i, want := range tc.fail {
				if !strings.Contains(problems[i], want) {
					t.Errorf("problem %q, want it to contain %q", problems[i], want)
				}
			}
		})
	}
}
