// Package counter is the broker's labelled event counter: an OpenTelemetry Int64Counter whose
// attributes have fixed keys, so that each store declares only its metric's name, words and keys.
// Attribute values are outcomes and party ids, never a citizen id or a field value.
package counter

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Counter counts events by the values of its keys. A nil Counter counts nothing.
type Counter struct {
	c    metric.Int64Counter
	keys []string
}

// New registers the counter name under the instrumentation scope with mp (nil: no metrics).
func New(mp metric.MeterProvider, scope, name, unit, description string, keys ...string) (*Counter, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter(scope).Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(description))
	if err != nil {
		return nil, fmt.Errorf("counter %s: %w", name, err)
	}
	return &Counter{c: c, keys: keys}, nil
}

// Add counts one event; values are those of the keys, in their order (a missing one is empty).
func (c *Counter) Add(ctx context.Context, values ...string) {
	if c == nil {
		return
	}
	attrs := make([]attribute.KeyValue, len(c.keys))
	for i, k := range c.keys {
		v := ""
		if i < len(values) {
			v = values[i]
		}
		attrs[i] = attribute.String(k, v)
	}
	c.c.Add(ctx, 1, metric.WithAttributes(attrs...))
}
