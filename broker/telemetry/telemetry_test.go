package telemetry_test

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker/telemetry"
)

// TestPrometheusEndpoint: a counter recorded through the provider appears on the handler in the
// Prometheus text format, with its unit suffix and attributes, next to the Go runtime's metrics.
func TestPrometheusEndpoint(t *testing.T) {
	tel, err := telemetry.New(context.Background(), telemetry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if tel.Tracing() {
		t.Fatal("tracing is on without being asked for")
	}
	c, err := tel.MeterProvider().Meter("test").Int64Counter("aperture.test.things", metric.WithUnit("{thing}"))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 3)
	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"aperture_test_things_total", "go_goroutines", `service_name="aperture-broker"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics do not contain %s:\n%.2000s", want, body)
		}
	}
}

// TestTracingStdout: with tracing "stdout" spans are exported; an unknown exporter is refused.
func TestTracingStdout(t *testing.T) {
	var out bytes.Buffer
	tel, err := telemetry.New(context.Background(), telemetry.Options{Tracing: telemetry.TracingStdout, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "release")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"Name":"release"`) {
		t.Fatalf("no span exported: %q", out.String())
	}
	if _, err := telemetry.New(context.Background(), telemetry.Options{Tracing: "zipkin"}); err == nil {
		t.Fatal("an unknown tracing exporter was accepted")
	}
}
