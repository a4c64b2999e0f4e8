package policytest_test

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/aperture-gov/aperture/broker/policy/policytest"
	"github.com/aperture-gov/aperture/policies"
	"github.com/aperture-gov/aperture/services/catalog"
)

// TestSwitchOffAndBreakGlassCases: switched_off and break_glass cases decide as the broker does, and
// an optional step or break-glass rule without such a test is reported as a failure.
func TestSwitchOffAndBreakGlassCases(t *testing.T) {
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
	md := a.Datasets[0].Message.ProtoReflect().Descriptor()
	field, other := string(md.Fields().Get(0).Name()), string(md.Fields().Get(1).Name())
	dataset := a.ID + "." + a.Datasets[0].Name
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
    optional: {why: {en: An offer.}}
    releases:
      - dataset: %[1]s
        fields: [%[2]s]
break_glass:
  - agency: health
    purpose: {en: E.}
    legal_basis: L2
    reasons: [{code: urgent, title: {en: U.}}]
    releases:
      - dataset: %[1]s
        fields: [%[2]s]
    max_per_caseworker: 1
    window_hours: 1
`, dataset, field)
	run := func(tests string) []policytest.Result {
		t.Helper()
		fsys := fstest.MapFS{"registry.yaml": {Data: reg}, "journeys/j.yaml": {Data: []byte(journey)}, "tests/j.yaml": {Data: []byte(tests)}}
		res, err := policytest.Run(fsys, d, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	failing := func(res []policytest.Result) []string {
		var out []string
		for _, r := range res {
			if !r.Pass {
				out = append(out, r.Name+": "+r.Problem)
			}
		}
		return out
	}
	// Only an ordinary test: the switch and the break-glass rule are untested.
	res := run(fmt.Sprintf("journey: j\ntests:\n  - name: plain\n    step: one\n    agency: municipality\n    request: {dataset: %s}\n    expect: {released: {fields: [%s]}}\n", dataset, field))
	got := strings.Join(failing(res), "\n")
	for _, want := range []string{"switch-off of optional step one", "break-glass rule for health", "break-glass refusals"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing coverage not reported: %q\n%s", want, got)
		}
	}
	// With them, all pass; and each decides like the broker.
	tests := fmt.Sprintf(`journey: j
tests:
  - name: switched off
    step: one
    agency: municipality
    switched_off: journey
    request: {dataset: %[1]s}
    expect: {refused: {code: FailedPrecondition, reason: switched it off}}
  - name: unverified
    step: one
    agency: municipality
    switched_off: unverified
    request: {dataset: %[1]s}
    expect: {refused: {code: FailedPrecondition, reason: cannot be verified}}
  - name: emergency
    step: one
    agency: health
    break_glass: {reason_code: urgent}
    request: {dataset: %[1]s}
    expect: {released: {fields: [%[2]s]}}
  - name: emergency beyond the rule
    step: one
    agency: health
    break_glass: {reason_code: urgent}
    request: {dataset: %[1]s, fields: [%[3]s]}
    expect: {refused: {code: PermissionDenied, reason: 'field "%[3]s"'}}
`, dataset, field, other)
	if f := failing(run(tests)); len(f) > 0 {
		t.Fatalf("failing: %v", f)
	}
	// A wrong expectation fails (the switch really refuses), and the step is then uncovered.
	wrong := strings.Replace(tests, "expect: {refused: {code: FailedPrecondition, reason: switched it off}}", fmt.Sprintf("expect: {released: {fields: [%s]}}", field), 1)
	if f := failing(run(wrong)); len(f) != 2 || f[0] != "switched off: released" {
		t.Fatalf("a switched-off step expected to release: failing %v", f)
	}
}
