package main

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/lifecycle"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/telemetry"
	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// trustDomain is the SPIFFE trust domain of the development stack; the registry's identities use it.
const trustDomain = "aperture.local"

// stackOptions configures an in-process stack: the dev command, the end-to-end tests and the benchmark
// all run the same one.
type stackOptions struct {
	DataDir    string
	Listen     string // broker gRPC address; "127.0.0.1:0" for a free port
	NATSListen string // embedded NATS client address; "" for in-process only
	Citizens   int
	Policies   fs.FS
	// RandomPorts puts every authority on a free loopback port instead of its registry address.
	RandomPorts bool
	// Authorities, if set, are authorities another stack runs, by id: this stack starts none of its
	// own and its broker calls these (another broker replica on the same NATS, in the scale-out bench).
	Authorities map[string]string
	// NATS, if set, is used instead of an embedded server the broker owns.
	NATS *nats.Conn
	// NATSURL, if set, is an external NATS server the broker connects to, authenticated with the
	// nkey seed in NATSNKeyFile; InsecureNATS lets it use a server that accepts anonymous clients.
	NATSURL      string
	NATSNKeyFile string
	InsecureNATS bool
	// Rewire, if set, may give the broker another address for an authority than the one it runs on
	// (tests put a misbehaving proxy in between).
	Rewire func(authority, addr string) string
	// PortalListen, if set, serves the citizen portal there with the development login, and the
	// citizen API on CitizenListen ("127.0.0.1:0" for a free port).
	PortalListen string
	// ReportsDir is the directory of published data-responsibility reports the portal shows at
	// /report; default DATA/reports.
	ReportsDir    string
	CitizenListen string
	Logger        *slog.Logger
	Now           func() time.Time
	// MetricsListen, if set, serves /metrics, /healthz and /readyz there ("127.0.0.1:0" for a free
	// port).
	MetricsListen string
	// Tracer, if set, traces the broker's gRPC calls (and its calls to the authorities).
	Tracer trace.TracerProvider
	// AppendTimeout is the broker's access log append timeout (0: the broker's default).
	AppendTimeout time.Duration
	// ReviewBacklogInterval is how often the broker reads the break-glass review backlog (0: default).
	ReviewBacklogInterval time.Duration
	// Replicas of the broker's streams (0: 1); more than one needs NATSURL or NATS on a cluster.
	Replicas int
	// IndexShards is the broker's index_shards (0: the broker's default).
	IndexShards int
	// Witnesses is the number of local witnesses (in-process HTTP servers on loopback ports, keys and
	// state under DATA/witness) that cosign every checkpoint; 0 for none.
	Witnesses int
}

// stack is a running dev stack.
type stack struct {
	Broker     *broker.Broker
	CA         *mtls.DevCA
	Population *demo.Population
	Pseudonyms *keys.Local
	Registry   *policy.Registry
	// AuthorityAddrs are where the authorities listen, by id.
	AuthorityAddrs map[string]string
	// Portal is the citizen portal, when stackOptions.PortalListen was set.
	Portal *portalServer
	// Witnesses are the local witnesses, when stackOptions.Witnesses > 0.
	Witnesses []*devWitness
	// Metrics serves /metrics, /healthz and /readyz, when stackOptions.MetricsListen was set.
	Metrics   *metricsServer
	telemetry *telemetry.Telemetry

	// sup runs the authorities from the start and the portal and the broker from Run, and stops them
	// in that order: the portal, then the broker, then the authorities it fetches from.
	sup        *lifecycle.Supervisor
	brokerOnce sync.Once
}

// Stages of the stack, in the order they stop.
const (
	stagePortal      = "portal"
	stageBroker      = "broker"
	stageAuthorities = "authorities"
)

// startStack starts the authorities and the broker and returns once the broker is ready to serve.
// Stop it with Close after Run returns, or just cancel the context given to Run.
func startStack(ctx context.Context, o stackOptions) (_ *stack, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ca, err := mtls.OpenDevCA(filepath.Join(o.DataDir, "pki"), trustDomain)
	if err != nil {
		return nil, fmt.Errorf("development CA: %w", err)
	}
	localKeys, err := keys.OpenLocalProvider(filepath.Join(o.DataDir, "keys"), "")
	if err != nil {
		return nil, fmt.Errorf("local keys: %w", err)
	}
	pseudonyms := localKeys.Local()
	reg, err := policy.LoadRegistry(o.Policies, "registry.yaml")
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	// Agencies and auditors get their certificates now, so the CLI can act as them.
	for _, a := range reg.Agencies {
		if _, err := ca.Source("agency", a.ID); err != nil {
			return nil, fmt.Errorf("certificate for agency %q: %w", a.ID, err)
		}
	}
	for _, a := range reg.Auditors {
		if _, err := ca.Source("auditor", a.ID); err != nil {
			return nil, fmt.Errorf("certificate for auditor %q: %w", a.ID, err)
		}
	}

	ref := o.Now().UTC()
	ref = time.Date(ref.Year(), ref.Month(), 1, 0, 0, 0, 0, time.UTC)
	pop := demo.New(o.Citizens, ref)
	s := &stack{CA: ca, Population: pop, Pseudonyms: pseudonyms, Registry: reg, AuthorityAddrs: map[string]string{},
		sup: lifecycle.New(lifecycle.Options{Logger: o.Logger.With("component", "lifecycle")}, stagePortal, stageBroker, stageAuthorities)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	brokerID := mtls.ID(trustDomain, "broker", "")
	examples := catalog.Examples(pop)
	if o.Authorities != nil {
		maps.Copy(s.AuthorityAddrs, o.Authorities)
		examples = nil // another stack runs them
	}
	for _, a := range examples {
		ra, ok := reg.Authority(a.ID)
		if !ok {
			continue // an example authority the registry does not list is not started
		}
		addr := ra.Address
		if o.RandomPorts {
			addr = "127.0.0.1:0"
		}
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("authority %q: listen on %s: %w", a.ID, addr, err)
		}
		s.AuthorityAddrs[a.ID] = lis.Addr().String()
		src, err := ca.Source("authority", a.ID)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("certificate for authority %q: %w", a.ID, err)
		}
		srv, err := kit.NewServer(a, kit.WithLogger(o.Logger.With("authority", a.ID)), kit.WithClock(o.Now), kit.WithAllowedCallers(brokerID))
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("authority %q: %w", a.ID, err)
		}
		s.sup.Go(stageAuthorities, lifecycle.Component{Name: "authority " + a.ID, Run: func(ctx context.Context) error {
			return srv.Serve(ctx, lis, mtls.ServerConfig(src))
		}})
	}
	for _, a := range reg.Authorities {
		if _, ok := s.AuthorityAddrs[a.ID]; !ok {
			o.Logger.Warn("registry lists an authority this stack does not run; it must be running elsewhere", "authority", a.ID, "address", a.Address)
		}
	}

	brokerAddrs := map[string]string{}
	for id, addr := range s.AuthorityAddrs {
		if o.Rewire != nil {
			addr = o.Rewire(id, addr)
		}
		brokerAddrs[id] = addr
	}
	certs, err := ca.Source("broker", "")
	if err != nil {
		return nil, fmt.Errorf("broker certificate: %w", err)
	}
	if s.telemetry, err = telemetry.New(ctx, telemetry.Options{}); err != nil {
		return nil, err
	}
	if o.MetricsListen != "" {
		if s.Metrics, err = listenMetrics(o.MetricsListen, o.Logger); err != nil {
			return nil, err
		}
	}
	deps := broker.Deps{
		Policies: o.Policies, Certs: certs, Pseudonyms: pseudonyms, Checkpoints: localKeys.Checkpoints(), Sealer: localKeys.Sealer(),
		NATS: o.NATS, Logger: o.Logger, Now: o.Now, Meter: s.telemetry.MeterProvider(), Tracer: o.Tracer,
	}
	if o.Witnesses > 0 {
		if s.Witnesses, deps.Witnesses, err = startDevWitnesses(o.DataDir, o.Witnesses, localKeys.Checkpoints().Verifier(), o.Logger); err != nil {
			return nil, err
		}
	}
	var login citizenauth.Config
	var verifier *citizenauth.Verifier
	if o.PortalListen != "" {
		// The portal listens first: it serves the development OpenID provider, which the broker's
		// token verifier discovers at start.
		if s.Portal, err = listenPortal(o.PortalListen, o.Logger); err != nil {
			return nil, err
		}
		if login, err = s.Portal.mountDevIssuer(pop, o.Now); err != nil {
			return nil, err
		}
		if verifier, err = citizenauth.NewVerifier(ctx, login, citizenauth.WithClock(o.Now)); err != nil {
			return nil, err
		}
		deps.Citizens = verifier
	}
	s.Broker, err = broker.New(ctx, broker.Config{
		DataDir: o.DataDir, Listen: o.Listen, EmbeddedNATSListen: o.NATSListen, NATSURL: o.NATSURL,
		NATSNKeyFile: o.NATSNKeyFile, InsecureNATS: o.InsecureNATS,
		AuthorityAddresses: brokerAddrs, CitizenListen: o.CitizenListen,
		AppendTimeout: o.AppendTimeout, Replicas: o.Replicas, IndexShards: o.IndexShards, ReviewBacklogInterval: o.ReviewBacklogInterval,
	}, deps)
	if err != nil {
		return nil, err
	}
	if s.Metrics != nil {
		s.Metrics.serve(s.telemetry, s.Broker, o.Logger)
	}
	if s.Portal != nil {
		if c := s.Broker.Witnessing(); c != nil {
			s.Portal.witnesses = c.Policy()
		}
		s.Portal.reports = cmp.Or(o.ReportsDir, filepath.Join(o.DataDir, "reports"))
		s.Portal.meter = s.telemetry.MeterProvider()
		sess := portalSessions{NATS: s.Broker.NATSConn(), Sealer: localKeys.Sealer()}
		if err := s.Portal.mountPortal(login, verifier, sess, s.Broker.CitizenAddr(), certs, true, o.Now, o.Logger); err != nil {
			return nil, err
		}
		s.Portal.mountLog(s.Broker.PublicLog())
	}
	return s, nil
}

// Run serves the broker until ctx ends or a component (the broker, an authority) fails, then stops
// everything in order and returns the failure.
func (s *stack) Run(ctx context.Context) error {
	s.startBroker()
	err := s.sup.Wait(ctx)
	s.closeWitnesses()
	return err
}

// startBroker puts the portal and the broker under the supervisor, once.
func (s *stack) startBroker() {
	s.brokerOnce.Do(func() {
		if s.Portal != nil {
			s.sup.Go(stagePortal, lifecycle.Component{Name: "portal", Run: func(ctx context.Context) error {
				<-ctx.Done()
				s.Portal.Close()
				return nil
			}})
		}
		if s.Broker != nil {
			s.sup.Go(stageBroker, lifecycle.Component{Name: "broker", Run: s.Broker.Run})
		}
	})
}

// Close stops whatever runs, in order: also a stack whose Run was never called (the broker is run
// only to be stopped, which closes its stores).
func (s *stack) Close() {
	s.startBroker()
	s.sup.Stop()
	_ = s.sup.Wait(context.Background())
	if s.Portal != nil {
		s.Portal.Close()
	}
	s.closeWitnesses()
}

func (s *stack) closeWitnesses() {
	for _, w := range s.Witnesses {
		w.Close()
	}
	if s.Metrics != nil {
		s.Metrics.Close()
	}
	if s.telemetry != nil {
		_ = s.telemetry.Shutdown(context.Background()) // metrics only: nothing to flush
	}
}
