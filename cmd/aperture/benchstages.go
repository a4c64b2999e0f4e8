package main

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/release"
	"github.com/aperture-gov/aperture/broker/server"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// stageFigure is where part of a brokered call's time went during the brokered run's measured window
// (not its warm-up, which fills the broker's caches), from the broker's own histograms (the ones
// /metrics serves).
type stageFigure struct {
	// Stage is "release" (the whole call as the broker's gRPC server saw it), a release stage
	// ("decide", "fetch", "log_append") or "durable_write" (one ACCESS batch, from sending it to
	// JetStream's acknowledgement after fsync; log_append includes waiting for the write ahead).
	Stage string  `json:"stage"`
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	// P50 and P99 are estimated from the histogram's buckets by linear interpolation inside the
	// bucket, as Prometheus's histogram_quantile does: read them to a bucket's resolution.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
}

// stageSource names one series of a broker histogram: its Prometheus name and the label that picks it.
type stageSource struct {
	stage, metric, label, value string
}

// promSeconds is the Prometheus name the OpenTelemetry exporter gives a histogram in seconds.
func promSeconds(otelName string) string { return strings.ReplaceAll(otelName, ".", "_") + "_seconds" }

func releaseStages() []stageSource {
	stage := promSeconds(release.MetricStage)
	return []stageSource{
		{"release", promSeconds(server.MetricCallDuration), "rpc_method", strings.TrimPrefix(brokerv1.BrokerService_Release_FullMethodName, "/")},
		{release.StageDecide, stage, "stage", release.StageDecide},
		{release.StageFetch, stage, "stage", release.StageFetch},
		{release.StageLogAppend, stage, "stage", release.StageLogAppend},
		{"durable_write", promSeconds(accesslog.MetricAppendLatency), "", ""},
	}
}

// histSnapshot is each stage's histogram at one moment.
type histSnapshot map[string]*dto.Histogram

// snapshotStages reads the stages' histograms of one or more brokers (replicas: summed).
func snapshotStages(brokers ...prometheus.Gatherer) (histSnapshot, error) {
	snap := histSnapshot{}
	for _, g := range brokers {
		families, err := g.Gather()
		if err != nil {
			return nil, fmt.Errorf("gather the broker's metrics: %w", err)
		}
		byName := make(map[string]*dto.MetricFamily, len(families))
		for _, f := range families {
			byName[f.GetName()] = f
		}
		for _, src := range releaseStages() {
			f := byName[src.metric]
			if f == nil {
				continue // nothing recorded yet
			}
			for _, m := range f.GetMetric() {
				if src.label == "" || hasLabel(m, src.label, src.value) {
					snap[src.stage] = mergeHist(snap[src.stage], m.GetHistogram())
				}
			}
		}
	}
	return snap, nil
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// mergeHist adds h to acc (series of one histogram: the same bounds), e.g. a call's status codes
// or the same stage on two replicas.
func mergeHist(acc, h *dto.Histogram) *dto.Histogram {
	if h == nil {
		return acc
	}
	if acc == nil {
		acc = &dto.Histogram{}
		for _, b := range h.GetBucket() {
			acc.Bucket = append(acc.Bucket, &dto.Bucket{UpperBound: b.UpperBound, CumulativeCount: new(uint64)})
		}
		acc.SampleCount, acc.SampleSum = new(uint64), new(float64)
	}
	*acc.SampleCount += h.GetSampleCount()
	*acc.SampleSum += h.GetSampleSum()
	for i, b := range h.GetBucket() {
		*acc.Bucket[i].CumulativeCount += b.GetCumulativeCount()
	}
	return acc
}

// stagesBetween is what each stage recorded between two snapshots, in releaseStages' order.
func stagesBetween(before, after histSnapshot) []stageFigure {
	var out []stageFigure
	for _, src := range releaseStages() {
		a := after[src.stage]
		if a == nil {
			continue
		}
		b := before[src.stage]
		n := a.GetSampleCount() - b.GetSampleCount()
		if n == 0 {
			continue
		}
		bounds := make([]float64, len(a.GetBucket()))
		counts := make([]uint64, len(a.GetBucket()))
		for i, bk := range a.GetBucket() {
			bounds[i], counts[i] = bk.GetUpperBound(), bk.GetCumulativeCount()
			if b != nil {
				counts[i] -= b.GetBucket()[i].GetCumulativeCount()
			}
		}
		out = append(out, stageFigure{
			Stage: src.stage, Count: n,
			Mean: (a.GetSampleSum() - b.GetSampleSum()) / float64(n) * 1000,
			P50:  bucketQuantile(0.50, bounds, counts, n) * 1000,
			P99:  bucketQuantile(0.99, bounds, counts, n) * 1000,
		})
	}
	return out
}

// bucketQuantile estimates quantile q of n observations from cumulative bucket counts (bounds
// ascending, the +Inf bucket implied by n): linear interpolation inside the bucket that holds the
// rank, from 0 for the first bucket; a rank past the last bound answers that bound, as
// histogram_quantile does. Without bounds there is nothing to estimate from: 0 (JSON has no NaN).
func bucketQuantile(q float64, bounds []float64, cumulative []uint64, n uint64) float64 {
	rank := q * float64(n)
	lower, below := 0.0, uint64(0)
	for i, c := range cumulative {
		if float64(c) >= rank {
			if c == below {
				return bounds[i]
			}
			return lower + (bounds[i]-lower)*(rank-float64(below))/float64(c-below)
		}
		lower, below = bounds[i], c
	}
	if len(bounds) == 0 {
		return 0
	}
	return bounds[len(bounds)-1]
}
