package consent

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// MetricChanges counts consents citizens gave and withdrew, by change and outcome.
const MetricChanges = "aperture_consent_changes"

// Changes and outcomes of MetricChanges.
const (
	ChangeGranted = "granted"
	ChangeRevoked = "revoked"
	OutcomeOK     = "ok"     // logged and stored
	OutcomeFailed = "failed" // the access log or the store was unavailable; the change did not take effect
)

// Counter counts MetricChanges. A nil Counter counts nothing.
type Counter struct{ c metric.Int64Counter }

// NewCounter registers MetricChanges with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter("github.com/aperture-gov/aperture/broker/consent").Int64Counter(MetricChanges,
		metric.WithUnit("{consent}"),
		metric.WithDescription("Consents citizens gave and withdrew, by change (granted, revoked) and outcome (ok, failed). Never a citizen."))
	if err != nil {
		return nil, err
	}
	return &Counter{c: c}, nil
}

// Add counts one change with its outcome.
func (c *Counter) Add(ctx context.Context, change, outcome string) {
	if c == nil {
		return
	}
	c.c.Add(ctx, 1, metric.WithAttributes(attribute.String("change", change), attribute.String("outcome", outcome)))
}
