package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/aperture-gov/aperture/broker/policy"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aperture-gov/aperture/broker/policy/policytest"
)

// copyPolicies copies the repository's policy tree (registry, journeys, tests) into a temporary
// directory that a test may change.
func copyPolicies(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join("..", "..", "policies")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if filepath.Ext(p) != ".yaml" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// editFile replaces old by new in the file, which must contain old.
func editFile(t *testing.T, name, old, new string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", name, old)
	}
	if err := os.WriteFile(name, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lineOf returns the 1-based line of the file that starts with prefix.
func lineOf(t *testing.T, name, prefix string) int {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line starting %q", name, prefix)
	return 0
}

// aperture runs the command in process and checks its exit status.
func aperture(t *testing.T, wantExit int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, &out, &errOut); code != wantExit {
		t.Fatalf("aperture %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

func TestPolicyLint(t *testing.T) {
	repo := filepath.Join("..", "..", "policies")
	out := aperture(t, 0, "policy", "lint", repo)
	if !strings.Contains(out, "0 errors, 0 warnings") {
		t.Fatalf("lint of the shipped policies printed:\n%s", out)
	}

	dir := copyPolicies(t)
	journey := filepath.Join(dir, "journeys", "sickness-benefit.yaml")
	editFile(t, journey, "          - name.family_name\n", "          - name.familyname\n")
	out = aperture(t, 1, "policy", "lint", dir)
	line := lineOf(t, journey, "          - name.familyname")
	want := journey + fmt.Sprintf(":%d:13: error:", line) + ` population.person: field path "name.familyname": no field "familyname" in aperture.population.v1.Name (did you mean "family_name"?)`
	if !strings.Contains(out, want) || !strings.Contains(out, "1 error, 0 warnings") {
		t.Fatalf("lint printed:\n%s\nwant the line\n%s", out, want)
	}

	out = aperture(t, 1, "policy", "lint", "--json", dir)
	var res lintJSON
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &res); err != nil {
		t.Fatalf("lint --json: %v\n%s", err, out)
	}
	if res.Errors != 1 || len(res.Findings) != 1 || res.Findings[0].Line != line || res.Findings[0].Severity != "error" {
		t.Fatalf("lint --json: %+v", res)
	}

	// A warning alone does not fail the lint.
	dir = copyPolicies(t)
	editFile(t, filepath.Join(dir, "registry.yaml"), "agencies:\n", `  - id: unused
    name: {en: Unused}
    address: 127.0.0.1:7199
    identity: spiffe://aperture.local/authority/unused
    datasets: [things]

agencies:
`)
	out = aperture(t, 0, "policy", "lint", dir)
	if !strings.Contains(out, fmt.Sprintf(`registry.yaml:%d:9: warning: authority "unused" is used by no step`, lineOf(t, filepath.Join(dir, "registry.yaml"), "  - id: unused"))) {
		t.Fatalf("lint printed:\n%s", out)
	}
}

func TestPolicyTest(t *testing.T) {
	out := aperture(t, 0, "policy", "test", filepath.Join("..", "..", "policies"))
	if !strings.Contains(out, " passed, 0 failed") {
		t.Fatalf("policy test printed:\n%s", out)
	}
	// Every journey has tests.
	for _, j := range []string{"sickness-benefit", "new-child", "moving-house"} {
		if _, err := os.Stat(filepath.Join("..", "..", "policies", "tests", j+".yaml")); err != nil {
			t.Errorf("journey %s has no policy tests: %v", j, err)
		}
	}

	// Widening a step makes the test that guards it fail, with file:line and both sides.
	dir := copyPolicies(t)
	editFile(t, filepath.Join(dir, "journeys", "sickness-benefit.yaml"),
		"          - name.given_names\n          - name.family_name\n          - address.municipality_code\n",
		"          - name.given_names\n          - name.family_name\n          - address.municipality_code\n          - civil_status\n")
	out = aperture(t, 1, "policy", "test", dir)
	for _, want := range []string{
		"FAIL  " + filepath.Join(dir, "tests", "sickness-benefit.yaml") + ":5  sickness-benefit: the jobcentre sees who is sick",
		"got:  released fields address.municipality_code, civil_status, name.family_name, name.given_names",
		"want: released fields address.municipality_code, name.family_name, name.given_names",
		"FAIL  " + filepath.Join(dir, "tests", "sickness-benefit.yaml") + ":13  sickness-benefit: civil status is never released",
		"2 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("policy test output lacks %q:\n%s", want, out)
		}
	}
	out = aperture(t, 1, "policy", "test", "--json", dir)
	var res struct {
		Results        []policytest.Result
		Passed, Failed int
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &res); err != nil {
		t.Fatalf("policy test --json: %v\n%s", err, out)
	}
	if res.Failed != 2 || res.Passed+res.Failed != len(res.Results) || res.Results[0].Got == "" {
		t.Fatalf("policy test --json: %+v", res)
	}

	// A malformed test file is an error, not a pass: unknown keys, and a test that expects nothing.
	for _, bad := range []string{
		"journey: sickness-benefit\ntests:\n  - name: x\n    step: register-absence\n    agency: municipality\n    request: {dataset: population.person}\n    expect: {released: {}}\n    extra: 1\n",
		"journey: sickness-benefit\ntests:\n  - name: x\n    step: register-absence\n    agency: municipality\n    request: {dataset: population.person}\n",
	} {
		dir := copyPolicies(t)
		if err := os.WriteFile(filepath.Join(dir, "tests", "bad.yaml"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := aperture(t, 1, "policy", "test", dir); !strings.Contains(out, "bad.yaml") {
			t.Errorf("malformed test file: %s", out)
		}
	}
}

func TestPolicyExplain(t *testing.T) {
	dir := filepath.Join("..", "..", "policies")
	for _, tc := range []struct {
		format string
		want   []string
	}{
		{"text", []string{"3. assess-work-capacity — Assess your work capacity", "consent      required", "fact  earned_above_threshold_6_of_12",
			"type     bool (the expression yields bool)", "computes record.months.filter(m,", "reads    months.gross_dkk, months.period_start"}},
		{"markdown", []string{"## 3. Assess your work capacity (`assess-work-capacity`)", "| legal basis | Sygedagpengeloven", "fact `earned_above_threshold_6_of_12` (bool)",
			"computes `record.months.filter(m,", "reads months.gross_dkk, months.period_start"}},
		{"json", []string{`"id": "assess-work-capacity"`, `"default_days"`, `"name": "earned_above_threshold_6_of_12"`, `"type": "bool"`, `"result_type": "bool"`,
			`"reads": [`, `"months.gross_dkk"`, `"expression": "record.months.filter(m,`}},
	} {
		out := aperture(t, 0, "policy", "explain", "--dir", dir, "--format", tc.format, "sickness-benefit")
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("explain --format %s lacks %q:\n%s", tc.format, w, out)
			}
		}
	}
	aperture(t, 1, "policy", "explain", "--dir", dir, "no-such-journey")
	aperture(t, 2, "policy", "explain", "--format", "html", "sickness-benefit")
}

// TestPolicyExplainLabels: explain shows, for every field of every journey, what the citizen reads
// for it in English and Danish, from the authorities' proto labels (derived from the policies).
func TestPolicyExplainLabels(t *testing.T) {
	dir := filepath.Join("..", "..", "policies")
	b, err := loadPolicyTree(os.DirFS(dir), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	fields := 0
	for _, j := range b.Journeys() {
		var got explainedJourney
		if err := json.Unmarshal([]byte(aperture(t, 0, "policy", "explain", "--dir", dir, "--format", "json", j.ID)), &got); err != nil {
			t.Fatal(err)
		}
		for _, s := range got.Steps {
			for _, r := range s.Releases {
				if r.DatasetLabel.EN == "" || r.DatasetLabel.DA == "" {
					t.Errorf("%s/%s: %s has no dataset label: %+v", j.ID, s.ID, r.Dataset, r.DatasetLabel)
				}
				for _, f := range r.Fields {
					fields++
					if l := r.FieldLabels[f]; l.EN == "" || l.DA == "" || strings.Contains(l.EN+l.DA, "_") {
						t.Errorf("%s/%s: %s %s reads as %+v", j.ID, s.ID, r.Dataset, f, l)
					}
				}
			}
		}
		if out := aperture(t, 0, "policy", "explain", "--dir", dir, j.ID); strings.Contains(out, "NO ENGLISH LABEL") || strings.Contains(out, "NO DANISH LABEL") {
			t.Errorf("explain %s shows a field without a label:\n%s", j.ID, out)
		}
	}
	if fields == 0 {
		t.Fatal("no journey releases a field: the test checks nothing")
	}
}

// TestPolicyExplainDiff: a change that adds one field shows exactly that field as newly disclosed,
// whether the two sides are directories or single journey files.
func TestPolicyExplainDiff(t *testing.T) {
	old := filepath.Join("..", "..", "policies")
	dir := copyPolicies(t)
	journey := filepath.Join(dir, "journeys", "moving-house.yaml")
	editFile(t, journey, "          - address.moved_in_on\n", "          - address.moved_in_on\n          - address.street\n")
	want := "+ moving-house/update-tax-municipality → tax: population.person field address.street\n1 newly disclosed, 0 withdrawn\n"
	if out := aperture(t, 0, "policy", "explain", "--diff", old, dir); out != want {
		t.Fatalf("diff printed:\n%s\nwant:\n%s", out, want)
	}
	if out := aperture(t, 0, "policy", "explain", "--diff", "--dir", old, filepath.Join(old, "journeys", "moving-house.yaml"), journey); out != want {
		t.Fatalf("diff of files printed:\n%s\nwant:\n%s", out, want)
	}
	// The other way round, the field is withdrawn.
	out := aperture(t, 0, "policy", "explain", "--diff", "--format", "json", dir, old)
	var d policyDiff
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Disclosed) != 0 || len(d.Withdrawn) != 1 || d.Withdrawn[0].Field != "address.street" || d.Withdrawn[0].Agency != "tax" {
		t.Fatalf("reverse diff: %+v", d)
	}
	// Narrowing a field the agency already had (address → address.street) discloses nothing new.
	dir2 := copyPolicies(t)
	editFile(t, filepath.Join(dir2, "journeys", "moving-house.yaml"), "          - address\n", "          - address.street\n")
	wantNarrow := "- moving-house/register-move → municipality: population.person field address\n0 newly disclosed, 1 withdrawn\n"
	if out := aperture(t, 0, "policy", "explain", "--diff", old, dir2); out != wantNarrow {
		t.Fatalf("narrowing printed:\n%s\nwant:\n%s", out, wantNarrow)
	}
	if out := aperture(t, 0, "policy", "explain", "--diff", "--format", "markdown", old, dir); !strings.Contains(out, "| **newly disclosed** | `moving-house/update-tax-municipality` | `tax` | `population.person` | field `address.street` |") {
		t.Fatalf("markdown diff:\n%s", out)
	}
}

// TestPolicyExplainBreakGlassAndOptional: explain shows whether each step can be switched off and the
// journeys' break-glass rules; a field added to a break-glass rule is a new disclosure in the diff.
func TestPolicyExplainBreakGlassAndOptional(t *testing.T) {
	old := filepath.Join("..", "..", "policies")
	b, err := loadPolicyTree(os.DirFS(old), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	var j *policy.Journey
	for _, c := range b.Journeys() {
		if len(c.BreakGlass) > 0 {
			j = c
		}
	}
	if j == nil {
		t.Skip("no journey has a break-glass rule")
	}
	bg := j.BreakGlass[0]
	out := aperture(t, 0, "policy", "explain", "--dir", old, j.ID)
	for _, w := range []string{"BREAK-GLASS for " + bg.Agency, bg.LegalBasis, bg.Reasons[0].Code, "optional     no: mandatory"} {
		if !strings.Contains(out, w) {
			t.Errorf("explain lacks %q:\n%s", w, out)
		}
	}
	dir := copyPolicies(t)
	file := filepath.Join(dir, j.File)
	r := bg.Rules[0]
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Append a field to the break-glass rule's field list (the last "fields:" list of the file).
	i := strings.LastIndex(string(data), "        fields:\n")
	if i < 0 {
		t.Fatal("no block fields list in the break-glass rule")
	}
	added := ""
	for k := range r.Message.Fields().Len() {
		if f := string(r.Message.Fields().Get(k).Name()); !slices.ContainsFunc(r.Fields, func(p string) bool { return p == f || strings.HasPrefix(p, f+".") }) {
			added = f
			break
		}
	}
	if added == "" {
		t.Skip("the break-glass rule releases every field of its dataset")
	}
	edited := string(data[:i]) + "        fields:\n          - " + added + "\n" + string(data[i+len("        fields:\n"):])
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "+ " + j.ID + "/break-glass → " + bg.Agency + ": " + r.Authority + "." + r.Dataset + " field " + added + "\n1 newly disclosed, 0 withdrawn\n"
	if out := aperture(t, 0, "policy", "explain", "--diff", old, dir); out != want {
		t.Fatalf("diff printed:\n%s\nwant:\n%s", out, want)
	}
}

// factJourney is a one-step journey releasing one derived fact of the first dataset of the registry's
// first authority to its first agency: a fixture that names nothing of the shipped policies.
func factJourney(t *testing.T, dir, fact string) string {
	t.Helper()
	b, err := loadPolicyTree(os.DirFS(dir), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	a, ag := b.Registry.Authorities[0], b.Registry.Agencies[0]
	return fmt.Sprintf(`id: fact-fixture
title: {en: Fixture, da: Fixture}
description: {en: A journey for a test., da: En rejse til en test.}
steps:
  - id: one
    title: {en: One, da: En}
    agency: %s
    role: caseworker
    purpose: {en: Because., da: Fordi.}
    legal_basis: Testloven § 1
    releases:
      - dataset: %s.%s
        derived:
          - name: f
            description: {en: F.}
%s
`, ag.ID, a.ID, a.Datasets[0], fact)
}

// TestPolicyExplainDiffChangedFact: a fact that keeps its name but computes something else, or has
// another type, is a change in every format, with both expressions and types.
func TestPolicyExplainDiffChangedFact(t *testing.T) {
	old, cur := copyPolicies(t), copyPolicies(t)
	write := func(dir, fact string) {
		if err := os.WriteFile(filepath.Join(dir, "journeys", "fact-fixture.yaml"), []byte(factJourney(t, dir, fact)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(old, "            type: bool\n            expression: now > timestamp('2000-01-01T00:00:00Z')")
	write(cur, "            type: int\n            range: {min: 2000, max: 3000}\n            expression: now.getFullYear()")
	want := "~ fact-fixture/one → "
	out := aperture(t, 0, "policy", "explain", "--diff", old, cur)
	for _, w := range []string{want, "fact f changed", "was: bool = now > timestamp('2000-01-01T00:00:00Z')", "now: int 2000..3000 = now.getFullYear()", "0 newly disclosed, 0 withdrawn, 1 changed"} {
		if !strings.Contains(out, w) {
			t.Errorf("text diff lacks %q:\n%s", w, out)
		}
	}
	out = aperture(t, 0, "policy", "explain", "--diff", "--format", "markdown", old, cur)
	if !strings.Contains(out, "| **changed** | `fact-fixture/one` |") || !strings.Contains(out, "int 2000..3000: `now.getFullYear()`") {
		t.Errorf("markdown diff:\n%s", out)
	}
	var d policyDiff
	if err := json.Unmarshal([]byte(aperture(t, 0, "policy", "explain", "--diff", "--format", "json", old, cur)), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Changed) != 1 || d.Changed[0].OldType != "bool" || d.Changed[0].NewType != "int 2000..3000" || len(d.Disclosed)+len(d.Withdrawn) != 0 {
		t.Fatalf("json diff: %+v", d)
	}
	// The same expression with a changed type alone is a change too.
	write(cur, "            type: string\n            value_reason: {en: A test needs it.}\n            expression: string(now.getFullYear())")
	write(old, "            type: enum\n            values: ['2025', '2026']\n            expression: string(now.getFullYear())")
	if out := aperture(t, 0, "policy", "explain", "--diff", old, cur); !strings.Contains(out, "was: enum {2025, 2026} = string(now.getFullYear())") || !strings.Contains(out, "now: string = ") {
		t.Errorf("type-only change:\n%s", out)
	}
	// explain prints why a value-disclosing fact is released.
	if out := aperture(t, 0, "policy", "explain", "--dir", cur, "fact-fixture"); !strings.Contains(out, "DISCLOSES A VALUE, because: A test needs it.") {
		t.Errorf("explain of a string fact:\n%s", out)
	}
}

// TestPolicyTestFacts: a fact's truth table is evaluated as the authority evaluates it; a wrong value,
// a record field the schema lacks, a value outside the declared type and a fact without a truth table
// all fail.
func TestPolicyTestFacts(t *testing.T) {
	dir := copyPolicies(t)
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("journeys/fact-fixture.yaml", factJourney(t, dir, "            type: int\n            range: {min: 2000, max: 2030}\n            expression: now.getFullYear()"))
	out := aperture(t, 1, "policy", "test", dir)
	if !strings.Contains(out, "truth table of fact f (step one)") || !strings.Contains(out, `add rows for fact "f" under facts: in tests/fact-fixture.yaml`) {
		t.Errorf("a fact without a truth table:\n%s", out)
	}
	table := "journey: fact-fixture\nnow: 2026-03-10T12:00:00Z\nfacts:\n  - name: this year\n    fact: f\n    record: {}\n    want: %s\n" +
		"  - name: next year\n    fact: f\n    now: 2027-01-01T00:00:00Z\n    record: {}\n    want: 2027\n"
	write("tests/fact-fixture.yaml", fmt.Sprintf(table, "2026"))
	if out := aperture(t, 0, "policy", "test", "-v", dir); !strings.Contains(out, "ok    "+filepath.Join(dir, "tests/fact-fixture.yaml")+":4  fact-fixture: this year") {
		t.Errorf("a passing truth table:\n%s", out)
	}
	write("tests/fact-fixture.yaml", fmt.Sprintf(table, "2025"))
	if out := aperture(t, 1, "policy", "test", dir); !strings.Contains(out, "got:  f = 2026") || !strings.Contains(out, "want: f = 2025") {
		t.Errorf("a wrong value:\n%s", out)
	}
	write("tests/fact-fixture.yaml", strings.Replace(fmt.Sprintf(table, "2026"), "record: {}", "record: {no_such_field_here: 1}", 1))
	if out := aperture(t, 1, "policy", "test", dir); !strings.Contains(out, "no_such_field_here") {
		t.Errorf("a record field the schema lacks:\n%s", out)
	}
	write("journeys/fact-fixture.yaml", factJourney(t, dir, "            type: int\n            range: {min: 2000, max: 2026}\n            expression: now.getFullYear()"))
	write("tests/fact-fixture.yaml", fmt.Sprintf(table, "2026"))
	if out := aperture(t, 1, "policy", "test", dir); !strings.Contains(out, "want: a value of the declared type int 2000..2026") {
		t.Errorf("a value outside the declared type:\n%s", out)
	}
}

// TestPolicyExplainAnswer: every format of explain says whether the citizen sees a fact's answer or
// only that it was checked, and the policy's reason where a bool fact's answer is hidden.
func TestPolicyExplainAnswer(t *testing.T) {
	const reason = "Telling the citizen would warn them of the control."
	for _, tc := range []struct {
		name, fact         string
		sees               bool
		text, markdown     string
		hiddenAnswerReason string
	}{
		{"bool, by default", "            type: bool", true,
			"citizen  sees the check and its answer (yes or no)", "the citizen sees the check and its answer (yes or no)", ""},
		{"bool, said so", "            type: bool\n            citizen_sees_answer: true", true,
			"citizen  sees the check and its answer (yes or no)", "the citizen sees the check and its answer (yes or no)", ""},
		{"bool, hidden with a reason", "            type: bool\n            citizen_sees_answer: false\n            hidden_answer_reason: {en: " + reason + ", da: Det ville advare borgeren.}", false,
			"citizen  sees only that it was checked; the answer is HIDDEN, because: " + reason,
			"the citizen sees only that it was checked; the answer is HIDDEN, because: " + reason, reason},
		{"bool, hidden without a reason", "            type: bool\n            citizen_sees_answer: false", false,
			"citizen  sees only that it was checked; the answer is HIDDEN, with no reason given",
			"the citizen sees only that it was checked; the answer is HIDDEN, with no reason given", ""},
		{"int", "            type: int\n            range: {min: 2000, max: 3000}", false,
			"citizen  sees only that it was checked (only yes/no answers are shown)",
			"the citizen sees only that it was checked (only yes/no answers are shown)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyPolicies(t)
			expr := "\n            expression: now > timestamp('2000-01-01T00:00:00Z')"
			if strings.Contains(tc.fact, "type: int") {
				expr = "\n            expression: now.getFullYear()"
			}
			if err := os.WriteFile(filepath.Join(dir, "journeys", "fact-fixture.yaml"), []byte(factJourney(t, dir, tc.fact+expr)), 0o644); err != nil {
				t.Fatal(err)
			}
			// The text wraps at 100 columns: compare with whitespace folded.
			fold := func(s string) string { return strings.Join(strings.Fields(s), " ") }
			if out := aperture(t, 0, "policy", "explain", "--dir", dir, "fact-fixture"); !strings.Contains(fold(out), fold(tc.text)) {
				t.Errorf("text lacks %q:\n%s", tc.text, out)
			}
			if out := aperture(t, 0, "policy", "explain", "--dir", dir, "--format", "markdown", "fact-fixture"); !strings.Contains(out, "<br>"+tc.markdown+" |") {
				t.Errorf("markdown lacks %q:\n%s", tc.markdown, out)
			}
			var got explainedJourney
			if err := json.Unmarshal([]byte(aperture(t, 0, "policy", "explain", "--dir", dir, "--format", "json", "fact-fixture")), &got); err != nil {
				t.Fatal(err)
			}
			f := got.Steps[0].Releases[0].Derived[0]
			if f.CitizenSeesAnswer != tc.sees || f.HiddenAnswerReason != tc.hiddenAnswerReason {
				t.Errorf("json: citizen_sees_answer %v, hidden_answer_reason %q; want %v, %q", f.CitizenSeesAnswer, f.HiddenAnswerReason, tc.sees, tc.hiddenAnswerReason)
			}
			if out := aperture(t, 0, "policy", "explain", "--dir", dir, "--format", "json", "fact-fixture"); !strings.Contains(out, `"citizen_sees_answer": `+fmt.Sprint(tc.sees)) {
				t.Errorf("json does not state citizen_sees_answer: %v:\n%s", tc.sees, out)
			}
		})
	}
}

// TestPolicyExplainDiffAnswer: a fact whose answer the citizen stops or starts seeing is a change in
// every format of the diff, with the reason; a newly disclosed fact says its answer is hidden.
func TestPolicyExplainDiffAnswer(t *testing.T) {
	const (
		shown  = "            type: bool\n            expression: now > timestamp('2000-01-01T00:00:00Z')"
		hidden = "            type: bool\n            citizen_sees_answer: false\n            hidden_answer_reason: {en: It would warn them., da: Det ville advare dem.}\n            expression: now > timestamp('2000-01-01T00:00:00Z')"
		bare   = "            type: bool\n            citizen_sees_answer: false\n            expression: now > timestamp('2000-01-01T00:00:00Z')"
	)
	for _, tc := range []struct {
		name, old, cur string // "" for no fixture journey on that side
		text           string // a line of the text diff
		json           string // the answer change in the JSON diff, or "" for none
	}{
		{"hidden", shown, hidden, "! fact-fixture/one → ", "the citizen no longer sees its answer (because: It would warn them.)"},
		{"hidden without a reason", shown, bare, "! fact-fixture/one → ", "the citizen no longer sees its answer (no reason given)"},
		{"shown again", hidden, shown, "! fact-fixture/one → ", "the citizen now sees its answer"},
		{"unchanged", hidden, hidden, "no disclosure changes", ""},
		{"new, hidden", "", hidden, "fact f (answer hidden from the citizen: It would warn them.)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := copyPolicies(t), copyPolicies(t)
			for dir, fact := range map[string]string{old: tc.old, cur: tc.cur} {
				if fact == "" {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, "journeys", "fact-fixture.yaml"), []byte(factJourney(t, dir, fact)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := aperture(t, 0, "policy", "explain", "--diff", old, cur)
			if !strings.Contains(out, tc.text) || tc.json != "" && !strings.Contains(out, tc.json) {
				t.Errorf("text diff lacks %q and %q:\n%s", tc.text, tc.json, out)
			}
			var d policyDiff
			if err := json.Unmarshal([]byte(aperture(t, 0, "policy", "explain", "--diff", "--format", "json", old, cur)), &d); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.json == "" && len(d.Answers) != 0:
				t.Errorf("json answer changes %v, want none", d.Answers)
			case tc.json != "" && (len(d.Answers) != 1 || !strings.HasSuffix(d.Answers[0], tc.json)):
				t.Errorf("json answer changes %v, want one ending %q", d.Answers, tc.json)
			}
			if tc.old == "" {
				if len(d.Disclosed) != 1 || d.Disclosed[0].CitizenSeesAnswer == nil || *d.Disclosed[0].CitizenSeesAnswer || d.Disclosed[0].HiddenAnswerReason == "" {
					t.Errorf("json: the new fact's answer switch: %+v", d.Disclosed)
				}
			}
			md := aperture(t, 0, "policy", "explain", "--diff", "--format", "markdown", old, cur)
			wantMD := "- fact-fixture/one → "
			switch {
			case tc.old == "":
				wantMD = "fact `f` (answer hidden from the citizen: It would warn them.)"
			case tc.json == "":
				wantMD = "None: the change discloses nothing new"
			}
			if !strings.Contains(md, wantMD) || !strings.Contains(md, tc.json) {
				t.Errorf("markdown diff lacks %q and %q:\n%s", wantMD, tc.json, md)
			}
		})
	}
}
