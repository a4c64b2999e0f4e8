package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"buf.build/go/protovalidate"

	"github.com/aperture-gov/aperture/services/kit/labels"

	policyv1 "github.com/aperture-gov/aperture/proto/aperture/policy/v1"
)

// Severity says whether a lint finding stops a policy tree from loading.
type Severity string

const (
	// SeverityError is a finding the broker refuses to load: every schema and semantic finding of
	// LoadRegistry and LoadBundle.
	SeverityError Severity = "error"
	// SeverityWarning is a finding the broker loads but a reviewer should look at: the policy is
	// consistent, yet probably not what its author meant (a step that releases nothing, an authority
	// that no journey uses).
	SeverityWarning Severity = "warning"
)

// Checks that produce warnings, so that a caller can tell them apart without parsing messages.
const (
	// CheckStepReleasesNothing is a step that releases nothing.
	CheckStepReleasesNothing = "step-releases-nothing"
	// CheckUnusedAuthority is an authority that no step uses: the state of a freshly scaffolded
	// authority (`aperture new authority`) until a journey releases one of its datasets.
	CheckUnusedAuthority = "unused-authority"
	// CheckMissingLabel is a dataset, field or enum value a step releases that its authority gives
	// no display name in English and Danish (aperture.authority.v1 labels), so a citizen would read a
	// field path or an enum constant.
	CheckMissingLabel = "missing-label"
	// CheckHiddenAnswerWithoutReason is a bool fact whose answer is kept from the citizen
	// (citizen_sees_answer: false) without a hidden_answer_reason saying why.
	CheckHiddenAnswerWithoutReason = "hidden-answer-without-reason"
	// CheckAnswerSwitchWithoutEffect is citizen_sees_answer on a fact that is not a bool: only yes/no
	// answers are ever shown to the citizen, so the switch changes nothing.
	CheckAnswerSwitchWithoutEffect = "answer-switch-without-effect"
)

// LintFinding is one finding of Lint with its severity.
type LintFinding struct {
	Finding
	Severity Severity
	// Check names the check of a warning (Check… constants); it is empty for errors.
	Check string
}

func (f LintFinding) String() string {
	if f.Line <= 0 {
		return fmt.Sprintf("%s: %s: %s", f.File, f.Severity, f.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", f.File, f.Line, f.Column, f.Severity, f.Message)
}

// Lint checks a policy tree (registry at registry, journeys/*.yaml) as the broker would load it, and
// adds the findings a load does not fail on. It returns the findings sorted by file and position; a
// non-nil error means the tree could not be read at all, not that it has findings.
//
// Errors are exactly what LoadRegistry and LoadBundle report (schema, unknown agency, authority or
// dataset, misspelt field path with "did you mean", derived-fact expressions that do not type-check,
// and a step without a legal basis, which the schema already rejects for every step, consent or not).
// Warnings are:
//   - a step that releases nothing: its agency acts without seeing any data, which is allowed but is
//     more often a rule that was forgotten, and a consent on such a step would ask the citizen for
//     nothing;
//   - an authority in the registry that no step of any journey uses: the broker would keep a
//     connection open to a data holder no journey needs;
//   - a released dataset, field (or a field below a released record) or enum value without a label
//     in English and Danish in the authority's proto: the citizen would read a field path or an enum
//     constant where a name belongs. Each is reported once, at its first release;
//   - a bool fact whose answer is kept from the citizen (citizen_sees_answer: false) without a
//     hidden_answer_reason: the answer is computed from the citizen's own data, so hiding it needs a
//     reason a reviewer can judge;
//   - citizen_sees_answer on a fact that is not a bool: only yes/no answers are shown to the citizen,
//     so the switch does nothing and its author probably meant something else.
//
// Warnings are computed from the files as written, so they are reported even when the tree has
// errors.
func Lint(fsys fs.FS, registry string, descs Descriptors) ([]LintFinding, error) {
	var out []LintFinding
	addErr := func(err error) error {
		var le *LoadError
		if !errors.As(err, &le) {
			return err
		}
		for _, f := range le.Findings {
			out = append(out, LintFinding{Finding: f, Severity: SeverityError})
		}
		return nil
	}
	reg, err := LoadRegistry(fsys, registry)
	if err != nil {
		if err := addErr(err); err != nil {
			return nil, err
		}
	} else if _, err := LoadBundle(fsys, reg, descs); err != nil {
		if err := addErr(err); err != nil {
			return nil, err
		}
	}
	warnings, err := lintWarnings(fsys, registry, descs)
	if err != nil {
		return nil, err
	}
	out = append(out, warnings...)
	slices.SortStableFunc(out, func(a, b LintFinding) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return slices.Compact(out), nil
}

// lintWarnings decodes the files without failing on schema findings (those are LoadBundle's to
// report) and looks for what Lint documents as warnings.
func lintWarnings(fsys fs.FS, registry string, descs Descriptors) ([]LintFinding, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	var out []LintFinding
	warn := func(src *source, check string, path []any, format string, args ...any) {
		n := src.node(path...)
		out = append(out, LintFinding{Severity: SeverityWarning, Check: check, Finding: Finding{
			File: src.name, Line: n.Line, Column: n.Column, Message: oneLine(fmt.Sprintf(format, args...)),
		}})
	}
	names, err := fs.Glob(fsys, journeyDir+"/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	used := map[string]bool{}
	labelled := map[string]bool{} // dataset and dataset+path already checked
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			continue // LoadBundle reports it
		}
		var ignored findings
		var pb policyv1.Journey
		src := decode(file{name: name, data: data}, &pb, v, &ignored)
		if src == nil {
			continue
		}
		for i, s := range pb.GetSteps() {
			released := false
			for j, r := range s.GetReleases() {
				for _, f := range missingLabels(descs, r, labelled) {
					warn(src, CheckMissingLabel, append([]any{"steps", i, "releases", j}, f.at...), "%s", f.msg)
				}
				for k, d := range r.GetDerived() {
					at := []any{"steps", i, "releases", j, "derived", k, "citizen_sees_answer"}
					switch {
					case d.CitizenSeesAnswer == nil:
					case d.GetType() != FactBool:
						warn(src, CheckAnswerSwitchWithoutEffect, at, "derived fact %q is of type %s: citizen_sees_answer has no effect, since only yes/no answers are shown to the citizen; remove it", d.GetName(), d.GetType())
					case !d.GetCitizenSeesAnswer() && d.GetHiddenAnswerReason() == nil:
						warn(src, CheckHiddenAnswerWithoutReason, at, "derived fact %q keeps its answer from the citizen (citizen_sees_answer: false) without saying why: the answer is about their own data; add hidden_answer_reason (en and da), or let them see it", d.GetName())
					}
				}
				if a, _, ok := strings.Cut(r.GetDataset(), "."); ok {
					used[a] = true
				}
				released = released || len(r.GetFields()) > 0 || len(r.GetDerived()) > 0
			}
			if !released {
				extra := ""
				if s.GetConsent().GetRequired() {
					extra = ", yet it asks the citizen for consent"
				}
				warn(src, CheckStepReleasesNothing, []any{"steps", i, "id"}, "step %q releases nothing%s: add the fields or facts its agency needs, or say in a comment why it needs none", s.GetId(), extra)
			}
		}
	}
	data, err := fs.ReadFile(fsys, registry)
	if err != nil {
		return out, nil // LoadRegistry reports it
	}
	var ignored findings
	var reg policyv1.Registry
	src := decode(file{name: registry, data: data}, &reg, v, &ignored)
	if src == nil {
		return out, nil
	}
	for i, a := range reg.GetAuthorities() {
		if a.GetId() != "" && !used[a.GetId()] {
			warn(src, CheckUnusedAuthority, []any{"authorities", i, "id"}, "authority %q is used by no step of any journey: release one of its datasets in a journey, or remove it", a.GetId())
		}
	}
	return out, nil
}

type labelFinding struct {
	at  []any // below the release rule
	msg string
}

// missingLabels checks the labels of what r releases, skipping what seen says was checked already.
// A dataset or path the descriptors do not know is LoadBundle's to report.
func missingLabels(descs Descriptors, r *policyv1.ReleaseRule, seen map[string]bool) []labelFinding {
	authority, dataset, ok := strings.Cut(r.GetDataset(), ".")
	if !ok || descs == nil {
		return nil
	}
	md, err := descs.Dataset(authority, dataset)
	if err != nil {
		return nil
	}
	var out []labelFinding
	if !seen[r.GetDataset()] {
		seen[r.GetDataset()] = true
		if !labels.Complete(labels.Message(md)) {
			out = append(out, labelFinding{[]any{"dataset"}, fmt.Sprintf(
				"dataset %s (%s) has no display name in English and Danish: add option (aperture.authority.v1.message_label) to the message, or citizens read %q", r.GetDataset(), md.FullName(), dataset)})
		}
	}
	for k, path := range r.GetFields() {
		key := r.GetDataset() + " " + path
		if seen[key] {
			continue
		}
		seen[key] = true
		missing, err := labels.Missing(md, path)
		if err != nil || len(missing) == 0 {
			continue
		}
		out = append(out, labelFinding{[]any{"fields", k}, fmt.Sprintf(
			"%s %s: citizens would read field paths or constants: %s; add (aperture.authority.v1.field_label) or value_label options in the authority's proto",
			r.GetDataset(), path, strings.Join(missing, "; "))})
	}
	return out
}
