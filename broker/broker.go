// Package broker wires the broker together: NATS JetStream (embedded or external) for state and the
// access log, the authority connections, the policies, and the gRPC API. main builds a Config, calls New,
// then Run.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/answers"
	"github.com/aperture-gov/aperture/broker/authorities"
	"github.com/aperture-gov/aperture/broker/breakglass"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/citizen"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/corrections"
	"github.com/aperture-gov/aperture/broker/delegation"
	brokerhealth "github.com/aperture-gov/aperture/broker/health"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/lifecycle"
	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/questions"
	"github.com/aperture-gov/aperture/broker/release"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	"github.com/aperture-gov/aperture/broker/server"
	"github.com/aperture-gov/aperture/broker/switchoff"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/tlog/tlogweb"
	"github.com/aperture-gov/aperture/broker/witness"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// Config is the broker's configuration. Zero values take the defaults of WithDefaults.
type Config struct {
	// DataDir holds the embedded NATS store (and, in dev, keys and the development CA).
	DataDir string `yaml:"data_dir"`
	// Listen is the gRPC address agencies call.
	Listen string `yaml:"listen"`
	// NATSURL is an external NATS server or cluster; empty embeds one in this process.
	NATSURL string `yaml:"nats_url"`
	// NATSCredentials is a NATS .creds file (user JWT and seed) for the external server.
	NATSCredentials string `yaml:"nats_credentials"`
	// NATSNKeyFile is the broker's nkey seed file (mode 0600): with NATSURL the key it authenticates
	// with; embedded, where the key is kept (created if absent; default DataDir/nats/broker.nk).
	NATSNKeyFile string `yaml:"nats_nkey"`
	// NATSCA is the CA bundle the external NATS servers' certificates chain to; empty uses the
	// broker's own roots. The broker presents its certificate when the server asks for one.
	NATSCA string `yaml:"nats_ca"`
	// InsecureNATS lets the broker use an external NATS server that accepts anonymous connections,
	// logging an error at start. Without it the broker refuses to start against such a server.
	InsecureNATS bool `yaml:"insecure_nats"`
	// EmbeddedNATSListen is where the embedded server accepts clients (agency systems subscribing to
	// case events): "127.0.0.1:4222" by default, "" for in-process only. Its client port requires
	// TLS with the broker's certificate; agencies listed in the registry connect with their client
	// certificate and may only subscribe to their own events; the broker authenticates with the nkey
	// in DataDir/nats/broker.nk (created on first start). Nothing else gets in.
	EmbeddedNATSListen string `yaml:"embedded_nats_listen"`
	// Replicas of every stream and bucket: 1 embedded, 3 on a cluster.
	Replicas int `yaml:"replicas"`
	// IndexShards is the number of streams the per-citizen access index is spread over (1 to 256).
	// 0 keeps the count of the index there is, or accesslog.DefaultIndexShards for a new one. Fewer
	// make a release cheaper and a citizen's listing dearer (see accesslog.DefaultIndexShards).
	// Another count than the index's rebuilds the index from the log at start: restart every
	// replica with the same count.
	IndexShards int `yaml:"index_shards"`
	// AuthorityAddresses overrides registry addresses by authority id.
	AuthorityAddresses map[string]string `yaml:"authority_addresses"`
	// StartTimeout bounds the wait for authorities and NATS at start.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// CitizenListen is the address of the citizen API (aperture.citizen.v1.CitizenService): server
	// TLS with the broker's certificate, no client certificate, OpenID Connect ID tokens. It is served
	// only when Deps.Citizens is set. Default "127.0.0.1:7444".
	CitizenListen string `yaml:"citizen_listen"`
	// CheckpointInterval is how often the access log's Merkle tree is extended and, if it grew, a
	// signed checkpoint published. Default 1s.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// AppendTimeout bounds the wait for the access log to acknowledge a write; the first write that
	// fails or times out opens the log's breaker, and releases answer Unavailable at once until a
	// probe write succeeds. Default 250ms.
	AppendTimeout time.Duration `yaml:"append_timeout"`
	// StateTimeout bounds each read or write of the broker's own state on the release path (case,
	// consent, switch-off, break-glass counts). A KV stream that lost its quorum never answers; the
	// caller hears Unavailable after this rather than at its own deadline. Default 1s.
	StateTimeout time.Duration `yaml:"state_timeout"`
	// HealthInterval is how often health is checked (log writable, ACCESS leader, NATS, authorities).
	// Default 1s.
	HealthInterval time.Duration `yaml:"health_interval"`
	// ReviewBacklogInterval is how often the break-glass review queue is read for its backlog
	// metrics (open reviews, age of the oldest). Default 30s.
	ReviewBacklogInterval time.Duration `yaml:"review_backlog_interval"`
}

// WithDefaults returns c with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = ".aperture"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7443"
	}
	if c.CitizenListen == "" {
		c.CitizenListen = "127.0.0.1:7444"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = 250 * time.Millisecond
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = time.Second
	}
	if c.ReviewBacklogInterval == 0 {
		c.ReviewBacklogInterval = 30 * time.Second
	}
	if c.StateTimeout == 0 {
		c.StateTimeout = time.Second
	}
	return c
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		return fmt.Errorf("replicas must be 1, 3 or 5, not %d", c.Replicas)
	}
	if c.IndexShards < 0 || c.IndexShards > 256 {
		return fmt.Errorf("index_shards must be 0 (keep the index's count) or 1 to 256, not %d", c.IndexShards)
	}
	if c.NATSURL == "" && c.Replicas != 1 {
		return errors.New("the embedded NATS server is a single node: replicas must be 1 (set nats_url for a cluster)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: %w", c.Listen, err)
	}
	if _, _, err := net.SplitHostPort(c.CitizenListen); err != nil {
		return fmt.Errorf("citizen_listen %q: %w", c.CitizenListen, err)
	}
	return nil
}

// Deps are the broker's collaborators that differ between dev, production and tests.
type Deps struct {
	// Policies is the policy tree: registry.yaml and journeys/*.yaml.
	Policies fs.FS
	// Certs is the broker's certificate, used as gRPC server and as client of the authorities.
	Certs mtls.Source
	// Pseudonyms keys the citizen pseudonym.
	Pseudonyms keys.Pseudonymizer
	// Checkpoints signs the access log's checkpoints; nil uses (or creates) the local key in DataDir.
	Checkpoints tlog.Signer
	// CheckpointAnchors are checkpoints vouched for outside NATS (a witness's cosigned one) that
	// every checkpoint signed must extend, besides the local anchor file.
	CheckpointAnchors []tlog.Anchor
	// PublicCheckpoints is the checkpoint the public /log endpoint serves (a witness-cosigned one);
	// nil serves the tree's newest.
	PublicCheckpoints tlogweb.CheckpointSource
	// Sealer encrypts sensitive state at rest: the citizen id in stored cases (keys.Provider.Sealer).
	Sealer keys.Sealer
	// Citizens verifies citizens' OpenID Connect ID tokens for the citizen API; nil serves no citizen
	// API.
	Citizens citizen.Authenticator
	// Witnesses, if set, is the witness policy: every new checkpoint is submitted to its witnesses
	// and the cosigned checkpoint is what the citizen API proves against.
	Witnesses *witness.Policy
	// Meter receives the broker's metrics (telemetry.Telemetry's provider); nil records none.
	Meter metric.MeterProvider
	// Tracer, if set, traces the gRPC edges and the authority calls (otelgrpc).
	Tracer trace.TracerProvider
	// NATS, if set, is used instead of connecting or embedding (tests control the server).
	NATS   *nats.Conn
	Logger *slog.Logger
	Now    func() time.Time
}

// Broker is a running broker.
type Broker struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	lis       net.Listener
	grpc      *grpc.Server
	health    *health.Server
	nc        *nats.Conn
	ownNC     bool
	embed     *natsembed.Server
	access    *accesslog.Log
	tree      *tlog.Tree
	integr    *tlog.Integrator
	cosigner  *witness.Cosigner
	pool      *authorities.Pool
	bundle    atomic.Pointer[policy.Bundle]
	Cases     *cases.Store
	events    *sealedkv.Relay
	fixEvents *sealedkv.Relay // correction events
	Consent   *consent.Store
	Questions *questions.Store
	// Switches are the citizens' switch-offs of optional steps; BreakGlass the break-glass review queue
	// and per-caseworker use counts.
	Switches   *switchoff.Store
	BreakGlass *breakglass.Store
	// Corrections are the citizens' requests to correct authority data (the authorities' queue).
	Corrections     *corrections.Store
	correctionCount *corrections.Counter
	consentCount    *consent.Counter
	questionCount   *questions.Counter
	// Answers are the answers of released facts, kept sealed for the citizen (not in the access log).
	Answers *answers.Store
	// Delegations are the citizens' powers of attorney (who may act for whom, in what scope, until when).
	Delegations     *delegation.Store
	delegationCount *delegation.Counter

	// The citizen API, when Deps.Citizens is set.
	citizenSvc    *citizen.Service
	citizenGRPC   *grpc.Server
	citizenHealth *health.Server
	citizenLis    net.Listener

	extra []lifecycle.Component // added with Go

	js      jetstream.JetStream
	monitor *brokerhealth.Monitor
	observe observers
}

// New connects to (or embeds) NATS, opens the stores, loads the registry, waits for every authority to
// describe itself, loads and checks the journeys against those schemas, and binds the listener. It does
// not serve yet; call Run.
func New(ctx context.Context, cfg Config, deps Deps) (_ *Broker, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	if deps.Policies == nil || deps.Certs == nil || deps.Pseudonyms == nil || deps.Sealer == nil {
		return nil, errors.New("broker: policies, certificates, pseudonym key and sealing key are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	b := &Broker{cfg: cfg, deps: deps, log: deps.Logger}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	if err := b.connectNATS(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	if err := b.waitForJetStream(ctx); err != nil {
		return nil, err
	}
	if b.access, err = accesslog.Open(ctx, js, accesslog.Options{Replicas: cfg.Replicas, IndexShards: cfg.IndexShards, Sealer: deps.Sealer,
		AppendTimeout: cfg.AppendTimeout, Meter: deps.Meter, OnBreaker: b.breakerChanged,
		Logger: b.log.With("component", "accesslog")}); err != nil {
		return nil, fmt.Errorf("open access log: %w", err)
	}
	if err := b.openTransparency(ctx, js); err != nil {
		return nil, err
	}
	if err := b.openCosigner(ctx, js); err != nil {
		return nil, err
	}
	if b.Cases, err = cases.Open(ctx, js, cases.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log}); err != nil {
		return nil, err
	}
	if b.events, err = b.Cases.Relay(ctx); err != nil {
		return nil, err
	}
	if b.Consent, err = consent.Open(ctx, js, consent.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "consent")}); err != nil {
		return nil, err
	}
	if b.Questions, err = questions.Open(ctx, js, questions.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "questions")}); err != nil {
		return nil, err
	}
	if b.Switches, err = switchoff.Open(ctx, js, switchoff.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "switchoff")}); err != nil {
		return nil, err
	}
	if b.Corrections, err = corrections.Open(ctx, js, corrections.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "corrections")}); err != nil {
		return nil, err
	}
	if b.fixEvents, err = b.Corrections.Relay(ctx); err != nil {
		return nil, err
	}
	if b.consentCount, err = consent.NewCounter(deps.Meter); err != nil {
		return nil, err
	}
	if b.questionCount, err = questions.NewCounter(deps.Meter); err != nil {
		return nil, err
	}
	if b.correctionCount, err = corrections.NewCounter(deps.Meter); err != nil {
		return nil, err
	}
	if b.BreakGlass, err = breakglass.Open(ctx, js, breakglass.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "breakglass")}); err != nil {
		return nil, err
	}

	if b.Delegations, err = delegation.Open(ctx, js, delegation.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "delegation")}); err != nil {
		return nil, err
	}
	if b.delegationCount, err = delegation.NewCounter(deps.Meter); err != nil {
		return nil, err
	}
	if b.Answers, err = answers.Open(ctx, js, answers.Options{Replicas: cfg.Replicas, Sealer: deps.Sealer, Logger: b.log.With("component", "answers")}); err != nil {
		return nil, err
	}

	reg, err := policy.LoadRegistry(deps.Policies, "registry.yaml")
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	for id, addr := range cfg.AuthorityAddresses {
		a, ok := reg.Authority(id)
		if !ok {
			return nil, fmt.Errorf("authority_addresses: registry has no authority %q", id)
		}
		a.Address = addr
	}
	if b.pool, err = authorities.Dial(reg, deps.Certs, b.log.With("component", "authorities"), authorities.Options{
		Meter: deps.Meter, DialOptions: b.clientTracing()}); err != nil {
		return nil, err
	}
	if err := b.pool.Describe(ctx, reg); err != nil {
		return nil, err
	}
	bundle, err := policy.LoadBundle(deps.Policies, reg, b.pool)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	b.bundle.Store(bundle)
	b.log.Info("policies loaded", "version", bundle.Version, "journeys", len(bundle.Journeys()), "authorities", len(reg.Authorities))

	if err := b.buildServer(); err != nil {
		return nil, err
	}
	if err := b.startObserving(ctx); err != nil {
		return nil, err
	}
	if b.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if b.citizenGRPC != nil {
		if b.citizenLis, err = net.Listen("tcp", cfg.CitizenListen); err != nil {
			b.lis.Close()
			return nil, fmt.Errorf("citizen API: listen on %s: %w", cfg.CitizenListen, err)
		}
	}
	return b, nil
}

// NATSOptions are the connection options of a broker: reconnect forever, but fail requests at once
// while disconnected instead of buffering them, so a release answers Unavailable promptly rather than
// waiting out the caller's deadline.
func NATSOptions(name string) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1),
	}
}

func (b *Broker) connectNATS() error {
	if b.deps.NATS != nil {
		b.nc = b.deps.NATS
		return nil
	}
	if b.cfg.NATSURL != "" {
		nc, err := ConnectExternalNATS(b.cfg, b.deps.Certs, b.log)
		if err != nil {
			return err
		}
		b.nc, b.ownNC = nc, true
		return nil
	}
	host, port := "127.0.0.1", -1
	if b.cfg.EmbeddedNATSListen != "" {
		h, p, err := net.SplitHostPort(b.cfg.EmbeddedNATSListen)
		if err != nil {
			return fmt.Errorf("embedded_nats_listen %q: %w", b.cfg.EmbeddedNATSListen, err)
		}
		host = h
		if _, err := fmt.Sscan(p, &port); err != nil {
			return fmt.Errorf("embedded_nats_listen %q: bad port", b.cfg.EmbeddedNATSListen)
		}
		if port == 0 {
			port = -1 // ":0" is a free port, as for every other listener (NATS would take 4222)
		}
	}
	dir := filepath.Join(b.cfg.DataDir, "nats")
	keyFile := b.cfg.NATSNKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(dir, EmbeddedNATSKeyFile)
	}
	if err := refuseUnauthenticatedStore(dir, keyFile); err != nil {
		return err
	}
	key, err := natsembed.LoadOrCreateKey(keyFile)
	if err != nil {
		return fmt.Errorf("embedded NATS broker key: %w", err)
	}
	// The registry is loaded again in New; here it only names who may subscribe to what.
	reg, err := policy.LoadRegistry(b.deps.Policies, "registry.yaml")
	if err != nil {
		return fmt.Errorf("embedded NATS agencies: load registry: %w", err)
	}
	agencies := make([]natsembed.Agency, 0, len(reg.Agencies))
	for _, a := range reg.Agencies {
		agencies = append(agencies, natsembed.Agency{ID: a.ID, Identity: a.Identity})
	}
	srv, err := natsembed.Start(natsembed.Options{
		Dir: dir, Host: host, Port: port,
		Logger: b.log.With("component", "nats"), ServerName: "aperture-embedded",
		BrokerKey: key, TLS: b.deps.Certs, Agencies: agencies,
	})
	if err != nil {
		return fmt.Errorf("start embedded NATS: %w", err)
	}
	b.embed = srv
	b.log.Info("embedded NATS: broker by nkey, agencies of the registry by client certificate (subscribe to their own events only), nobody else",
		"url", srv.ClientURL(), "agencies", len(agencies), "broker_key", keyFile)
	nc, err := srv.Connect(NATSOptions("aperture-broker")...)
	if err != nil {
		return fmt.Errorf("connect to embedded NATS: %w", err)
	}
	b.nc, b.ownNC = nc, true
	return nil
}

// EmbeddedNATSKeyFile is the broker's nkey seed for its embedded NATS server, in DataDir/nats.
const EmbeddedNATSKeyFile = natsembed.KeyFile

// anonymousProbeTimeout bounds each server's answer to the anonymous probe.
const anonymousProbeTimeout = 10 * time.Second

// ConnectExternalNATS connects to cfg.NATSURL with the broker's credentials (a .creds file or an nkey
// seed) and, when a server asks for TLS, the broker's certificate. First it checks that the servers
// refuse a client without credentials: a NATS that anyone can reach is no place for the broker's
// state. cfg.InsecureNATS overrides that, loudly.
func ConnectExternalNATS(cfg Config, certs mtls.Source, log *slog.Logger) (*nats.Conn, error) {
	opts := NATSOptions("aperture-broker")
	tc, err := ExternalNATSTLS(cfg.NATSCA, certs)
	if err != nil {
		return nil, err
	}
	switch err := natsembed.ProbeAnonymous(cfg.NATSURL, tc, anonymousProbeTimeout); {
	case errors.Is(err, natsembed.ErrAnonymousAccepted) && cfg.InsecureNATS:
		log.Error("INSECURE: the NATS server accepts anonymous connections and --insecure-nats is set: anyone who reaches it can read every case and rewrite consents, cases and the access log",
			"nats_url", cfg.NATSURL, "probe", err.Error())
	case errors.Is(err, natsembed.ErrAnonymousAccepted):
		return nil, fmt.Errorf("refusing to use NATS at %s: %w; configure authentication on it (deploy/nats) or, for a throwaway setup only, pass --insecure-nats", cfg.NATSURL, err)
	case err != nil && cfg.InsecureNATS:
		log.Error("INSECURE: --insecure-nats is set and whether the NATS server requires authentication is unknown", "nats_url", cfg.NATSURL, "probe", err.Error())
	case err != nil:
		return nil, fmt.Errorf("refusing to use NATS at %s: cannot tell whether it requires authentication: %w", cfg.NATSURL, err)
	case cfg.InsecureNATS:
		log.Warn("--insecure-nats is set but the NATS server requires authentication; the flag is not needed", "nats_url", cfg.NATSURL)
	}
	auth, err := ExternalNATSAuth(cfg.NATSCredentials, cfg.NATSNKeyFile)
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	// TLS with these roots and the broker's client certificate whenever the server offers it; a
	// tls:// URL or a --nats-ca demands it.
	nc, err := natsembed.ConnectTLSIfOffered(cfg.NATSURL, tc, cfg.NATSCA != "", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	if _, err := nc.TLSConnectionState(); err != nil {
		// The nkey handshake does not reveal the seed, but cases and consents would cross the wire
		// in clear: fine on one host, not across a network.
		log.Warn("the connection to NATS is not encrypted: the server does not ask for TLS", "nats_url", nc.ConnectedUrlRedacted())
	}
	return nc, nil
}

// ExternalNATSAuth are the connection options that authenticate the broker to an external NATS: a
// .creds file (decentralised JWT auth) or an nkey seed file, not both. With neither, the connection
// is anonymous, which only an --insecure-nats server lets in.
func ExternalNATSAuth(credsFile, nkeyFile string) ([]nats.Option, error) {
	switch {
	case credsFile != "" && nkeyFile != "":
		return nil, errors.New("NATS credentials: give a .creds file or an nkey seed file, not both")
	case credsFile != "":
		return []nats.Option{nats.UserCredentials(credsFile)}, nil
	case nkeyFile != "":
		key, err := natsembed.ReadKey(nkeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS nkey: %w", err)
		}
		return []nats.Option{natsembed.BrokerAuth(key)}, nil
	}
	return nil, nil
}

// ExternalNATSTLS is the client TLS configuration for an external NATS: the servers' certificates
// chain to caFile (or, if empty, to the broker's roots) and are checked against the host name
// dialled; the broker's certificate is presented when asked for. certs may be nil (no client
// certificate).
func ExternalNATSTLS(caFile string, certs mtls.Source) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if certs != nil {
		tc.GetClientCertificate = certs.GetClientCertificate
		tc.RootCAs = certs.Roots()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("NATS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("NATS CA %s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func (b *Broker) buildServer() error {
	policies := func() *policy.Bundle { return b.bundle.Load() }
	rel, err := release.New(release.Config{
		Policies: policies, Cases: b.Cases, Consents: b.Consent, Log: b.access, Authorities: b.pool,
		Pseudonyms: b.deps.Pseudonyms, Now: b.deps.Now, Logger: b.log.With("component", "release"),
		Meter: b.deps.Meter, Switches: b.Switches, BreakGlass: b.BreakGlass, Answers: b.Answers,
		StateTimeout: b.cfg.StateTimeout,
	})
	if err != nil {
		return err
	}
	cs := cases.NewService(b.Cases, policies, b.deps.Pseudonyms, b.Switches, b.deps.Now, b.log.With("component", "cases"))
	registry := func() *policy.Registry { return b.bundle.Load().Registry }
	edge, err := server.NewEdge(server.EdgeConfig{Identity: server.AgencyIdentity(registry), Logger: b.log.With("component", "grpc")})
	if err != nil {
		return err
	}
	opts, err := b.serverTelemetry()
	if err != nil {
		return err
	}
	opts = append(opts, edge.ServerOptions()...)
	opts = append(opts,
		grpc.Creds(credentials.NewTLS(mtls.ServerConfig(b.deps.Certs))),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute}),
	)
	b.grpc = grpc.NewServer(opts...)
	brokerv1.RegisterBrokerServiceServer(b.grpc, server.NewBroker(cs, rel, b.log.With("component", "grpc"),
		server.WithQuestions(b.Questions, b.access, b.questionCount, registry, b.deps.Now), server.WithSecurityLog(b.log.With("component", "security"))))
	events, err := server.NewLifeEvents(cs, rel, b.deps.Meter, b.log.With("component", "life-events"))
	if err != nil {
		return err
	}
	brokerv1.RegisterLifeEventServiceServer(b.grpc, events)
	fixes, err := corrections.NewAuthorityService(b.Corrections, b.access, b.correctionCount, b.deps.Now, b.log.With("component", "corrections"))
	if err != nil {
		return err
	}
	brokerv1.RegisterCorrectionServiceServer(b.grpc, fixes)
	audit := server.NewAudit(b.access, b.tree, b.deps.Pseudonyms, b.log.With("component", "audit"))
	if b.cosigner != nil {
		audit.WithCosigned(b.cosigner)
	}
	audit.WithBreakGlass(b.BreakGlass, b.deps.Now, b.observe.reviewClosed)
	auditv1.RegisterAuditServiceServer(b.grpc, audit)
	b.health = health.NewServer()
	healthpb.RegisterHealthServer(b.grpc, b.health)
	reflection.Register(b.grpc)
	return b.buildCitizenServer(policies)
}

// buildCitizenServer builds the citizen API when an authenticator is configured.
func (b *Broker) buildCitizenServer(policies func() *policy.Bundle) error {
	if b.deps.Citizens == nil {
		return nil
	}
	svc, err := citizen.New(citizen.Config{
		Policies: policies, Log: b.access, Cases: b.Cases, Consents: b.Consent, Authorities: b.pool,
		Questions: b.Questions, Pseudonyms: b.deps.Pseudonyms, Now: b.deps.Now,
		Logger: b.log.With("component", "citizen"), Switches: b.Switches, Answers: b.Answers,
		Delegations: b.Delegations, DelegationCount: b.delegationCount,
		ConsentCount: b.consentCount, QuestionCount: b.questionCount,
	}.WithProofs(b.tree, b.cosigner))
	if err != nil {
		return err
	}
	srv, hs, err := citizen.NewServer(svc, b.deps.Citizens, b.deps.Pseudonyms, citizen.TLSConfig(b.deps.Certs), b.log.With("component", "citizen-grpc"))
	if err != nil {
		return err
	}
	fixes, err := citizen.NewCorrections(svc, b.Corrections, b.correctionCount)
	if err != nil {
		return err
	}
	citizenv1.RegisterCitizenCorrectionServiceServer(srv, fixes)
	dels, err := citizen.NewDelegationService(svc)
	if err != nil {
		return err
	}
	citizenv1.RegisterCitizenDelegationServiceServer(srv, dels)
	b.citizenSvc, b.citizenGRPC, b.citizenHealth = svc, srv, hs
	return nil
}

// CitizenAddr is the address of the citizen API, or "" when it is not served.
func (b *Broker) CitizenAddr() string {
	if b.citizenLis == nil {
		return ""
	}
	return b.citizenLis.Addr().String()
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.lis.Addr().String() }

// Bundle is the policy bundle in force.
func (b *Broker) Bundle() *policy.Bundle { return b.bundle.Load() }

// Descriptors resolves authority datasets to the schemas the authorities described.
func (b *Broker) Descriptors() policy.Descriptors { return b.pool }

// NATSConn is the broker's NATS connection.
func (b *Broker) NATSConn() *nats.Conn { return b.nc }

// AccessLog is the broker's access log.
func (b *Broker) AccessLog() *accesslog.Log { return b.access }

// NATSURL is the client URL of the embedded NATS server, or "" when NATS is external or in-process only.
func (b *Broker) NATSURL() string {
	if b.embed == nil || b.cfg.EmbeddedNATSListen == "" {
		return ""
	}
	return b.embed.ClientURL()
}

// Lifecycle stages of a broker, in the order they stop.
const (
	// StageServe is the gRPC servers: they stop accepting and drain in-flight calls (releases are
	// logged before they answer) before anything they rely on stops.
	StageServe = "serve"
	// StageBackground is the loops: transparency health, checkpoint integration, witness cosigning,
	// the case cache's watch, the case events relay, and components added with Go.
	StageBackground = "background"
)

// gracePeriod is how long a server drains in-flight calls before it closes the rest.
const gracePeriod = 10 * time.Second

// Go adds c to the components Run supervises (in StageBackground): a loop the broker's process runs,
// such as Vault token or certificate renewal. Call it before Run.
func (b *Broker) Go(c lifecycle.Component) { b.extra = append(b.extra, c) }

// Run serves until ctx ends or a component fails, under one supervisor (package lifecycle): the
// first component to fail or panic stops the others, and Run returns that failure. Shutdown keeps its
// order: the servers stop accepting and drain in-flight releases, then the background loops stop,
// then the access log is closed, then NATS.
func (b *Broker) Run(ctx context.Context) error {
	sup := lifecycle.New(lifecycle.Options{StopTimeout: 2 * gracePeriod, Logger: b.log.With("component", "lifecycle")}, StageServe, StageBackground)
	sup.OnStop("close stores", func() error { b.closeStores(); return nil })
	for _, c := range b.loops() {
		sup.Go(StageBackground, c)
	}
	sup.Go(StageServe, serveGRPC("grpc", b.grpc, b.lis, b.health, nil))
	b.log.Info("broker serving", "addr", b.Addr())
	if b.citizenGRPC != nil {
		// Stopping the citizen service ends the open access watches, which a graceful stop would wait for.
		sup.Go(StageServe, serveGRPC("citizen API", b.citizenGRPC, b.citizenLis, b.citizenHealth, b.citizenSvc.Stop))
		b.log.Info("citizen API serving", "addr", b.CitizenAddr())
	}
	return sup.Wait(ctx)
}

// serveGRPC is a gRPC server as a component: it serves on lis until ctx ends, then reports
// NOT_SERVING, runs beforeStop, and stops gracefully (at most gracePeriod, then hard).
func serveGRPC(name string, srv *grpc.Server, lis net.Listener, hs *health.Server, beforeStop func()) lifecycle.Component {
	return lifecycle.Component{Name: name, Run: func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(lis) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
		}
		hs.Shutdown()
		if beforeStop != nil {
			beforeStop()
		}
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(gracePeriod):
			srv.Stop()
			<-stopped
		}
		<-errc
		return nil
	}}
}

// loops are the broker's background loops as components. Those started by New (the integrator, the
// cosigner, the case watch) run on their own goroutines; here they are stopped in their stage.
func (b *Broker) loops() []lifecycle.Component {
	cs := []lifecycle.Component{{Name: "transparency health", Run: func(ctx context.Context) error {
		b.watchTransparency(ctx, time.Second)
		return nil
	}}}
	stopAt := func(name string, stop func()) lifecycle.Component {
		return lifecycle.Component{Name: name, Run: func(ctx context.Context) error {
			<-ctx.Done()
			stop()
			return nil
		}}
	}
	cs = append(cs, stopAt("health monitor", b.stopObserving))
	if b.Cases != nil {
		cs = append(cs, stopAt("case watch", b.Cases.Close))
	}
	if b.events != nil {
		cs = append(cs, lifecycle.Component{Name: "case events relay", Run: b.events.Run})
	}
	if b.fixEvents != nil {
		cs = append(cs, lifecycle.Component{Name: "correction events relay", Run: b.fixEvents.Run})
	}
	if b.BreakGlass != nil && b.deps.Meter != nil {
		cs = append(cs, lifecycle.Component{Name: "break-glass review backlog", Run: func(ctx context.Context) error {
			b.watchReviewBacklog(ctx, b.cfg.ReviewBacklogInterval)
			return nil
		}})
	}
	if b.cosigner != nil {
		cs = append(cs, stopAt("witness cosigner", b.cosigner.Close))
	}
	if b.integr != nil {
		cs = append(cs, stopAt("checkpoint integrator", b.integr.Close))
	}
	return append(cs, b.extra...)
}

// close stops what New started, when New fails.
func (b *Broker) close() {
	b.stopObserving()
	if b.Cases != nil {
		b.Cases.Close()
	}
	if b.cosigner != nil {
		b.cosigner.Close()
	}
	if b.integr != nil {
		b.integr.Close()
	}
	b.closeStores()
}

// closeStores closes the authority connections, the access log (flushing what it holds) and then
// NATS: after every loop that writes them has stopped.
func (b *Broker) closeStores() {
	if b.pool != nil {
		b.pool.Close()
	}
	if b.access != nil {
		if err := b.access.Close(); err != nil {
			b.log.Warn("close access log", "err", err)
		}
	}
	if b.nc != nil && b.ownNC {
		b.nc.Close()
	}
	if b.embed != nil {
		b.embed.Shutdown()
	}
}

// ErrOldDataDir means the data directory holds a NATS store written before stored state was
// authenticated: its cases, consents, questions and ACCESS batches carry no broker seal or MAC, so
// this broker would treat every one of them as forged.
var ErrOldDataDir = errors.New("the data directory was written by an earlier Aperture whose stored records are not authenticated")

// refuseUnauthenticatedStore refuses an embedded store that has data but no broker NATS key: the key
// is created on the first start of a broker that seals and MACs everything it stores, so a store
// without one was written before. Starting on it would halt the log's integration at its first batch
// and show every case as absent; saying so at once is kinder than a screen of alarms.
func refuseUnauthenticatedStore(natsDir, keyFile string) error {
	if _, err := os.Stat(filepath.Join(natsDir, "jetstream")); err != nil {
		return nil // no store yet
	}
	if _, err := os.Stat(keyFile); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("%w: move %s away (or delete it) and start again for a fresh store", ErrOldDataDir, filepath.Dir(natsDir))
}
