// Package refusal defines why the broker says no. Domain code returns *Error with a Kind and a reason in
// plain words that a caseworker understands; the gRPC edge turns the Kind into a status code. Reasons name
// field paths, datasets, steps and journeys — never a citizen id or a field value.
package refusal

import (
	"errors"
	"fmt"
	"strings"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
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
	// ResourceExhausted: a limit the policy sets was reached (break-glass uses per caseworker).
	ResourceExhausted
)

var kindNames = [...]string{"Internal", "PermissionDenied", "FailedPrecondition", "NotFound", "InvalidArgument", "Unavailable", "Unauthenticated", "Aborted", "ResourceExhausted"}

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
	// Why is the machine-readable reason, for the google.rpc.ErrorInfo of the status and the access
	// record; unspecified for refusals that are not about a request's substance.
	Why auditv1.RefusalReason
	// Meta says what the refusal is about ("field", "step", …), for ErrorInfo.metadata. It names
	// policy terms only, never a citizen id or a value.
	Meta map[string]string
}

// Because sets the machine-readable reason and metadata (key, value pairs) and returns e.
func (e *Error) Because(why auditv1.RefusalReason, kv ...string) *Error {
	e.Why = why
	if len(kv) > 0 && e.Meta == nil {
		e.Meta = make(map[string]string, len(kv)/2)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			e.Meta[kv[i]] = kv[i+1]
		}
	}
	return e
}

// Subject is what the refusal is about within the request: the field path or fact named in Meta.
func (e *Error) Subject() string {
	if f := e.Meta["field"]; f != "" {
		return f
	}
	return e.Meta["fact"]
}

// ErrorInfoDomain is the domain of the google.rpc.ErrorInfo the broker attaches to refusals.
const ErrorInfoDomain = "aperture.broker.v1"

// ErrorInfoReason is the ErrorInfo reason for why: the enum value's name without its prefix.
func ErrorInfoReason(why auditv1.RefusalReason) string {
	return strings.TrimPrefix(why.String(), "REFUSAL_REASON_")
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
