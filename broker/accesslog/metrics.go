package accesslog

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// bgCtx is the context metrics are recorded with: the log's metrics carry no request context.
var bgCtx = context.Background()

// Metric names: part of the operator's interface (README "Metrics", deploy/grafana).
const (
	MetricBatchSize     = "aperture.accesslog.batch.size"
	MetricAppendLatency = "aperture.accesslog.append.duration"
	MetricRecords       = "aperture.accesslog.records"
	MetricBreakerOpen   = "aperture.accesslog.breaker.open"
	MetricBreakerTrips  = "aperture.accesslog.breaker.trips"
	MetricProbes        = "aperture.accesslog.probes"
	MetricIndexFailures = "aperture.accesslog.index.failures"
	MetricUnauthentic   = "aperture.accesslog.unauthentic"
	// MetricListDuration times a citizen's listing (ListEntries), by page ("first", "next") and
	// result ("ok", "failed"). A cold listing loads one block of the store per entry it follows, and
	// where it must search a shard (MetricListSearches) every block between two entries.
	MetricListDuration = "aperture.accesslog.list.duration"
	// MetricListSearches counts listings that reached an entry whose link they could not follow
	// (written by repair or an earlier version, or linking to an entry deleted since) and searched
	// the shard below it, which costs what listings cost before links.
	MetricListSearches = "aperture.accesslog.list.searches"
	// MetricHeadsSaves counts the indexer's saves of citizens' newest index entries, by result ("ok",
	// "failed"): without recent ones a restarted indexer reads the shards after the last.
	MetricHeadsSaves = "aperture.accesslog.index.heads.saves"
	// MetricIndexLookups counts the indexer's lookups of a citizen's newest entry (one read of the
	// block it is in, for each citizen it did not know): high after a restart without saved heads.
	MetricIndexLookups = "aperture.accesslog.index.lookups"
)

// listBuckets are the bounds (seconds) of a listing: from warm blocks to walking a shard's cold ones.
var listBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// LatencyBuckets are the histogram bounds (seconds) of durable writes: from a fast fsync to the
// timeouts of a cluster without quorum.
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

var (
	resultDurable = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "durable")))
	resultFailed  = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "failed")))
	resultRefused = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "refused")))
	resultOK      = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))
	kindBatch     = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "batch")))
	kindEntry     = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "entry")))
	// listAttrs[next][failed] are a listing's page and result.
	listAttrs = [2][2]metric.MeasurementOption{
		{listAttr("first", "ok"), listAttr("first", "failed")},
		{listAttr("next", "ok"), listAttr("next", "failed")},
	}
)

func listAttr(page, result string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("page", page), attribute.String("result", result)))
}

type logMetrics struct {
	batchSize metric.Int64Histogram
	latency   metric.Float64Histogram
	list      metric.Float64Histogram
	searches  metric.Int64Counter
	saves     metric.Int64Counter
	records   metric.Int64Counter
	refused   refusedCounter
	trips     metric.Int64Counter
	probes    metric.Int64Counter
	reg       metric.Registration
}

// refusedCounter counts appends the breaker refused.
type refusedCounter struct{ c metric.Int64Counter }

func (r refusedCounter) Add(ctx context.Context, n int64) { r.c.Add(ctx, n, resultRefused) }

func noLogMetrics() *logMetrics {
	m, _ := newLogMetrics(nil, nil) // the no-op provider never fails
	return m
}

func newLogMetrics(mp metric.MeterProvider, l *Log) (*logMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	meter := mp.Meter("github.com/aperture-gov/aperture/broker/accesslog")
	m := &logMetrics{}
	var err, e error
	m.batchSize, e = meter.Int64Histogram(MetricBatchSize, metric.WithUnit("{record}"),
		metric.WithDescription("Records per durable ACCESS write (the group-commit factor)."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
	err = errors.Join(err, e)
	m.latency, e = meter.Float64Histogram(MetricAppendLatency, metric.WithUnit("s"),
		metric.WithDescription("Time from sending an ACCESS batch to JetStream's acknowledgement (fsync or replication)."),
		metric.WithExplicitBucketBoundaries(LatencyBuckets...))
	err = errors.Join(err, e)
	m.list, e = meter.Float64Histogram(MetricListDuration, metric.WithUnit("s"),
		metric.WithDescription("Time to list a page of a citizen's access records from the per-citizen index, by page (first, next) and result."),
		metric.WithExplicitBucketBoundaries(listBuckets...))
	err = errors.Join(err, e)
	m.searches, e = meter.Int64Counter(MetricListSearches, metric.WithUnit("{listing}"),
		metric.WithDescription("Listings that searched an index shard below an entry without a link to follow."))
	err = errors.Join(err, e)
	m.saves, e = meter.Int64Counter(MetricHeadsSaves, metric.WithUnit("{save}"),
		metric.WithDescription("Saves of the index heads (each citizen's newest index entry), by result."))
	err = errors.Join(err, e)
	m.records, e = meter.Int64Counter(MetricRecords, metric.WithUnit("{record}"),
		metric.WithDescription("Access records by outcome: durable, failed (write error or timeout), refused (breaker open)."))
	err = errors.Join(err, e)
	m.refused = refusedCounter{m.records}
	m.trips, e = meter.Int64Counter(MetricBreakerTrips,
		metric.WithDescription("Times the access log's breaker opened after a failed write."))
	err = errors.Join(err, e)
	m.probes, e = meter.Int64Counter(MetricProbes,
		metric.WithDescription("Probe writes while the breaker is open, by result."))
	err = errors.Join(err, e)
	open, e := meter.Int64ObservableGauge(MetricBreakerOpen,
		metric.WithDescription("1 while the access log's breaker is open: releases are refused with Unavailable."))
	err = errors.Join(err, e)
	idx, e := meter.Int64ObservableCounter(MetricIndexFailures,
		metric.WithDescription("Failed attempts of the per-citizen indexer (each is retried)."))
	err = errors.Join(err, e)
	lookups, e := meter.Int64ObservableCounter(MetricIndexLookups,
		metric.WithDescription("The indexer's lookups of a citizen's newest index entry, for citizens it did not know."))
	err = errors.Join(err, e)
	unauth, e := meter.Int64ObservableCounter(MetricUnauthentic,
		metric.WithDescription("ACCESS batches or index entries without a valid broker MAC: something other than the broker wrote to NATS."))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	if l != nil {
		m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			var v int64
			if l.breakerOpen() {
				v = 1
			}
			o.ObserveInt64(open, v)
			o.ObserveInt64(idx, int64(l.stats.indexFailures.Load()))
			o.ObserveInt64(lookups, int64(l.stats.indexLookups.Load()))
			o.ObserveInt64(unauth, int64(l.stats.unauthenticBatches.Load()), kindBatch)
			o.ObserveInt64(unauth, int64(l.stats.unauthenticEntries.Load()), kindEntry)
			return nil
		}, open, idx, lookups, unauth)
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *logMetrics) durable(b *batch, took time.Duration) {
	if b.probe {
		return
	}
	m.batchSize.Record(bgCtx, int64(len(b.waiters)))
	m.latency.Record(bgCtx, took.Seconds())
	m.records.Add(bgCtx, int64(len(b.waiters)), resultDurable)
}

func (m *logMetrics) listed(next bool, err error, took time.Duration) {
	p, r := 0, 0
	if next {
		p = 1
	}
	if err != nil {
		r = 1
	}
	m.list.Record(bgCtx, took.Seconds(), listAttrs[p][r])
}

func (m *logMetrics) searched() { m.searches.Add(bgCtx, 1) }

func (m *logMetrics) headsSaved(err error) { m.saves.Add(bgCtx, 1, resultOf(err)) }

func (m *logMetrics) failed(n int) { m.records.Add(bgCtx, int64(n), resultFailed) }

func (m *logMetrics) probe(err error) { m.probes.Add(bgCtx, 1, resultOf(err)) }

// resultOf is the result attribute ("ok", "failed") of an attempt that ended with err.
func resultOf(err error) metric.MeasurementOption {
	if err != nil {
		return resultFailed
	}
	return resultOK
}

func (m *logMetrics) unregister() {
	if m.reg != nil {
		_ = m.reg.Unregister() // fails only if already unregistered
	}
}
