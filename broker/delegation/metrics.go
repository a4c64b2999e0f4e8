package delegation

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
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

// Counter counts MetricActions.
type Counter struct{ c metric.Int64Counter }

// NewCounter registers MetricActions with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter("github.com/aperture-gov/aperture/broker/delegation").Int64Counter(MetricActions,
		metric.WithUnit("{action}"),
		metric.WithDescription("Powers of attorney granted and revoked, and calls on someone's behalf by action (view_accesses, view_cases, view_consents, grant_consent, grant, revoke) and outcome (allowed, denied, granted, revoked). Never a citizen."))
	if err != nil {
		return nil, err
	}
	return &Counter{c: c}, nil
}

// Add counts one outcome of action.
func (c *Counter) Add(ctx context.Context, action, outcome string) {
	if c == nil {
		return
	}
	c.c.Add(ctx, 1, metric.WithAttributes(attribute.String("action", action), attribute.String("outcome", outcome)))
}
