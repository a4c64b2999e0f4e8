package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/cases"
	brokerhealth "github.com/aperture-gov/aperture/broker/health"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	"github.com/aperture-gov/aperture/broker/server"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Metric names of the broker's own observations (README "Metrics").
const (
	MetricNATSConnected   = "aperture.nats.connected"
	MetricNATSReconnects  = "aperture.nats.reconnects"
	MetricIndexLag        = "aperture.accesslog.index.lag"
	MetricIntegratorLag   = "aperture.tlog.integration.age"
	MetricCheckpointAge   = "aperture.tlog.checkpoint.age"
	MetricTreeSize        = "aperture.tlog.tree.size"
	MetricIntegratorLead  = "aperture.tlog.leader"
	MetricWitnessRounds   = "aperture.witness.rounds"
	MetricWitnessCosigned = "aperture.witness.cosigned"
	MetricWitnessRefusals = "aperture.witness.refusals"
	MetricWitnessDown     = "aperture.witness.unavailable"
	MetricWitnessLatency  = "aperture.witness.latency"
	// MetricReviewsClosed counts break-glass reviews auditors closed, by outcome.
	MetricReviewsClosed = "aperture.breakglass.reviews.closed"
	// MetricUnverified counts reads of a stored switch-off or break-glass record that did not
	// authenticate (each refused what it would have allowed), by store.
	MetricUnverified = "aperture.store.unverified"
	// MetricReviewsOpen is the number of break-glass reviews waiting for an auditor;
	// MetricReviewOldest the age of the oldest (0 when none).
	MetricReviewsOpen  = "aperture.breakglass.reviews.open"
	MetricReviewOldest = "aperture.breakglass.reviews.oldest.age"
	// MetricOutboxPublished, MetricOutboxFailures and MetricOutboxSkipped count the outbox relays'
	// events (case events, correction events): published, failed attempts (each retried), and
	// revisions skipped because they did not authenticate. By outbox.
	MetricOutboxPublished = "aperture.outbox.published"
	MetricOutboxFailures  = "aperture.outbox.failures"
	MetricOutboxSkipped   = "aperture.outbox.skipped"
)

// Health check names (in /readyz, the logs and aperture_health_check).
const (
	CheckNATS         = "nats"
	CheckAccessLog    = "accesslog"
	CheckAccessStream = "access-stream"
	CheckAccessIndex  = "access-index"
	CheckCaseStore    = "case-store"
	checkAuthority    = "authority:"
)

// observers are the broker's metric callbacks and health monitor.
type observers struct {
	reg    metric.Registration
	stop   context.CancelFunc
	done   chan struct{}
	idxLag atomic.Uint64 // latest index lag, written by the access stream's health check
	// Break-glass reviews closed since start, by outcome.
	justified, notJustified atomic.Uint64
	// The auditors' open break-glass reviews and the oldest one's time (unix seconds; 0: none), as
	// the backlog loop last read them; backlogRead is false until it has once.
	openReviews, oldestReview atomic.Int64
	backlogRead               atomic.Bool
}

// watchReviewBacklog reads the break-glass review queue every interval for the backlog metrics (an
// operator alerts on reviews left open too long), until ctx ends.
func (b *Broker) watchReviewBacklog(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		open, err := b.BreakGlass.List(lctx, false)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.log.Warn("break-glass review backlog: cannot read the queue", "err", err)
		} else {
			oldest := int64(0)
			for _, r := range open { // oldest first; an unverified review has no time
				if !r.Unverified {
					oldest = r.Time.Unix()
					break
				}
			}
			b.observe.openReviews.Store(int64(len(open)))
			b.observe.oldestReview.Store(oldest)
			b.observe.backlogRead.Store(true)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reviewClosed counts a closed break-glass review.
func (o *observers) reviewClosed(_ context.Context, outcome auditv1.BreakGlassOutcome) {
	switch outcome {
	case auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_JUSTIFIED:
		o.justified.Add(1)
	case auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_NOT_JUSTIFIED:
		o.notJustified.Add(1)
	}
}

// serverTelemetry are the gRPC server options that measure every call (CallMetrics) and, with tracing
// on, trace it (otelgrpc, spans only). They go before the edge's interceptors, so the duration counts
// the whole chain and the status is the one the caller got.
func (b *Broker) serverTelemetry() ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if b.deps.Meter != nil {
		m, err := server.NewCallMetrics(b.deps.Meter.Meter("github.com/aperture-gov/aperture/broker"))
		if err != nil {
			return nil, err
		}
		opts = append(opts, m.ServerOptions()...)
	}
	if b.deps.Tracer != nil {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(b.otelgrpcOptions()...)))
	}
	return opts, nil
}

// clientTracing are the dial options that trace calls to the authorities. Their durations and results
// are measured by the pool (aperture_authority_fetch_duration_seconds), so without tracing there is
// no stats handler: otelgrpc's cost per call showed in the release path's profile.
func (b *Broker) clientTracing() []grpc.DialOption {
	if b.deps.Tracer == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(b.otelgrpcOptions()...))}
}

// otelgrpcOptions make otelgrpc trace only: the broker measures calls itself.
func (b *Broker) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()), otelgrpc.WithTracerProvider(b.deps.Tracer)}
}

// waitForJetStream waits until JetStream answers an account info request, which in a cluster only
// the metadata leader does: a stream created before the cluster has elected one is a request
// nobody answers. Each attempt has its own short deadline and the attempts back off, so a broker
// started with its cluster waits for it (saying so) instead of failing at the first deadline.
func (b *Broker) waitForJetStream(ctx context.Context) error {
	start := time.Now()
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.js.AccountInfo(actx)
		if err == nil && b.cfg.Replicas > 1 {
			err = b.probePlacement(actx)
		}
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				b.log.Info("JetStream is available", "waited", time.Since(start).Round(time.Millisecond).String())
			}
			return nil
		case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount), errors.Is(err, jetstream.ErrJetStreamNotEnabled):
			return fmt.Errorf("NATS: %w", err)
		case ctx.Err() != nil:
			return fmt.Errorf("JetStream did not become available within the start timeout (%s; no metadata leader in the cluster, or too few nodes for %d replicas?): %w", b.cfg.StartTimeout, b.cfg.Replicas, err)
		}
		if attempt == 1 || attempt%5 == 0 {
			b.log.Info("waiting for JetStream (the NATS cluster has no metadata leader, or too few nodes for the replicas, yet?)", "attempt", attempt, "replicas", b.cfg.Replicas,
				"waited", time.Since(start).Round(time.Millisecond).String(), "start_timeout", b.cfg.StartTimeout.String(), "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// probePlacement creates and deletes a small stream with the configured replicas. A cluster that has
// elected its metadata leader may not yet know enough peers to place a replicated stream ("no
// suitable peers for placement"); the broker's own streams are created only once one can be placed.
func (b *Broker) probePlacement(ctx context.Context) error {
	name := "APERTURE_PLACEMENT_PROBE_" + ids.New("p", time.Now()) // one per broker: brokers starting together do not meet
	if _, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"aperture.internal.placement-probe." + name}, Storage: jetstream.MemoryStorage,
		Replicas: b.cfg.Replicas, MaxMsgs: 1,
	}); err != nil {
		return fmt.Errorf("place a stream with %d replicas: %w", b.cfg.Replicas, err)
	}
	if err := b.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		b.log.Warn("delete the placement probe stream", "stream", name, "err", err)
	}
	return nil
}

// breakerChanged runs a health round at once when the access log's breaker opens or closes.
func (b *Broker) breakerChanged(bool) {
	if b.monitor != nil {
		b.monitor.Poke()
	}
}

// startObserving registers the broker's metric callbacks and starts the health monitor.
func (b *Broker) startObserving(ctx context.Context) error {
	var err error
	if b.observe.reg, err = b.registerMetrics(); err != nil {
		return fmt.Errorf("broker metrics: %w", err)
	}
	servers := []*health.Server{b.health}
	if b.citizenHealth != nil {
		servers = append(servers, b.citizenHealth)
	}
	b.monitor, err = brokerhealth.New(brokerhealth.Options{
		Interval: b.cfg.HealthInterval, Servers: servers, Meter: b.deps.Meter,
		Logger: b.log.With("component", "health"),
	}, b.healthChecks()...)
	if err != nil {
		return fmt.Errorf("health monitor: %w", err)
	}
	b.monitor.Round(ctx)
	mctx, stop := context.WithCancel(context.Background())
	b.observe.stop, b.observe.done = stop, make(chan struct{})
	go func() {
		defer close(b.observe.done)
		b.monitor.Run(mctx)
	}()
	return nil
}

func (b *Broker) stopObserving() {
	if b.observe.stop != nil {
		b.observe.stop()
		<-b.observe.done
		b.observe.stop = nil
	}
	if b.observe.reg != nil {
		_ = b.observe.reg.Unregister() // fails only if already unregistered
		b.observe.reg = nil
	}
}

// Health serves /healthz (liveness) and /readyz (readiness) from the health monitor.
func (b *Broker) Health() http.Handler { return b.monitor.Handler() }

// HealthFailing names the health checks failing now, with why (empty while ready).
func (b *Broker) HealthFailing() map[string]string { return b.monitor.Failing() }

// healthChecks are what the broker needs to do its job, and which gRPC services each gates.
func (b *Broker) healthChecks() []brokerhealth.Check {
	releases := brokerv1.BrokerService_ServiceDesc.ServiceName
	audit := auditv1.AuditService_ServiceDesc.ServiceName
	citizens := citizenv1.CitizenService_ServiceDesc.ServiceName
	// Life events need the case store (NATS) and the access log, like opening a case.
	events := brokerv1.LifeEventService_ServiceDesc.ServiceName
	// Correction requests need their KV bucket (NATS) and the access log, on both sides.
	fixes := brokerv1.CorrectionService_ServiceDesc.ServiceName
	citizenFixes := citizenv1.CitizenCorrectionService_ServiceDesc.ServiceName
	checks := []brokerhealth.Check{
		{Name: CheckNATS, Services: []string{releases, audit, citizens, events, fixes, citizenFixes}, Run: func(context.Context) error {
			if st := b.nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("NATS connection is %s", st)
			}
			return nil
		}},
		{Name: CheckAccessLog, Services: []string{releases, citizens, events, fixes, citizenFixes}, Run: func(context.Context) error {
			return b.access.Writable()
		}},
		{Name: CheckAccessStream, Services: []string{releases, audit, citizens, events, fixes, citizenFixes}, Run: b.checkAccessStream},
		// Listings read the per-citizen index: a replica whose index layout another replaced fails them.
		{Name: CheckAccessIndex, Services: []string{audit, citizens, fixes, citizenFixes}, Run: func(ctx context.Context) error {
			return b.access.CheckIndex(ctx)
		}},
		// Every release reads its case: a case bucket without a leader refuses them all.
		{Name: CheckCaseStore, Services: []string{releases, events}, Run: func(ctx context.Context) error {
			return b.checkLeader(ctx, "KV_"+cases.Bucket)
		}},
	}
	for _, id := range b.neededAuthorities() {
		checks = append(checks, brokerhealth.Check{Name: checkAuthority + id, Services: []string{releases}, Run: func(ctx context.Context) error {
			return b.pool.CheckReachable(ctx, []string{id}, time.Second)[id]
		}})
	}
	return checks
}

// checkAccessStream asks for the ACCESS stream's state: in a cluster it must have a leader (a
// stream without one takes no write), and the index lag is noted for the metrics.
func (b *Broker) checkAccessStream(ctx context.Context) error {
	s, err := b.js.Stream(ctx, accesslog.AccessStream)
	if err != nil {
		return fmt.Errorf("ACCESS stream: %w", err)
	}
	info := s.CachedInfo()
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("ACCESS stream has no leader")
	}
	if lag, err := b.access.IndexLag(ctx); err == nil {
		b.observe.idxLag.Store(lag.Batches)
	}
	return nil
}

// checkLeader asks for a stream's state: in a cluster it must have a leader to answer at all.
func (b *Broker) checkLeader(ctx context.Context, stream string) error {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("%s stream: %w", stream, err)
	}
	if info := s.CachedInfo(); info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("%s stream has no leader", stream)
	}
	return nil
}

// neededAuthorities are the authorities some journey's step releases from: one that is down makes
// those releases fail.
func (b *Broker) neededAuthorities() []string {
	var ids []string
	for _, j := range b.bundle.Load().Journeys() {
		for _, st := range j.Steps {
			for _, r := range st.Rules {
				if !slices.Contains(ids, r.Authority) {
					ids = append(ids, r.Authority)
				}
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// registerMetrics observes what other components only count: NATS, the index, the tree and the
// witnesses.
func (b *Broker) registerMetrics() (metric.Registration, error) {
	if b.deps.Meter == nil {
		return nil, nil
	}
	m := b.deps.Meter.Meter("github.com/aperture-gov/aperture/broker")
	var errs []error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	fgauge := func(name, desc string) metric.Float64ObservableGauge {
		g, err := m.Float64ObservableGauge(name, metric.WithUnit("s"), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	counter := func(name, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	natsUp := gauge(MetricNATSConnected, "", "1 while the broker's NATS connection is connected.")
	reconnects := counter(MetricNATSReconnects, "Reconnections of the broker's NATS connection.")
	idxLag := gauge(MetricIndexLag, "{batch}", "ACCESS batches the per-citizen index has yet to take in (checked with health).")
	roundAge := fgauge(MetricIntegratorLag, "Seconds since this replica's integrator last brought the tree up to the log (leader only).")
	cpAge := fgauge(MetricCheckpointAge, "Seconds since this replica last signed a checkpoint (leader only; grows while nothing is logged).")
	size := gauge(MetricTreeSize, "{leaf}", "Leaves in the tree at the last checkpoint this replica signed.")
	leader := gauge(MetricIntegratorLead, "", "1 while this replica holds the integrator's lease.")
	wRounds := counter(MetricWitnessRounds, "Checkpoints submitted to the witnesses.")
	wCosigned := counter(MetricWitnessCosigned, "Checkpoints that reached the witness quorum.")
	wRefusals := counter(MetricWitnessRefusals, "Witness refusals (each raises the transparency alarm).")
	wDown := counter(MetricWitnessDown, "Witness submissions that did not reach the witness.")
	wLatency := fgauge(MetricWitnessLatency, "From a new checkpoint to storing it cosigned, in the last round that reached the quorum.")
	reviews := counter(MetricReviewsClosed, "Break-glass reviews closed by auditors, by outcome (justified, not_justified).")
	unverified := counter(MetricUnverified, "Reads of a stored switch-off, break-glass, correction or delegation record that did not authenticate, by store; each refused.")
	revOpen := gauge(MetricReviewsOpen, "{review}", "Break-glass reviews waiting for an auditor (read every review_backlog_interval, default 30s).")
	revOldest := fgauge(MetricReviewOldest, "Age of the oldest break-glass review waiting for an auditor; 0 when none.")
	outPub := counter(MetricOutboxPublished, "Events the outbox relays published (JetStream acknowledged), by outbox.")
	outFail := counter(MetricOutboxFailures, "Failed publish attempts of the outbox relays (each retried until acknowledged), by outbox.")
	outSkip := counter(MetricOutboxSkipped, "Outbox revisions that did not authenticate and were never published, by outbox.")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	observables := []metric.Observable{natsUp, reconnects, idxLag, roundAge, cpAge, size, leader, wRounds, wCosigned, wRefusals, wDown, wLatency, reviews, unverified, outPub, outFail, outSkip, revOpen, revOldest}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		up := int64(0)
		if b.nc.Status() == nats.CONNECTED {
			up = 1
		}
		o.ObserveInt64(natsUp, up)
		o.ObserveInt64(reconnects, int64(b.nc.Stats().Reconnects))
		o.ObserveInt64(idxLag, int64(b.observe.idxLag.Load()))
		o.ObserveInt64(reviews, int64(b.observe.justified.Load()), metric.WithAttributes(attribute.String("outcome", "justified")))
		o.ObserveInt64(reviews, int64(b.observe.notJustified.Load()), metric.WithAttributes(attribute.String("outcome", "not_justified")))
		if b.Switches != nil {
			o.ObserveInt64(unverified, int64(b.Switches.Unauthentic()), metric.WithAttributes(attribute.String("store", "switchoffs")))
		}
		if b.BreakGlass != nil {
			o.ObserveInt64(unverified, int64(b.BreakGlass.Unauthentic()), metric.WithAttributes(attribute.String("store", "breakglass")))
		}
		if b.Corrections != nil {
			o.ObserveInt64(unverified, int64(b.Corrections.Unauthentic()), metric.WithAttributes(attribute.String("store", "corrections")))
		}
		if b.Delegations != nil {
			o.ObserveInt64(unverified, int64(b.Delegations.Unauthentic()), metric.WithAttributes(attribute.String("store", "delegations")))
		}
		if b.observe.backlogRead.Load() {
			o.ObserveInt64(revOpen, b.observe.openReviews.Load())
			age := 0.0
			if at := b.observe.oldestReview.Load(); at > 0 {
				age = max(0, time.Since(time.Unix(at, 0)).Seconds())
			}
			o.ObserveFloat64(revOldest, age)
		}
		for name, r := range map[string]*sealedkv.Relay{"case_events": b.events, "correction_events": b.fixEvents} {
			if r == nil {
				continue
			}
			attrs := metric.WithAttributes(attribute.String("outbox", name))
			o.ObserveInt64(outPub, int64(r.Published()), attrs)
			o.ObserveInt64(outFail, int64(r.Failures()), attrs)
			o.ObserveInt64(outSkip, int64(r.Skipped()), attrs)
		}
		if b.integr != nil {
			p := b.integr.Progress()
			lead := int64(0)
			if p.Leader {
				lead = 1
				if !p.LastRound.IsZero() {
					o.ObserveFloat64(roundAge, time.Since(p.LastRound).Seconds())
				}
				if !p.LastSigned.IsZero() {
					o.ObserveFloat64(cpAge, time.Since(p.LastSigned).Seconds())
					o.ObserveInt64(size, int64(p.TreeSize))
				}
			}
			o.ObserveInt64(leader, lead)
		}
		if b.cosigner != nil {
			s := b.cosigner.Stats()
			o.ObserveInt64(wRounds, int64(s.Rounds))
			o.ObserveInt64(wCosigned, int64(s.Cosigned))
			o.ObserveInt64(wRefusals, int64(s.Refusals))
			o.ObserveInt64(wDown, int64(s.Unavailable))
			o.ObserveFloat64(wLatency, s.LastLatency.Seconds())
		}
		return nil
	}, observables...)
}
