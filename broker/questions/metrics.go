package questions

import (
	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker/counter"
)

// MetricQuestions counts citizens' questions asked and the agencies' answers, by event, agency and
// outcome.
const MetricQuestions = "aperture_questions"

// Events and outcomes of MetricQuestions.
const (
	EventAsked    = "asked"
	EventAnswered = "answered"
	OutcomeOK     = "ok"     // logged and stored
	OutcomeFailed = "failed" // the access log or the store was unavailable; nothing took effect
)

// Counter counts MetricQuestions: Add(ctx, event, agency, outcome). A nil Counter counts nothing.
type Counter = counter.Counter

// NewCounter registers MetricQuestions with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	return counter.New(mp, "github.com/aperture-gov/aperture/broker/questions", MetricQuestions, "{question}",
		"Citizens' questions about accesses asked and answered, by event (asked, answered), agency and outcome (ok, failed). Never a citizen or a text.",
		"event", "agency", "outcome")
}
