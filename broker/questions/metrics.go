package questions

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
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

// Counter counts MetricQuestions. A nil Counter counts nothing.
type Counter struct{ c metric.Int64Counter }

// NewCounter registers MetricQuestions with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter("github.com/aperture-gov/aperture/broker/questions").Int64Counter(MetricQuestions,
		metric.WithUnit("{question}"),
		metric.WithDescription("Citizens' questions about accesses asked and answered, by event (asked, answered), agency and outcome (ok, failed). Never a citizen or a text."))
	if err != nil {
		return nil, err
	}
	return &Counter{c: c}, nil
}

// Add counts one event for agency with its outcome.
func (c *Counter) Add(ctx context.Context, event, agency, outcome string) {
	if c == nil {
		return
	}
	c.c.Add(ctx, 1, metric.WithAttributes(attribute.String("event", event), attribute.String("agency", agency), attribute.String("outcome", outcome)))
}
