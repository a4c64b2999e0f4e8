// Package policytest runs the policy tests that live beside the journeys (policies/tests/*.yaml): the
// requests an architect expects each step to release or refuse, decided by the broker's own decision
// code (release.Decide, release.ConsentRefusal), and the truth table of every derived fact, evaluated
// over fixture records by the CEL environment the authorities use (services/kit/derive).
//
// A test file is YAML:
//
//	journey: JOURNEY
//	now: 2026-03-10T12:00:00Z  # optional: the clock of the file's fact tests
//	tests:                     # requests and what the broker answers
//	  - name: …
//	    step: STEP
//	    agency: AGENCY
//	    consent: none | given | revoked | expired
//	    request: {dataset: AUTHORITY.DATASET, fields: […], derived: […]}
//	    expect: {released: {fields: […], derived: […]}} or {refused: {code: CODE, reason: SUBSTRING}}
//	facts:                     # the truth table of the journey's derived facts
//	  - name: …
//	    fact: FACT             # a derived fact of the journey (step: STEP when two steps share the name)
//	    record: {…}            # the authority's record, in YAML typed by its proto schema
//	    want: VALUE            # the fact's value over the record
//
// Every derived fact of a journey needs at least one fact test (a bool fact: one true and one false),
// so that a new fact cannot be released without a truth table; a fact without one is a failing result.
package policytest

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/release"
	"github.com/aperture-gov/aperture/broker/switchoff"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// file is one file of policy tests (policies/tests/*.yaml): cases of one journey.
type file struct {
	Journey string `yaml:"journey"`
	// Now is the clock of the file's fact tests; the runner's clock when unset.
	Now   *time.Time `yaml:"now"`
	Tests []Case     `yaml:"tests"`
	Facts []FactCase `yaml:"facts"`
}

// FactCase is one row of a derived fact's truth table: a record of the authority and the value the
// fact must have over it.
type FactCase struct {
	Name string `yaml:"name"`
	Fact string `yaml:"fact"`
	// Step names the step when two steps of the journey release facts of the same name.
	Step string `yaml:"step"`
	// Now is the clock for this row; the file's when unset.
	Now *time.Time `yaml:"now"`
	// Record is the authority's full record, in YAML as protoyaml reads the dataset's message.
	Record yaml.Node `yaml:"record"`
	Want   yaml.Node `yaml:"want"`

	line int
}

// Case is one request at one step and what the broker must answer.
type Case struct {
	Name   string `yaml:"name"`
	Step   string `yaml:"step"`
	Agency string `yaml:"agency"`
	// Consent is the citizen's consent to the step: none (default), given, revoked or expired.
	Consent string `yaml:"consent"`
	// SwitchedOff is the citizen's switch for the step (if optional): on (default), step (this one
	// step switched off), journey (switched off for this journey), all (for all journeys) or unverified
	// (a stored switch that does not authenticate).
	SwitchedOff string `yaml:"switched_off"`
	// BreakGlass, when set, makes the request an emergency release (BrokerService.BreakGlassRelease)
	// by Agency while the case is at Step.
	BreakGlass *BreakGlass `yaml:"break_glass"`
	Request    Request     `yaml:"request"`
	Expect     Expect      `yaml:"expect"`

	line int
}

// BreakGlass is what an emergency release names besides the data.
type BreakGlass struct {
	ReasonCode    string `yaml:"reason_code"`
	Justification string `yaml:"justification"`
}

type Request struct {
	Dataset string   `yaml:"dataset"` // "authority.dataset"
	Fields  []string `yaml:"fields"`
	Derived []string `yaml:"derived"`
}

// Expect holds exactly one of Released and Refused.
type Expect struct {
	Released *struct {
		Fields  []string `yaml:"fields"`
		Derived []string `yaml:"derived"`
	} `yaml:"released"`
	Refused *struct {
		Code   string `yaml:"code"`
		Reason string `yaml:"reason"` // a substring of the refusal's reason
	} `yaml:"refused"`
}

// Result is the outcome of one case.
type Result struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Journey string `json:"journey"`
	Name    string `json:"name"`
	Pass    bool   `json:"pass"`
	// Got is what the broker decided, in words; Problem what differs from the expectation.
	Got     string `json:"got"`
	Problem string `json:"problem,omitempty"`
}

// Run loads the policy tree in fsys and runs every tests/*.yaml against it with the
// broker's own decision (release.Decide, release.ConsentRefusal). A tree that does not load, or a
// test file that is malformed, is an error; a failing test is a result.
func Run(fsys fs.FS, descs policy.Descriptors, now time.Time) ([]Result, error) {
	reg, err := policy.LoadRegistry(fsys, "registry.yaml")
	var b *policy.Bundle
	if err == nil {
		b, err = policy.LoadBundle(fsys, reg, descs)
	}
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
	var results []Result
	cov := coverage{}
	rights := rightsCoverage{}
	fileOf := map[string]string{}
	for _, name := range names {
		tf, err := readFile(fsys, name)
		if err != nil {
			return nil, err
		}
		if _, ok := fileOf[tf.Journey]; !ok {
			fileOf[tf.Journey] = name
		}
		for _, tc := range tf.Tests {
			r := Result{File: name, Line: tc.line, Journey: tf.Journey, Name: tc.Name}
			r.Got, r.Problem = runCase(b, tf.Journey, tc, now)
			r.Pass = r.Problem == ""
			results = append(results, r)
			if r.Pass {
				rights.cover(tf.Journey, tc)
			}
		}
		for _, fc := range tf.Facts {
			at := now
			if tf.Now != nil {
				at = *tf.Now
			}
			if fc.Now != nil {
				at = *fc.Now
			}
			r := Result{File: name, Line: fc.line, Journey: tf.Journey, Name: fc.Name}
			r.Got, r.Problem = runFact(b, tf.Journey, fc, at, cov)
			r.Pass = r.Problem == ""
			results = append(results, r)
		}
	}
	results = append(results, cov.missing(b, fileOf)...)
	return append(results, rights.missing(b, fileOf)...), nil
}

func readFile(fsys fs.FS, name string) (*file, error) {
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
	var tf file
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if tf.Journey == "" || len(tf.Tests)+len(tf.Facts) == 0 {
		return nil, fmt.Errorf("%s: a test file needs a journey and at least one test or fact", name)
	}
	// The lines of the tests, so that a failure points at its case.
	if len(doc.Content) > 0 {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			for k, n := range m.Content[i+1].Content {
				switch {
				case m.Content[i].Value == "tests" && k < len(tf.Tests):
					tf.Tests[k].line = n.Line
				case m.Content[i].Value == "facts" && k < len(tf.Facts):
					tf.Facts[k].line = n.Line
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
		if !slices.Contains([]string{"", "on", "step", "journey", "all", "unverified"}, tc.SwitchedOff) {
			return nil, fmt.Errorf("%s:%d: switched_off %q: want on, step, journey, all or unverified", name, tc.line, tc.SwitchedOff)
		}
		if tc.BreakGlass != nil && tc.BreakGlass.ReasonCode == "" {
			return nil, fmt.Errorf("%s:%d: break_glass needs a reason_code", name, tc.line)
		}
	}
	for _, fc := range tf.Facts {
		if fc.Name == "" || fc.Fact == "" || fc.Want.Kind == 0 {
			return nil, fmt.Errorf("%s:%d: a fact test needs name, fact, record and want", name, fc.line)
		}
	}
	return &tf, nil
}

// runCase decides one case the way the broker does for a case of the journey at the
// test's step, and compares. It returns what happened in words and, if it is not what the test
// expects, why.
func runCase(b *policy.Bundle, journey string, tc Case, now time.Time) (got, problem string) {
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
	var grant policy.Grant
	var ref *refusal.Error
	if tc.BreakGlass != nil {
		justification := tc.BreakGlass.Justification
		if justification == "" {
			justification = "policy test: an emergency that needs the data now"
		}
		var d release.BreakGlassDecision
		d, ref = release.DecideBreakGlass(b, c, tc.Agency, release.BreakGlassRequest{
			CaseID: c.ID, Authority: authority, Dataset: dataset, Fields: tc.Request.Fields, Derived: tc.Request.Derived,
			ReasonCode: tc.BreakGlass.ReasonCode, Justification: justification,
		})
		grant = d.Grant
	} else {
		var d release.Decision
		d, ref = release.Decide(b, c, tc.Agency, req)
		if ref == nil && d.Journey.OptionalAt(d.Step) != nil {
			scope, err := testSwitch(tc.SwitchedOff)
			ref = release.SwitchRefusal(scope, err, journey, d.Step.ID)
		}
		if ref == nil && d.NeedsConsent {
			cn, err := testConsent(tc.Consent, journey, d.Step, now)
			ref = release.ConsentRefusal(cn, err, journey, d.Step, now)
		}
		grant = d.Grant
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
	for _, f := range grant.Derived {
		facts = append(facts, f.Name)
	}
	got = "released " + describeRelease(grant.Fields, facts)
	want := tc.Expect.Released
	if want == nil {
		return got, fmt.Sprintf("refused (%s)", tc.Expect.Refused.Code)
	}
	wantFacts := slices.Sorted(slices.Values(want.Derived))
	if !slices.Equal(grant.Fields, fieldmask.Normalize(want.Fields)) || !slices.Equal(slices.Sorted(slices.Values(facts)), wantFacts) {
		return got, "released " + describeRelease(fieldmask.Normalize(want.Fields), wantFacts)
	}
	return got, ""
}

// testSwitch returns what the switch-off store would answer for a test's switch state.
func testSwitch(state string) (switchoff.Scope, error) {
	switch state {
	case "step":
		return switchoff.ScopeStep, nil
	case "journey":
		return switchoff.ScopeJourney, nil
	case "all":
		return switchoff.ScopeAll, nil
	case "unverified":
		return switchoff.ScopeNone, fmt.Errorf("policy test: %w", switchoff.ErrUnverified)
	}
	return switchoff.ScopeNone, nil
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

// rightsCoverage records which switch-off and break-glass behaviour the passing tests show: for every
// optional step, a test that the citizen's switch refuses it; for every break-glass rule, a test that
// it releases and one that it refuses (a field or agency outside it).
type rightsCoverage map[string]bool

func (rc rightsCoverage) cover(journey string, tc Case) {
	switch {
	case tc.BreakGlass != nil && tc.Expect.Released != nil:
		rc["bg-released/"+journey+"/"+tc.Agency] = true
	case tc.BreakGlass != nil:
		rc["bg-refused/"+journey] = true
	case (tc.SwitchedOff == "step" || tc.SwitchedOff == "journey" || tc.SwitchedOff == "all") && tc.Expect.Refused != nil:
		rc["switch/"+journey+"/"+tc.Step] = true
	}
}

func (rc rightsCoverage) missing(b *policy.Bundle, fileOf map[string]string) []Result {
	var out []Result
	for _, j := range b.Journeys() {
		file := cmp.Or(fileOf[j.ID], "tests/"+j.ID+".yaml")
		for _, s := range j.Steps {
			if j.OptionalAt(s) != nil && !rc["switch/"+j.ID+"/"+s.ID] {
				out = append(out, Result{File: file, Journey: j.ID, Name: "switch-off of optional step " + s.ID, Got: "no test",
					Problem: fmt.Sprintf("a test at step %q with switched_off: journey (or all) that expects the release refused", s.ID)})
			}
		}
		for _, bg := range j.BreakGlass {
			if !rc["bg-released/"+j.ID+"/"+bg.Agency] {
				out = append(out, Result{File: file, Journey: j.ID, Name: "break-glass rule for " + bg.Agency, Got: "no test",
					Problem: fmt.Sprintf("a test with agency %s and break_glass: {reason_code: …} that expects what the rule releases", bg.Agency)})
			}
		}
		if len(j.BreakGlass) > 0 && !rc["bg-refused/"+j.ID] {
			out = append(out, Result{File: file, Journey: j.ID, Name: "break-glass refusals", Got: "no test",
				Problem: "a break_glass test that expects a refusal (a field, reason code or agency outside the rules)"})
		}
	}
	return out
}
