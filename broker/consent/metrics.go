package consent

import (
	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker/counter"
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

// Counter counts MetricChanges: Add(ctx, change, outcome). A nil Counter counts nothing.
type Counter = counter.Counter

// NewCounter registers MetricChanges with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	return counter.New(mp, "github.com/aperture-gov/aperture/broker/consent", MetricChanges, "{consent}",
		"Consents citizens gave and withdrew, by change (granted, revoked) and outcome (ok, failed). Never a citizen.",
		"change", "outcome")
}
