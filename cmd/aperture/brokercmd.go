package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/vaultkeys"
	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/broker/telemetry"
	"github.com/aperture-gov/aperture/broker/witness"
	"github.com/aperture-gov/aperture/services/kit/mtls"
	"github.com/aperture-gov/aperture/services/kit/vault"
)

// runBroker runs the broker alone, against authorities running elsewhere (see `aperture authority`) and an
// embedded or external NATS. It has no development login: citizens sign in with the configured OpenID
// Connect issuer only.
func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	addConfigFlag(fs)
	var (
		data       = fs.String("data", ".aperture", "data directory (embedded NATS store, local keys)")
		listen     = fs.String("listen", "127.0.0.1:7443", "gRPC address agencies call")
		natsURL    = fs.String("nats-url", "", "external NATS server or cluster (empty: embedded)")
		natsCreds  = fs.String("nats-creds", "", "NATS .creds file (user JWT and seed) the broker authenticates with to --nats-url")
		natsNKey   = fs.String("nats-nkey", "", "the broker's NATS nkey seed file (mode 0600): with --nats-url the key it authenticates with; embedded, where its key is kept (default DATA/nats/broker.nk)")
		natsCA     = fs.String("nats-ca", "", "CA file of the --nats-url servers' TLS certificates (default: the broker's CA)")
		insecNATS  = fs.Bool("insecure-nats", false, "use a --nats-url server that accepts anonymous connections (logged as an error); never in production")
		natsListen = fs.String("nats-listen", "", "client address of the embedded NATS server for agency systems (TLS; agencies of the registry authenticate with their certificate and may only subscribe to their own events; empty: in-process only)")
		replicas   = fs.Int("replicas", 1, "replicas of streams and buckets (3 on a cluster)")
		idxShards  = fs.Int("index-shards", 0, "streams the per-citizen access index is spread over, 1 to 256: fewer make releases cheaper and citizens' listings dearer; another count than the index's rebuilds it at start, so restart every replica with the same (0: keep the index's count, 16 for a new index)")
		policyDir  = fs.String("policies", "", "policy directory (default: built into the binary)")
		certSource = fs.String("certs", "", `where the broker's certificate comes from: "files" (--cert/--key/--ca), "vault" (Vault PKI) or "dev" (the development CA in DATA/pki, only when asked for); default files if --cert is set`)
		cert       = fs.String("cert", "", "broker certificate file")
		key        = fs.String("key", "", "broker key file")
		ca         = fs.String("ca", "", "CA certificate file for agencies and authorities")
		startWait  = fs.Duration("start-timeout", 60*time.Second, "how long to wait for NATS and the authorities at start")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")

		keySource = fs.String("keys", "local", `where the pseudonym, sealing and checkpoint keys live: "local" (DATA/keys) or "vault"`)
		origin    = fs.String("log-origin", "", "the access log's origin (checkpoint key name); required with --keys vault")
		vaultAddr = fs.String("vault-addr", "", "Vault address, e.g. https://vault.internal:8200")
		vaultCA   = fs.String("vault-ca-cert", "", "CA certificate file of Vault's TLS certificate")
		arMount   = fs.String("vault-approle-mount", vault.DefaultAppRoleMount, "AppRole auth mount")
		roleID    = fs.String("vault-role-id-file", "", "file holding the AppRole role id")
		secretID  = fs.String("vault-secret-id-file", "", "file holding the AppRole secret id")
		trMount   = fs.String("vault-transit-mount", vault.DefaultTransitMount, "transit mount")
		cpKey     = fs.String("vault-checkpoint-key", vault.DefaultCheckpointKey, "transit ed25519 key that signs checkpoints")
		dataKey   = fs.String("vault-data-key", vault.DefaultDataKey, "transit key that wraps the data keys")
		pkiMount  = fs.String("vault-pki-mount", vault.DefaultPKIMount, "PKI mount")
		pkiRole   = fs.String("vault-pki-role", "broker", "PKI role the broker's certificate is issued from")
		pkiTTL    = fs.Duration("vault-pki-ttl", vault.DefaultCertTTL, "lifetime of the broker's certificate (renewed after two thirds)")
		trustDom  = fs.String("trust-domain", trustDomain, "SPIFFE trust domain of the broker's identity (Vault PKI certificates)")

		citizenListen = fs.String("citizen-listen", "127.0.0.1:7444", "citizen gRPC API address (served when --oidc-issuer is set)")
		oidcIssuer    = fs.String("oidc-issuer", "", "OpenID Connect issuer of citizens' ID tokens (empty: no citizen API or portal)")
		oidcClient    = fs.String("oidc-client-id", "", "OAuth client id of the portal: the expected audience of ID tokens")
		oidcSecret    = fs.String("oidc-client-secret-file", "", "file holding the portal's OAuth client secret (empty: public client with PKCE)")
		oidcClaim     = fs.String("oidc-citizen-claim", citizenauth.DefaultCitizenClaim, "ID token claim holding the citizen's 10-digit id")
		oidcCA        = fs.String("oidc-ca", "", "extra CA certificate file to trust for the issuer")
		oidcInsecure  = fs.Bool("oidc-insecure-loopback", false, "development only: accept a plain-http --oidc-issuer on 127.0.0.1, ::1 or localhost")
		portalListen  = fs.String("portal-listen", "", "citizen portal HTTP address (empty: no portal)")
		reportsDir    = fs.String("reports", "", "directory of published data-responsibility reports (JSON of `aperture report`) the portal shows at /report (empty: none)")
		portalURL     = fs.String("portal-url", "", "public URL of the portal, e.g. https://minside.example; its /auth/callback is the OAuth redirect URL")

		witnessPolicy = fs.String("witness-policy", "", "witness policy file (witness, group and quorum lines): submit every checkpoint to these witnesses and serve only checkpoints that meet the quorum")
		logListen     = fs.String("log-listen", "", "HTTP address of the public read-only log (/log/checkpoint, /log/tile/…) when there is no portal (the portal serves it too)")

		metricsListen = fs.String("metrics-listen", "", "HTTP address of /metrics (Prometheus), /healthz and /readyz; no citizen data, but bind it to the monitoring network only (empty: none)")
		tracing       = fs.String("tracing", "", `export OpenTelemetry traces of the gRPC calls: "otlp" (OTLP/gRPC to --otlp-endpoint) or "stdout"; empty: off`)
		otlpEndpoint  = fs.String("otlp-endpoint", "", "host:port of the OTLP/gRPC trace collector (default: OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317)")
		otlpInsecure  = fs.Bool("otlp-insecure", false, "send traces to --otlp-endpoint without TLS (a collector on the same host)")
		healthEvery   = fs.Duration("health-interval", time.Second, "how often health is checked: access log writable, ACCESS leader, NATS, authorities")
		stateTimeout  = fs.Duration("state-timeout", time.Second, "how long a release waits for the broker's own state (case, consent, switch-off) to be read or written before it answers Unavailable")
		appendTimeout = fs.Duration("append-timeout", 250*time.Millisecond, "how long a release waits for the access log to acknowledge its record; the first write that fails or times out opens the log's breaker and releases answer Unavailable at once until a probe write succeeds")
	)
	var authorityAddrs authorityAddresses
	fs.Var(&authorityAddrs, "authority-addresses", "where each authority is reached when not at its registry address: ID=HOST:PORT, comma-separated (e.g. a Kubernetes Service per authority)")
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *natsURL == "" {
		defer lowerGCForEmbeddedNATS(hostTHP())()
	}
	pfs, err := policyFS(*policyDir)
	if err != nil {
		return err
	}
	vcfg := vault.Config{
		Address: *vaultAddr, CACert: *vaultCA,
		AppRole: vault.AppRoleConfig{Mount: *arMount, RoleIDFile: *roleID, SecretIDFile: *secretID},
		Transit: vault.TransitConfig{Mount: *trMount, CheckpointKey: *cpKey, DataKey: *dataKey},
		PKI:     vault.PKIConfig{Mount: *pkiMount, Role: *pkiRole, TTL: *pkiTTL},
	}
	kcfg := keys.Config{Keys: *keySource, Origin: *origin, Vault: vcfg}
	if err := kcfg.Validate(); err != nil {
		return usagef("keys: %v", err)
	}

	if *oidcIssuer != "" {
		// Checked before anything is created in the data directory: a refused issuer changes nothing.
		early := citizenauth.Config{Issuer: *oidcIssuer, ClientID: *oidcClient, CitizenClaim: *oidcClaim, InsecureLoopbackIssuer: *oidcInsecure}
		if err := early.Validate(); err != nil {
			return usagef("citizen login: %v", err)
		}
	}
	tel, err := telemetry.New(ctx, telemetry.Options{Tracing: *tracing, OTLPEndpoint: *otlpEndpoint, OTLPInsecure: *otlpInsecure, Stdout: stdout})
	if err != nil {
		return usagef("telemetry: %v", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			logger.Warn("telemetry shutdown", "err", err)
		}
	}()
	meter := tel.MeterProvider().Meter("github.com/aperture-gov/aperture/cmd/aperture")
	certs, closeCerts, err := brokerCerts(ctx, *certSource, *cert, *key, *ca, *data, *trustDom, vcfg, meter, logger)
	if err != nil {
		return err
	}
	defer closeCerts()

	var metricsSrv *metricsServer
	if *metricsListen != "" {
		if metricsSrv, err = listenMetrics(*metricsListen, logger); err != nil {
			return err
		}
		defer metricsSrv.Close()
	}
	deps := broker.Deps{Policies: pfs, Certs: certs, Logger: logger, Meter: tel.MeterProvider()}
	if tel.Tracing() {
		deps.Tracer = tel.TracerProvider()
	}
	if *witnessPolicy != "" {
		if deps.Witnesses, err = witness.LoadPolicy(*witnessPolicy); err != nil {
			return usagef("%v", err)
		}
	}
	if kcfg.Source() == keys.SourceVault {
		// Vault's data keys are kept wrapped in JetStream, so NATS comes first. Vault is for
		// scaled-out deployments, whose NATS is a cluster.
		if *natsURL == "" {
			return usagef("--keys vault needs --nats-url: the wrapped data keys live in the NATS cluster")
		}
		// The same checked, authenticated connection the broker would open itself.
		nc, err := broker.ConnectExternalNATS(broker.Config{NATSURL: *natsURL, NATSCredentials: *natsCreds,
			NATSNKeyFile: *natsNKey, NATSCA: *natsCA, InsecureNATS: *insecNATS}, certs, logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		deps.NATS = nc
		p, err := vaultkeys.OpenConfig(ctx, kcfg, filepath.Join(*data, "keys"), js, *replicas, logger.With("component", "keys"))
		if err != nil {
			return fmt.Errorf("keys from Vault (refusing to start without them): %w", err)
		}
		defer p.Close()
		if vp, ok := p.(interface{ Vault() *vault.Client }); ok {
			reg, err := vp.Vault().Instrument(meter, "keys")
			if err != nil {
				return err
			}
			defer func() { _ = reg.Unregister() }()
		}
		setKeys(&deps, p)
	} else {
		p, err := keys.OpenLocalProvider(filepath.Join(*data, "keys"), *origin)
		if err != nil {
			return fmt.Errorf("local keys: %w", err)
		}
		defer p.Close()
		setKeys(&deps, p)
	}

	var ps *portalServer
	var login citizenauth.Config
	var verifier *citizenauth.Verifier
	if *oidcIssuer != "" {
		login = citizenauth.Config{Issuer: *oidcIssuer, ClientID: *oidcClient, CitizenClaim: *oidcClaim, CAFile: *oidcCA,
			InsecureLoopbackIssuer: *oidcInsecure}
		if *oidcInsecure {
			logger.Warn("accepting a plain-http OpenID Connect issuer on loopback (" + citizenauth.InsecureLoopbackFlag + "): development only")
		}
		if *oidcSecret != "" {
			b, err := os.ReadFile(*oidcSecret)
			if err != nil {
				return fmt.Errorf("oidc client secret: %w", err)
			}
			login.ClientSecret = strings.TrimSpace(string(b))
		}
		if *portalListen != "" {
			if *portalURL == "" {
				return usagef("--portal-listen needs --portal-url (the public URL the issuer redirects to)")
			}
			login.RedirectURL = strings.TrimSuffix(*portalURL, "/") + "/auth/callback"
		}
		if err := login.Validate(); err != nil {
			return usagef("citizen login: %v", err)
		}
		if verifier, err = citizenauth.NewVerifier(ctx, login); err != nil {
			return fmt.Errorf("citizen login: %w", err)
		}
		deps.Citizens = verifier
	} else if *portalListen != "" {
		return usagef("--portal-listen needs --oidc-issuer: citizens sign in with OpenID Connect")
	}

	b, err := broker.New(ctx, broker.Config{
		DataDir: *data, Listen: *listen, NATSURL: *natsURL, NATSCredentials: *natsCreds,
		NATSNKeyFile: *natsNKey, NATSCA: *natsCA, InsecureNATS: *insecNATS,
		EmbeddedNATSListen: *natsListen, Replicas: *replicas, IndexShards: *idxShards, StartTimeout: *startWait,
		CitizenListen: *citizenListen, AppendTimeout: *appendTimeout, StateTimeout: *stateTimeout, HealthInterval: *healthEvery,
		AuthorityAddresses: authorityAddrs,
	}, deps)
	if err != nil {
		return err
	}
	if *portalListen != "" {
		if ps, err = listenPortal(*portalListen, logger); err != nil {
			return err
		}
		defer ps.Close()
		if c := b.Witnessing(); c != nil {
			ps.witnesses = c.Policy()
		}
		ps.reports, ps.meter = *reportsDir, tel.MeterProvider()
		sess := portalSessions{NATS: b.NATSConn(), Sealer: deps.Sealer, Replicas: *replicas}
		if err := ps.mountPortal(login, verifier, sess, b.CitizenAddr(), certs, false, time.Now, logger); err != nil {
			return err
		}
		ps.mountLog(b.PublicLog())
	}
	if *logListen != "" {
		ls, err := listenLog(*logListen, b.PublicLog(), logger)
		if err != nil {
			return err
		}
		defer ls.Close()
		fmt.Fprintf(stdout, "public log on http://%s/log/checkpoint\n", ls.Addr())
	}
	if metricsSrv != nil {
		metricsSrv.serve(tel, b, logger)
		fmt.Fprintf(stdout, "metrics on http://%s/metrics, health on /healthz and /readyz\n", metricsSrv.Addr())
	}
	fmt.Fprintf(stdout, "broker listening on %s (policy %s)\n", b.Addr(), b.Bundle().Version)
	if u := b.NATSURL(); u != "" {
		fmt.Fprintf(stdout, "NATS for agency systems on %s (client certificate of a registry agency; subscribe to %s only)\n", u, natsembed.EventSubject("<agency>"))
	}
	if addr := b.CitizenAddr(); addr != "" {
		fmt.Fprintf(stdout, "citizen API on %s (ID tokens from %s)\n", addr, *oidcIssuer)
	}
	if ps != nil {
		fmt.Fprintf(stdout, "citizen portal on %s (%s)\n", *portalListen, *portalURL)
	}
	return b.Run(ctx)
}

// setKeys gives the broker the provider's keys.
func setKeys(deps *broker.Deps, p keys.Provider) {
	deps.Pseudonyms, deps.Checkpoints, deps.Sealer = p.Pseudonyms(), p.Checkpoints(), p.Sealer()
}

// brokerCerts returns the broker's certificate source and a function that stops its renewal.
func brokerCerts(ctx context.Context, source, cert, key, ca, data, domain string, vcfg vault.Config, meter metric.Meter, logger *slog.Logger) (mtls.Source, func(), error) {
	if source == "" {
		// No silent development CA: a broker that made its own CA would serve agencies a
		// certificate nobody outside this machine trusts, and trust certificates nobody issued.
		if cert == "" && key == "" && ca == "" {
			return nil, nil, usagef("%s", errNoTLSMaterial)
		}
		source = "files"
	}
	switch source {
	case "files":
		if cert == "" || key == "" || ca == "" {
			return nil, nil, usagef("--certs files needs all of --cert, --key and --ca (%s)", errNoTLSMaterial)
		}
		src, err := mtls.LoadSource(cert, key, ca)
		if err != nil {
			return nil, nil, fmt.Errorf("broker certificate: %w", err)
		}
		return src, func() {}, nil
	case "vault":
		c, err := vault.Open(ctx, vcfg, logger.With("component", "vault"))
		if err != nil {
			return nil, nil, fmt.Errorf("broker certificate from Vault (refusing to start without it): %w", err)
		}
		src, err := vault.NewCertSource(ctx, c, vcfg.PKI, mtls.ID(domain, "broker", ""))
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("broker certificate from Vault PKI: %w", err)
		}
		reg, err := c.Instrument(meter, "certificates")
		if err != nil {
			src.Close()
			c.Close()
			return nil, nil, err
		}
		return src, func() { _ = reg.Unregister(); src.Close(); c.Close() }, nil
	case "dev":
		devca, err := mtls.OpenDevCA(filepath.Join(data, "pki"), trustDomain)
		if err != nil {
			return nil, nil, fmt.Errorf("development CA: %w", err)
		}
		logger.Warn("using the development CA in the data directory; use --certs files or --certs vault in production")
		src, err := devca.Source("broker", "")
		return src, func() {}, err
	}
	return nil, nil, errors.New(`--certs must be "files", "vault" or "dev"`)
}

// errNoTLSMaterial names every way of giving a serving command its TLS certificate.
const errNoTLSMaterial = "no TLS certificate: give --cert, --key and --ca (files), or --certs vault with --vault-addr, " +
	"--vault-role-id-file and --vault-secret-id-file (Vault PKI), or --certs dev for the development CA in the data directory (development only)"

// natsTool is how a command run on the broker's machine (audit verify, report) reaches the broker's
// NATS; see newNATSTool.
type natsTool struct {
	opts   []nats.Option
	tls    *tls.Config
	strict bool // the operator named the servers' CA: no connection in the clear
}

// newNATSTool authenticates as the broker: with the .creds or nkey file given, else with the embedded
// server's key in the data directory; over TLS with the broker's certificate from DATA/pki when there
// is one, trusting caFile (default DATA/pki/ca.crt). Whoever can read the data directory is the
// broker already.
func newNATSTool(data, creds, nkey, caFile string) (natsTool, error) {
	if creds == "" && nkey == "" {
		if p := filepath.Join(data, "nats", broker.EmbeddedNATSKeyFile); fileExists(p) {
			nkey = p
		}
	}
	opts, err := broker.ExternalNATSAuth(creds, nkey)
	if err != nil {
		return natsTool{}, err
	}
	strict := caFile != ""
	pki := filepath.Join(data, "pki")
	if caFile == "" && fileExists(filepath.Join(pki, "ca.crt")) {
		caFile = filepath.Join(pki, "ca.crt")
	}
	var certs mtls.Source
	if fileExists(filepath.Join(pki, "broker.crt")) && caFile != "" {
		src, err := mtls.LoadSource(filepath.Join(pki, "broker.crt"), filepath.Join(pki, "broker.key"), caFile)
		if err != nil {
			return natsTool{}, fmt.Errorf("broker certificate for NATS: %w", err)
		}
		certs = src
	}
	tc, err := broker.ExternalNATSTLS(caFile, certs)
	if err != nil {
		return natsTool{}, err
	}
	return natsTool{opts: opts, tls: tc, strict: strict}, nil
}

// connect opens a JetStream connection to url under the client name given.
func (t natsTool) connect(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := natsembed.ConnectTLSIfOffered(url, t.tls, t.strict, append(t.opts[:len(t.opts):len(t.opts)], nats.Name(name))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// authorityAddresses is the value of --authority-addresses: ID=HOST:PORT pairs, comma-separated.
type authorityAddresses map[string]string

func (a authorityAddresses) String() string {
	pairs := make([]string, 0, len(a))
	for id, addr := range a {
		pairs = append(pairs, id+"="+addr)
	}
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

func (a *authorityAddresses) Set(v string) error {
	if *a == nil {
		*a = authorityAddresses{}
	}
	for _, pair := range strings.Split(v, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		id, addr, ok := strings.Cut(pair, "=")
		if !ok || id == "" || addr == "" {
			return fmt.Errorf("%q: want ID=HOST:PORT", pair)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%q: %w", pair, err)
		}
		(*a)[id] = addr
	}
	return nil
}
