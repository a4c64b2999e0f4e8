package policy

import (
	"errors"
	"fmt"
	"slices"

	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// Errors of Step.Check. The broker maps them to refusals (PermissionDenied for the first two,
// InvalidArgument for the last).
var (
	// ErrNotAllowed: a requested field or derived fact is not released at the step.
	ErrNotAllowed = errors.New("not allowed at this step")
	// ErrDatasetNotAllowed: the step releases nothing of the requested dataset.
	ErrDatasetNotAllowed = errors.New("dataset not allowed at this step")
	// ErrInvalidPath: a requested field path is malformed or names no field of the dataset.
	ErrInvalidPath = errors.New("invalid field path")
)

// checkError carries a message in plain words (meant for the caseworker) and the sentinel it is a
// case of, without repeating the sentinel's text.
type checkError struct {
	kind        error
	msg         string
	field, fact string // what the refusal is about, when it is one field or fact
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.kind }

func refuse(kind error, format string, args ...any) error {
	return &checkError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func refuseField(kind error, field, format string, args ...any) error {
	return &checkError{kind: kind, msg: fmt.Sprintf(format, args...), field: field}
}

// CheckSubject is the field path or derived fact a Step.Check error is about, if it is about one.
func CheckSubject(err error) (field, fact string) {
	var ce *checkError
	if errors.As(err, &ce) {
		return ce.field, ce.fact
	}
	return "", ""
}

// Grant is what a request may receive: exactly the requested (or, if the request names nothing, all
// allowed) fields and facts.
type Grant struct {
	Rule *Rule
	// Fields are the field paths to release, normalized.
	Fields []string
	// Derived are the facts to compute, in request order (policy order when all are granted).
	Derived []*Derived
}

// Check decides a request against the step. If fields and derived are both empty, the grant is
// everything the rule allows. Otherwise every requested field must be covered by the rule and every
// derived name must exist, else an error wrapping ErrNotAllowed that names the first offending field
// or fact. Nothing is trimmed: an over-broad request is refused whole. A dataset the step does not
// release is an error wrapping ErrDatasetNotAllowed; a malformed or nonexistent path one wrapping
// ErrInvalidPath (checked first, so a typo is reported as a typo and not as a refusal).
func (s *Step) Check(authority, dataset string, fields, derived []string) (Grant, error) {
	rule, ok := s.Rule(authority, dataset)
	if !ok {
		if len(fields) > 0 {
			// Name what was asked for, so the caseworker sees which field the refusal is about.
			return Grant{}, refuseField(ErrDatasetNotAllowed, fields[0], "field %q of %s.%s is not released at step %q of journey %q: the step releases nothing from %s.%s",
				fields[0], authority, dataset, s.ID, s.journey, authority, dataset)
		}
		return Grant{}, refuse(ErrDatasetNotAllowed, "dataset %s.%s is not released at step %q of journey %q",
			authority, dataset, s.ID, s.journey)
	}
	if len(fields) == 0 && len(derived) == 0 {
		return Grant{Rule: rule, Fields: slices.Clone(rule.Fields), Derived: slices.Clone(rule.Derived)}, nil
	}
	// Rules from LoadBundle always carry their message; a rule built by hand without one can still
	// be checked for coverage.
	if rule.Message != nil {
		for _, f := range fields {
			if err := fieldmask.Validate(rule.Message, f); err != nil {
				return Grant{}, refuseField(ErrInvalidPath, f, "%s.%s: %v", authority, dataset, err)
			}
		}
	}
	for _, f := range fields {
		if !fieldmask.Covers(rule.Fields, f) {
			return Grant{}, refuseField(ErrNotAllowed, f, "field %q of %s.%s is not released at step %q of journey %q",
				f, authority, dataset, s.ID, s.journey)
		}
	}
	g := Grant{Rule: rule, Fields: fieldmask.Normalize(fields)}
	seen := map[string]bool{}
	for _, name := range derived {
		if seen[name] {
			continue
		}
		seen[name] = true
		i := slices.IndexFunc(rule.Derived, func(d *Derived) bool { return d.Name == name })
		if i < 0 {
			return Grant{}, &checkError{kind: ErrNotAllowed, fact: name, msg: fmt.Sprintf("derived fact %q of %s.%s is not released at step %q of journey %q",
				name, authority, dataset, s.ID, s.journey)}
		}
		g.Derived = append(g.Derived, rule.Derived[i])
	}
	return g, nil
}
