// Package health decides whether the broker can do its job, honestly: named checks (can the access
// log take writes, does the ACCESS stream have a leader, is NATS connected, is each authority a
// journey needs reachable) are run together every interval, and each gRPC health service name is
// SERVING only while every check that gates it passes. The same verdicts answer the HTTP probes:
// /healthz (liveness: the process and its monitor run) and /readyz (readiness: every check passes).
package health

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// MetricCheck is the gauge of each check's last result (1 passing, 0 failing), by check name.
const MetricCheck = "aperture.health.check"

// Check is one condition the broker needs.
type Check struct {
	// Name identifies the check in logs, /readyz and the metric ("accesslog", "authority:population").
	// Names come from configuration and the registry, never from requests.
	Name string
	// Services are the gRPC health service names the check gates; the overall status ("") is gated
	// by every check.
	Services []string
	// Run returns nil while the condition holds. It MUST return by ctx's deadline.
	Run func(ctx context.Context) error
}

// Options configure a Monitor.
type Options struct {
	// Interval between rounds of checks. Default 1s.
	Interval time.Duration
	// Timeout bounds each check. Default 1s.
	Timeout time.Duration
	// Servers are the gRPC health servers to keep current.
	Servers []*health.Server
	Meter   metric.MeterProvider
	Logger  *slog.Logger
}

// Monitor runs the checks and publishes their verdicts.
type Monitor struct {
	opts   Options
	checks []Check
	poke   chan struct{}

	mu       sync.Mutex
	failing  map[string]string // check name → why, of the last round
	lastDone time.Time
	status   map[string]healthpb.HealthCheckResponse_ServingStatus
	reg      metric.Registration
}

// New returns a monitor of checks. Until the first round every service is NOT_SERVING.
func New(opts Options, checks ...Check) (*Monitor, error) {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Meter == nil {
		opts.Meter = noop.NewMeterProvider()
	}
	m := &Monitor{opts: opts, checks: checks, poke: make(chan struct{}, 1), failing: map[string]string{}, status: map[string]healthpb.HealthCheckResponse_ServingStatus{}}
	for _, s := range m.services() {
		m.set(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	meter := opts.Meter.Meter("github.com/aperture-gov/aperture/broker/health")
	g, err := meter.Int64ObservableGauge(MetricCheck, metric.WithDescription("1 if the health check passed its last round, 0 if it failed."))
	if err != nil {
		return nil, err
	}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.lastDone.IsZero() {
			return nil
		}
		for _, c := range m.checks {
			v := int64(1)
			if _, bad := m.failing[c.Name]; bad {
				v = 0
			}
			o.ObserveInt64(g, v, metric.WithAttributes(attribute.String("check", c.Name)))
		}
		return nil
	}, g)
	return m, err
}

// services are "" and every service a check gates.
func (m *Monitor) services() []string {
	set := map[string]bool{"": true}
	for _, c := range m.checks {
		for _, s := range c.Services {
			set[s] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

func (m *Monitor) set(service string, st healthpb.HealthCheckResponse_ServingStatus) {
	for _, srv := range m.opts.Servers {
		srv.SetServingStatus(service, st)
	}
}

// Poke runs a round now (a component saw its state change) instead of at the next tick.
func (m *Monitor) Poke() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// Run checks until ctx ends, then leaves every service NOT_SERVING.
func (m *Monitor) Run(ctx context.Context) {
	defer func() {
		for _, s := range m.services() {
			m.set(s, healthpb.HealthCheckResponse_NOT_SERVING)
		}
		if m.reg != nil {
			_ = m.reg.Unregister() // fails only if already unregistered
		}
	}()
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.poke:
		}
	}
}

// Round runs every check once, in parallel, and publishes the verdicts. A failure is published as
// soon as its check returns, not when the slowest check (often one waiting out its timeout against
// the same outage) does; recovery is published when the whole round passed.
func (m *Monitor) Round(ctx context.Context) {
	errs := make([]error, len(m.checks))
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(m.checks))
	for i, c := range m.checks {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
			defer cancel()
			results <- result{i, c.Run(cctx)}
		}()
	}
	for range m.checks {
		r := <-results
		errs[r.i] = r.err
		if r.err != nil && ctx.Err() == nil {
			m.markDown(m.checks[r.i], r.err)
		}
	}
	if ctx.Err() != nil {
		return
	}
	failing := map[string]string{}
	down := map[string]bool{}
	for i, c := range m.checks {
		if errs[i] == nil {
			continue
		}
		failing[c.Name] = errs[i].Error()
		down[""] = true
		for _, s := range c.Services {
			down[s] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.checks {
		why, bad := failing[c.Name]
		_, was := m.failing[c.Name]
		switch {
		case bad && !was:
			m.opts.Logger.Error("health check failing", "check", c.Name, "err", why)
		case !bad && was && !m.lastDone.IsZero():
			m.opts.Logger.Info("health check passing again", "check", c.Name)
		}
	}
	m.failing = failing
	m.lastDone = time.Now()
	for _, s := range m.services() {
		st := healthpb.HealthCheckResponse_SERVING
		if down[s] {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if m.status[s] != st {
			m.status[s] = st
			m.set(s, st)
		}
	}
}

// markDown turns the services c gates NOT_SERVING at once, and /readyz with them: readiness must
// not lag behind gRPC health until the round's slowest check returns.
func (m *Monitor) markDown(c Check, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, was := m.failing[c.Name]; !was {
		failing := maps.Clone(m.failing) // the published map is replaced, never changed in place
		failing[c.Name] = err.Error()
		m.failing = failing
		m.opts.Logger.Error("health check failing", "check", c.Name, "err", err.Error())
	}
	for _, s := range append([]string{""}, c.Services...) {
		if m.status[s] != healthpb.HealthCheckResponse_NOT_SERVING {
			m.status[s] = healthpb.HealthCheckResponse_NOT_SERVING
			m.set(s, healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
}

// Failing returns the checks that failed their last round, with why.
func (m *Monitor) Failing() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.failing)
}

// Handler serves /healthz and /readyz.
//
// /healthz is liveness: 200 while the monitor has completed a round within three intervals (plus
// the check timeout); a stuck process is restarted, a broker that merely cannot reach NATS is not.
// /readyz is readiness: 200 when the last round passed every check, else 503; the body names the
// failing checks and why.
func (m *Monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		m.mu.Lock()
		last := m.lastDone
		m.mu.Unlock()
		if last.IsZero() || time.Since(last) > 3*m.opts.Interval+m.opts.Timeout {
			http.Error(w, "health monitor stalled", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		m.mu.Lock()
		failing, done := maps.Clone(m.failing), !m.lastDone.IsZero()
		m.mu.Unlock()
		body := struct {
			Ready   bool              `json:"ready"`
			Failing map[string]string `json:"failing,omitempty"`
		}{Ready: done && len(failing) == 0, Failing: failing}
		w.Header().Set("Content-Type", "application/json")
		if !body.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body) // a write error means the prober left
	})
	return mux
}
