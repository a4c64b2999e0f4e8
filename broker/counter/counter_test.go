package counter_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aperture-gov/aperture/broker/counter"
)

func TestCounterLabelsByKeys(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	c, err := counter.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), "test", "events", "{event}", "events", "kind", "outcome")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Add(ctx, "a", "ok")
	c.Add(ctx, "a", "ok")
	c.Add(ctx, "b") // a missing value is empty
	var nilCounter *counter.Counter
	nilCounter.Add(ctx, "ignored") // counts nothing, does not panic

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[[2]string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				kind, _ := dp.Attributes.Value(attribute.Key("kind"))
				outcome, _ := dp.Attributes.Value(attribute.Key("outcome"))
				got[[2]string{kind.AsString(), outcome.AsString()}] = dp.Value
			}
		}
	}
	want := map[[2]string]int64{{"a", "ok"}: 2, {"b", ""}: 1}
	if len(got) != len(want) || got[[2]string{"a", "ok"}] != 2 || got[[2]string{"b", ""}] != 1 {
		t.Fatalf("counted %v, want %v", got, want)
	}
}
