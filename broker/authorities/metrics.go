package authorities

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metric names: part of the operator's interface (README "Metrics", deploy/grafana).
const (
	MetricFetchDuration = "aperture.authority.fetch.duration"
	MetricUp            = "aperture.authority.up"
)

// Results of a fetch, the "result" attribute of MetricFetchDuration.
const (
	resultOK          = "ok"
	resultNotFound    = "not_found"
	resultUnavailable = "unavailable"
	resultError       = "error"
)

var fetchBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

type metrics struct {
	fetch metric.Float64Histogram
	reg   metric.Registration
	// attrs caches the attribute set of each (authority, result): building and sorting a set on every
	// Fetch showed in the release path's allocation profile. Both are bounded (registry, results).
	attrs sync.Map // [2]string → metric.MeasurementOption
}

func newMetrics(mp metric.MeterProvider, p *Pool) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	meter := mp.Meter("github.com/aperture-gov/aperture/broker/authorities")
	m := &metrics{}
	var err, e error
	m.fetch, e = meter.Float64Histogram(MetricFetchDuration, metric.WithUnit("s"),
		metric.WithDescription("Authority Fetch latency by authority and result (ok, not_found, unavailable, error)."),
		metric.WithExplicitBucketBoundaries(fetchBuckets...))
	err = errors.Join(err, e)
	up, e := meter.Int64ObservableGauge(MetricUp,
		metric.WithDescription("1 if the authority answered its last health check SERVING, 0 if not."))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ids, ups := p.reachable()
		for i, id := range ids {
			v := int64(0)
			if ups[i] {
				v = 1
			}
			o.ObserveInt64(up, v, metric.WithAttributes(attribute.String("authority", id)))
		}
		return nil
	}, up)
	return m, err
}

// fetched records one Fetch. authority is a registry id (Fetch refuses others before calling).
func (m *metrics) fetched(ctx context.Context, authority, result string, start time.Time) {
	k := [2]string{authority, result}
	opt, ok := m.attrs.Load(k)
	if !ok {
		opt, _ = m.attrs.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("authority", authority), attribute.String("result", result))))
	}
	m.fetch.Record(ctx, time.Since(start).Seconds(), opt.(metric.MeasurementOption))
}

func (m *metrics) unregister() {
	if m.reg != nil {
		_ = m.reg.Unregister() // fails only if already unregistered
	}
}
