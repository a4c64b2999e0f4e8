package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/release"
	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

const policyUsage = `usage:
  aperture policy lint [--json] [DIR]        check the registry and journeys (DIR defaults to policies)
  aperture policy test [--json] [DIR]        run the policy tests in DIR/tests/*.yaml
  aperture policy explain [--format text|markdown|json] [--dir DIR] JOURNEY
  aperture policy explain --diff [--format text|markdown|json] OLD NEW
                                             what a policy change newly discloses and withdraws`

// runPolicy is the architect's tool for policy files: it needs no running broker or authority; the
// datasets' schemas come from the example authorities compiled into this binary.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("%s", policyUsage)
	}
	switch args[0] {
	case "lint":
		return runPolicyLint(args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(args[1:], stdout, stderr)
	case "explain":
		return runPolicyExplain(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, policyUsage)
		return nil
	}
	return usagef("unknown subcommand %q\n%s", args[0], policyUsage)
}

// registryFile is the registry's name within a policy tree.
const registryFile = "registry.yaml"

// catalogDescriptors resolves datasets to the message types of the authorities in services/catalog,
// read from the compiled-in descriptors, so that linting needs neither network nor running services.
type catalogDescriptors map[string]protoreflect.MessageDescriptor

func newCatalogDescriptors() catalogDescriptors {
	d := catalogDescriptors{}
	// The lookups are never called, so the authorities need no population.
	for _, a := range catalog.Examples(nil) {
		for _, ds := range a.Datasets {
			if ds.Message != nil {
				d[a.ID+"."+ds.Name] = ds.Message.ProtoReflect().Descriptor()
			}
		}
	}
	return d
}

func (d catalogDescriptors) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	md, ok := d[authority+"."+dataset]
	if !ok {
		return nil, fmt.Errorf("no authority in services/catalog describes %s.%s (list the authority in services/catalog)", authority, dataset)
	}
	return md, nil
}

// policyDir returns the one optional DIR argument, "policies" by default.
func policyDir(pos []string, usage string) (string, error) {
	switch len(pos) {
	case 0:
		return "policies", nil
	case 1:
		return pos[0], nil
	}
	return "", usagef("%s", usage)
}

// lintJSON is the --json form of `policy lint`.
type lintJSON struct {
	Findings []lintFindingJSON `json:"findings"`
	Errors   int               `json:"errors"`
	Warnings int               `json:"warnings"`
}

type lintFindingJSON struct {
	File     string `json:"file"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

func runPolicyLint(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy lint", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	dir, err := policyDir(pos, "usage: aperture policy lint [--json] [DIR]")
	if err != nil {
		return err
	}
	findings, err := policy.Lint(os.DirFS(dir), registryFile, newCatalogDescriptors())
	if err != nil {
		return fmt.Errorf("lint %s: %w", dir, err)
	}
	out := lintJSON{Findings: []lintFindingJSON{}}
	for _, f := range findings {
		f.File = filepath.Join(dir, f.File)
		out.Findings = append(out.Findings, lintFindingJSON{
			File: f.File, Line: f.Line, Column: f.Column, Severity: string(f.Severity), Message: f.Message,
		})
		if f.Severity == policy.SeverityError {
			out.Errors++
		} else {
			out.Warnings++
		}
		if !*asJSON {
			fmt.Fprintln(stdout, f)
		}
	}
	if *asJSON {
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s: %s, %s\n", dir, plural(out.Errors, "error"), plural(out.Warnings, "warning"))
	}
	if out.Errors > 0 {
		return fmt.Errorf("%s in %s", plural(out.Errors, "error"), dir)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// loadPolicyTree loads and checks a policy tree as the broker would.
func loadPolicyTree(fsys fs.FS, descs policy.Descriptors) (*policy.Bundle, error) {
	reg, err := policy.LoadRegistry(fsys, registryFile)
	if err != nil {
		return nil, err
	}
	return policy.LoadBundle(fsys, reg, descs)
}

// policyTestFile is one file of policy tests (policies/tests/*.yaml): cases of one journey.
type policyTestFile struct {
	Journey string           `yaml:"journey"`
	Tests   []policyTestCase `yaml:"tests"`
}

// policyTestCase is one request at one step and what the broker must answer.
type policyTestCase struct {
	Name   string `yaml:"name"`
	Step   string `yaml:"step"`
	Agency string `yaml:"agency"`
	// Consent is the citizen's consent to the step: none (default), given, revoked or expired.
	Consent string            `yaml:"consent"`
	Request policyTestRequest `yaml:"request"`
	Expect  policyTestExpect  `yaml:"expect"`

	line int
}

type policyTestRequest struct {
	Dataset string   `yaml:"dataset"` // "authority.dataset"
	Fields  []string `yaml:"fields"`
	Derived []string `yaml:"derived"`
}

// policyTestExpect holds exactly one of Released and Refused.
type policyTestExpect struct {
	Released *struct {
		Fields  []string `yaml:"fields"`
		Derived []string `yaml:"derived"`
	} `yaml:"released"`
	Refused *struct {
		Code   string `yaml:"code"`
		Reason string `yaml:"reason"` // a substring of the refusal's reason
	} `yaml:"refused"`
}

// policyTestResult is the outcome of one case.
type policyTestResult struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Journey string `json:"journey"`
	Name    string `json:"name"`
	Pass    bool   `json:"pass"`
	// Got is what the broker decided, in words; Problem what differs from the expectation.
	Got     string `json:"got"`
	Problem string `json:"problem,omitempty"`
}

func runPolicyTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	verbose := fs.Bool("v", false, "list passing tests too")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	dir, err := policyDir(pos, "usage: aperture policy test [--json] [-v] [DIR]")
	if err != nil {
		return err
	}
	results, err := runPolicyTests(os.DirFS(dir), newCatalogDescriptors(), time.Now())
	if err != nil {
		return fmt.Errorf("policy test %s: %w", dir, err)
	}
	failed := 0
	for i := range results {
		results[i].File = filepath.Join(dir, results[i].File)
		if !results[i].Pass {
			failed++
		}
	}
	if *asJSON {
		if err := writeJSON(stdout, map[string]any{"results": results, "passed": len(results) - failed, "failed": failed}); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			switch {
			case !r.Pass:
				fmt.Fprintf(stdout, "FAIL  %s:%d  %s: %s\n        got:  %s\n        want: %s\n", r.File, r.Line, r.Journey, r.Name, r.Got, r.Problem)
			case *verbose:
				fmt.Fprintf(stdout, "ok    %s:%d  %s: %s\n", r.File, r.Line, r.Journey, r.Name)
			}
		}
		fmt.Fprintf(stdout, "%s: %d passed, %d failed\n", dir, len(results)-failed, failed)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d policy tests failed", failed, len(results))
	}
	return nil
}

// runPolicyTests loads the policy tree in fsys and runs every tests/*.yaml against it with the
// broker's own decision (release.Decide, release.ConsentRefusal). A tree that does not load, or a
// test file that is malformed, is an error; a failing test is a result.
func runPolicyTests(fsys fs.FS, descs policy.Descriptors, now time.Time) ([]policyTestResult, error) {
	b, err := loadPolicyTree(fsys, descs)
	if err != nil {
		return nil, fmt.Errorf("load policies (run `aperture policy lint`):\n%w", err)
	}
	names, err := fs.Glob(fsys, "tests/*.yaml")
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, errors.New("no policy tests (tests/*.yaml)")
	}
	var results []policyTestResult
	for _, name := range names {
		tf, err := readPolicyTestFile(fsys, name)
		if err != nil {
			return nil, err
		}
		for _, tc := range tf.Tests {
			r := policyTestResult{File: name, Line: tc.line, Journey: tf.Journey, Name: tc.Name}
			r.Got, r.Problem = runPolicyTestCase(b, tf.Journey, tc, now)
			r.Pass = r.Problem == ""
			results = append(results, r)
		}
	}
	return results, nil
}

func readPolicyTestFile(fsys fs.FS, name string) (*policyTestFile, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	var tf policyTestFile
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if tf.Journey == "" || len(tf.Tests) == 0 {
		return nil, fmt.Errorf("%s: a test file needs a journey and at least one test", name)
	}
	// The lines of the tests, so that a failure points at its case.
	if len(doc.Content) > 0 {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "tests" {
				for k, n := range m.Content[i+1].Content {
					if k < len(tf.Tests) {
						tf.Tests[k].line = n.Line
					}
				}
			}
		}
	}
	for _, tc := range tf.Tests {
		if tc.Name == "" || tc.Step == "" || tc.Agency == "" || tc.Request.Dataset == "" {
			return nil, fmt.Errorf("%s:%d: a test needs name, step, agency and request.dataset", name, tc.line)
		}
		if (tc.Expect.Released == nil) == (tc.Expect.Refused == nil) {
			return nil, fmt.Errorf("%s:%d: test %q must expect either released or refused", name, tc.line, tc.Name)
		}
		if !slices.Contains([]string{"", "none", "given", "revoked", "expired"}, tc.Consent) {
			return nil, fmt.Errorf("%s:%d: consent %q: want none, given, revoked or expired", name, tc.line, tc.Consent)
		}
	}
	return &tf, nil
}

// runPolicyTestCase decides one case the way the broker does for a case of the journey at the
// test's step, and compares. It returns what happened in words and, if it is not what the test
// expects, why.
func runPolicyTestCase(b *policy.Bundle, journey string, tc policyTestCase, now time.Time) (got, problem string) {
	j, ok := b.Journey(journey)
	if !ok {
		return "no such journey", fmt.Sprintf("journey %q is not in the policies", journey)
	}
	_, idx, ok := j.Step(tc.Step)
	if !ok {
		return "no such step", fmt.Sprintf("step %q is not in journey %q", tc.Step, journey)
	}
	// A case opened by the first step's agency and advanced to the test's step, as the broker keeps it.
	c := cases.New(j, "policy-test", "policy-test", j.Steps[0].Agency, b.Version, now)
	for _, s := range j.Steps[:idx] {
		if err := c.Complete(s.ID, "policy-test", now); err != nil {
			return "cannot advance the case", err.Error()
		}
	}
	authority, dataset, _ := strings.Cut(tc.Request.Dataset, ".")
	req := release.Request{CaseID: c.ID, Authority: authority, Dataset: dataset, Fields: tc.Request.Fields, Derived: tc.Request.Derived}
	d, ref := release.Decide(b, c, tc.Agency, req)
	if ref == nil && d.NeedsConsent {
		cn, err := testConsent(tc.Consent, journey, d.Step, now)
		ref = release.ConsentRefusal(cn, err, journey, d.Step, now)
	}
	if ref != nil {
		got = fmt.Sprintf("refused (%s): %s", ref.Kind, ref.Reason)
		want := tc.Expect.Refused
		switch {
		case want == nil:
			return got, "released"
		case want.Code != "" && want.Code != ref.Kind.String():
			return got, fmt.Sprintf("refused with code %s", want.Code)
		case !strings.Contains(ref.Reason, want.Reason):
			return got, fmt.Sprintf("refused with a reason containing %q", want.Reason)
		}
		return got, ""
	}
	var facts []string
	for _, f := range d.Grant.Derived {
		facts = append(facts, f.Name)
	}
	got = "released " + describeRelease(d.Grant.Fields, facts)
	want := tc.Expect.Released
	if want == nil {
		return got, fmt.Sprintf("refused (%s)", tc.Expect.Refused.Code)
	}
	wantFacts := slices.Sorted(slices.Values(want.Derived))
	if !slices.Equal(d.Grant.Fields, fieldmask.Normalize(want.Fields)) || !slices.Equal(slices.Sorted(slices.Values(facts)), wantFacts) {
		return got, "released " + describeRelease(fieldmask.Normalize(want.Fields), wantFacts)
	}
	return got, ""
}

// testConsent returns what the consent store would answer for a test's consent state. A given consent
// lasts the step's maximum (the broker checks the duration at every release), a third of it gone.
func testConsent(state, journey string, step *policy.Step, now time.Time) (*consent.Consent, error) {
	validity := consent.MaxValidity(step.Consent.MaxDays)
	granted := now.Add(-validity / 3)
	cn := &consent.Consent{Pseudonym: "policy-test", Journey: journey, Step: step.ID,
		GrantedAt: granted, ExpiresAt: granted.Add(validity)}
	switch state {
	case "given":
	case "revoked":
		at := now.AddDate(0, 0, -1)
		cn.RevokedAt = &at
	case "expired":
		cn.GrantedAt = now.AddDate(0, 0, -1).Add(-validity)
		cn.ExpiresAt = cn.GrantedAt.Add(validity)
	default:
		return nil, consent.ErrNotFound
	}
	return cn, nil
}

func describeRelease(fields, facts []string) string {
	var parts []string
	if len(fields) > 0 {
		parts = append(parts, "fields "+strings.Join(fields, ", "))
	}
	if len(facts) > 0 {
		parts = append(parts, "facts "+strings.Join(facts, ", "))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, "; ")
}
