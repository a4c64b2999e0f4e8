// Package telemetry builds the broker's OpenTelemetry providers: a MeterProvider whose metrics are
// served in the Prometheus text format from its own registry (nothing global: every component gets
// the provider passed in), and, when asked for, a TracerProvider exporting spans over OTLP/gRPC or
// to stdout. Metric attributes and span attributes never carry a citizen id or a field value.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Tracing exporters.
const (
	TracingOff    = ""
	TracingOTLP   = "otlp"
	TracingStdout = "stdout"
)

// Options configure the providers.
type Options struct {
	// ServiceName is the service.name resource attribute ("aperture-broker").
	ServiceName string
	// Tracing is "" (off, the default), "otlp" (OTLP over gRPC to OTLPEndpoint) or "stdout".
	Tracing string
	// OTLPEndpoint is host:port of an OTLP/gRPC collector; empty uses the exporter's defaults
	// (OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317).
	OTLPEndpoint string
	// OTLPInsecure sends spans without TLS (a collector on the same host or pod).
	OTLPInsecure bool
	// Stdout receives spans with Tracing "stdout".
	Stdout io.Writer
}

// Telemetry holds the providers.
type Telemetry struct {
	meter    *sdkmetric.MeterProvider
	registry *prometheus.Registry
	tracer   trace.TracerProvider
	sdkTrace *sdktrace.TracerProvider
}

// New builds the providers.
func New(ctx context.Context, opts Options) (*Telemetry, error) {
	if opts.ServiceName == "" {
		opts.ServiceName = "aperture-broker"
	}
	res := resource.NewSchemaless(attribute.String("service.name", opts.ServiceName))
	t := &Telemetry{registry: prometheus.NewRegistry()}
	t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(t.registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	t.meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))

	var spans sdktrace.SpanExporter
	switch opts.Tracing {
	case TracingOff:
		t.tracer = tracenoop.NewTracerProvider()
		return t, nil
	case TracingOTLP:
		o := []otlptracegrpc.Option{}
		if opts.OTLPEndpoint != "" {
			o = append(o, otlptracegrpc.WithEndpoint(opts.OTLPEndpoint))
		}
		if opts.OTLPInsecure {
			o = append(o, otlptracegrpc.WithInsecure())
		}
		spans, err = otlptracegrpc.New(ctx, o...)
	case TracingStdout:
		w := opts.Stdout
		if w == nil {
			w = io.Discard
		}
		spans, err = stdouttrace.New(stdouttrace.WithWriter(w))
	default:
		return nil, fmt.Errorf("tracing %q: want %q, %q or none", opts.Tracing, TracingOTLP, TracingStdout)
	}
	if err != nil {
		_ = t.meter.Shutdown(ctx)
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	t.sdkTrace = sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
	t.tracer = t.sdkTrace
	return t, nil
}

// MeterProvider is the provider to pass to every component.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meter }

// TracerProvider is a no-op provider unless tracing is on.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracer }

// Tracing reports whether spans are exported.
func (t *Telemetry) Tracing() bool { return t.sdkTrace != nil }

// MetricsHandler serves the metrics in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Gatherer reads the metrics as MetricsHandler serves them, for a process that looks at its own
// figures (the bench's stage breakdown).
func (t *Telemetry) Gatherer() prometheus.Gatherer { return t.registry }

// Shutdown flushes spans and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.sdkTrace != nil {
		errs = append(errs, t.sdkTrace.Shutdown(ctx))
	}
	errs = append(errs, t.meter.Shutdown(ctx))
	return errors.Join(errs...)
}
