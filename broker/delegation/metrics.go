package delegation

import (
	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker/counter"
)

// MetricActions counts what citizens did with powers of attorney, by action and outcome.
const MetricActions = "aperture.delegation.actions"

// Outcomes counted by MetricActions.
const (
	// OutcomeAllowed: a call on someone's behalf that was logged and answered.
	OutcomeAllowed = "allowed"
	// OutcomeDenied: a call on someone's behalf refused (no such delegation, expired, revoked, out of
	// scope or unverified); nothing was shown or changed.
	OutcomeDenied = "denied"
	// OutcomeGranted and OutcomeRevoked count the givers' grants and revocations.
	OutcomeGranted = "granted"
	OutcomeRevoked = "revoked"
)

// Counter counts MetricActions: Add(ctx, action, outcome). A nil Counter counts nothing.
type Counter = counter.Counter

// NewCounter registers MetricActions with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	return counter.New(mp, "github.com/aperture-gov/aperture/broker/delegation", MetricActions, "{action}",
		"Powers of attorney granted and revoked, and calls on someone's behalf by action (view_accesses, view_cases, view_consents, grant_consent, grant, revoke) and outcome (allowed, denied, granted, revoked). Never a citizen.",
		"action", "outcome")
}
