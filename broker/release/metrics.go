package release

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
)

// Metric names: part of the operator's interface (README "Metrics", deploy/grafana).
const (
	MetricDecisions = "aperture.release.decisions"
	MetricStage     = "aperture.release.stage.duration"
	// MetricAnswers counts the keeping of released facts' answers for the citizen, by outcome
	// ("kept", "failed").
	MetricAnswers = "aperture.release.fact_answers"
	// MetricRegisterChecks counts the citizen-register checks before a case is opened, by outcome
	// ("found", "unknown", "unavailable"); MetricRegisterCheckDuration times them.
	MetricRegisterChecks        = "aperture.release.register_checks"
	MetricRegisterCheckDuration = "aperture.release.register_check.duration"
)

// Stages of the release path, the values of the "stage" attribute of MetricStage.
const (
	StageDecide    = "decide"     // case, policy decision and consent
	StageFetch     = "fetch"      // the authority's Fetch and minimisation
	StageLogAppend = "log_append" // the durable access record
)

// Decision values of the "decision" attribute of MetricDecisions.
const (
	DecisionReleased    = "released"
	DecisionRefused     = "refused"     // a refusal the access log holds
	DecisionUnavailable = "unavailable" // nothing released because the log, the case store or the authority failed
	DecisionInvalid     = "invalid"     // malformed request, not logged
)

// stageBuckets are latency bounds (seconds) from an in-memory decision to an authority timeout.
var stageBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

type metrics struct {
	decisions metric.Int64Counter
	stage     metric.Float64Histogram
	stageAttr map[string]metric.MeasurementOption
	answers   metric.Int64Counter
	kept      metric.MeasurementOption
	notKept   metric.MeasurementOption
	register  metric.Int64Counter
	regTime   metric.Float64Histogram
	regAttr   map[string]metric.MeasurementOption
	// decided caches the attribute set of each decisionKey: building and sorting a set per request
	// was most of the metric's cost. The keys are bounded like the labels (registry and policy).
	decided sync.Map // decisionKey → metric.MeasurementOption
}

// decisionKey is the attributes of one decision count.
type decisionKey struct {
	decision, reason, agency, journey, authority string
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	meter := mp.Meter("github.com/aperture-gov/aperture/broker/release")
	var err, e error
	m := &metrics{stageAttr: map[string]metric.MeasurementOption{}}
	m.decisions, e = meter.Int64Counter(MetricDecisions, metric.WithUnit("{request}"),
		metric.WithDescription("Release requests by decision, refusal reason (aperture.audit.v1.RefusalReason, else the refusal kind), agency, journey and authority. Never a citizen or a value."))
	err = errors.Join(err, e)
	m.stage, e = meter.Float64Histogram(MetricStage, metric.WithUnit("s"),
		metric.WithDescription("Time spent in each stage of the release path: decide, fetch, log_append."),
		metric.WithExplicitBucketBoundaries(stageBuckets...))
	err = errors.Join(err, e)
	m.answers, e = meter.Int64Counter(MetricAnswers, metric.WithUnit("{release}"),
		metric.WithDescription("Releases of facts whose answers the broker keeps for the citizen, by outcome (kept, failed). Never an answer."))
	err = errors.Join(err, e)
	m.register, e = meter.Int64Counter(MetricRegisterChecks, metric.WithUnit("{check}"),
		metric.WithDescription("Checks with the citizen register before a case is opened, by outcome (found, unknown, unavailable). Never a citizen."))
	err = errors.Join(err, e)
	m.regTime, e = meter.Float64Histogram(MetricRegisterCheckDuration, metric.WithUnit("s"),
		metric.WithDescription("Time to ask the citizen register and log the check before a case is opened."),
		metric.WithExplicitBucketBoundaries(stageBuckets...))
	err = errors.Join(err, e)
	m.regAttr = map[string]metric.MeasurementOption{}
	for _, o := range []string{"found", "unknown", "unavailable"} {
		m.regAttr[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
	}
	m.kept = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "kept")))
	m.notKept = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "failed")))
	for _, s := range []string{StageDecide, StageFetch, StageLogAppend} {
		m.stageAttr[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("stage", s)))
	}
	return m, err
}

func (m *metrics) since(ctx context.Context, stage string, start time.Time) {
	m.stage.Record(ctx, time.Since(start).Seconds(), m.stageAttr[stage])
}

// answerKept counts one keeping of fact answers.
func (m *metrics) answerKept(ctx context.Context, err error) {
	if err != nil {
		m.answers.Add(ctx, 1, m.notKept)
		return
	}
	m.answers.Add(ctx, 1, m.kept)
}

// registerChecked counts one citizen-register check that took since start and ended with err.
func (m *metrics) registerChecked(ctx context.Context, start time.Time, err error) {
	o := "found"
	var ref *refusal.Error
	switch {
	case errors.As(err, &ref) && ref.Kind == refusal.NotFound:
		o = "unknown"
	case err != nil:
		o = "unavailable"
	}
	m.register.Add(ctx, 1, m.regAttr[o])
	m.regTime.Record(ctx, time.Since(start).Seconds(), m.regAttr[o])
}

// outcome is what one release request is counted as. Every attribute comes from the registry or
// the policy (bounded sets), never from free text a caller sent.
type outcome struct {
	agency, journey, authority string
}

func (m *metrics) record(ctx context.Context, o outcome, err error) {
	decision, reason := DecisionReleased, ""
	if err != nil {
		kind := refusal.Unavailable
		var ref *refusal.Error
		if errors.As(err, &ref) {
			kind = ref.Kind
		}
		reason = kind.String()
		if ref != nil && ref.Why != 0 {
			reason = refusal.ErrorInfoReason(ref.Why) // the bounded, machine-readable reason
		}
		switch kind {
		case refusal.Unavailable:
			decision = DecisionUnavailable
		case refusal.InvalidArgument:
			decision = DecisionInvalid
		default:
			decision = DecisionRefused
		}
	}
	k := decisionKey{decision: decision, reason: reason, agency: o.agency, journey: o.journey, authority: o.authority}
	opt, ok := m.decided.Load(k)
	if !ok {
		opt, _ = m.decided.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("decision", decision), attribute.String("reason", reason),
			attribute.String("agency", o.agency), attribute.String("journey", o.journey),
			attribute.String("authority", o.authority))))
	}
	m.decisions.Add(ctx, 1, opt.(metric.MeasurementOption))
}

// authorityLabel is the requested authority if the registry has it, else "other": the request's
// authority is caller input and must not mint new time series.
func authorityLabel(b *policy.Bundle, id string) string {
	if b != nil && b.Registry != nil {
		if _, ok := b.Registry.Authority(id); ok {
			return id
		}
	}
	return "other"
}
