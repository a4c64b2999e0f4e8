// Package refusal defines why the broker says no. Domain code returns *Error with a Kind and a reason in
// plain words that a caseworker understands; the gRPC edge turns the Kind into a status code. Reasons name
// field paths, datasets, steps and journeys — never a citizen id or a field value.
package refusal

import (
	"errors"
	"fmt"
)

// Kind is the class of a refusal. Each maps to exactly one gRPC code at the edge.
type Kind int

const (
	// Internal is a bug or an unexpected failure; the reason is not shown to callers.
	Internal Kind = iota
	// PermissionDenied: not your step, not your case, or a field or fact the step does not allow.
	PermissionDenied
	// FailedPrecondition: case closed, step not current, consent missing or expired.
	FailedPrecondition
	// NotFound: no such case, journey, dataset or record.
	NotFound
	// InvalidArgument: a malformed id, field path or request.
	InvalidArgument
	// Unavailable: the access log or an authority is down; nothing was released.
	Unavailable
	// Unauthenticated: no usable caller identity.
	Unauthenticated
	// Aborted: a concurrent change won (e.g. two replicas advancing the same step); retry.
	Aborted
)

var kindNames = [...]string{"Internal", "PermissionDenied", "FailedPrecondition", "NotFound", "InvalidArgument", "Unavailable", "Unauthenticated", "Aborted"}

// Kinds are all the kinds there are, so that a table meant to cover each (the edge's gRPC codes) can be
// checked to.
func Kinds() []Kind {
	ks := make([]Kind, len(kindNames))
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is a refusal: a Kind, a reason safe to show the caller, and an optional internal cause that is
// logged but never shown.
type Error struct {
	Kind   Kind
	Reason string
	Cause  error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Reason + ": " + e.Cause.Error()
	}
	return e.Reason
}

func (e *Error) Unwrap() error { return e.Cause }

// New returns a refusal of kind k with a formatted reason.
func New(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Reason: fmt.Sprintf(format, args...)}
}

// Wrap returns a refusal of kind k whose reason is shown and whose cause is kept for logs.
func Wrap(k Kind, cause error, format string, args ...any) *Error {
	return &Error{Kind: k, Reason: fmt.Sprintf(format, args...), Cause: cause}
}

// As returns the refusal in err's chain, or an Internal refusal wrapping err.
func As(err error) *Error {
	var r *Error
	if errors.As(err, &r) {
		return r
	}
	return &Error{Kind: Internal, Reason: "internal error", Cause: err}
}
