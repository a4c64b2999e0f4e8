package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/citizenauth/devissuer"
	"github.com/aperture-gov/aperture/broker/portal"
	"github.com/aperture-gov/aperture/broker/report"
	"github.com/aperture-gov/aperture/broker/witness"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// devClientID is the OAuth client id of the portal in the development stack.
const devClientID = "aperture-portal"

// portalServer is the citizen portal's HTTP server: the portal pages, the sign-in routes and, in dev
// only, the development OpenID provider. It listens before the broker starts, because the broker's
// token verifier discovers the issuer at start and in dev that issuer is served here.
type portalServer struct {
	lis   net.Listener
	srv   *http.Server
	mux   *http.ServeMux
	base  string // e.g. http://127.0.0.1:8080
	login *citizenauth.Login
	// sessions is the portal's session store (tests read its counters).
	sessions *citizenauth.SessionStore
	conn     *grpc.ClientConn
	done     chan struct{}
	once     sync.Once
	// witnesses, if set before mountPortal, is the policy the portal checks access proofs with.
	witnesses *witness.Policy
	// reports, if set before mountPortal, is the directory of published data-responsibility reports
	// (JSON files of `aperture report`) shown at /report.
	reports string
	// meter, if set before mountPortal, records the portal's metrics.
	meter metric.MeterProvider
	// issuer is the development OpenID provider, when mounted (tests mint citizens' tokens with it).
	issuer *devissuer.Issuer
}

func listenPortal(addr string, logger *slog.Logger) (*portalServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("portal: listen on %s: %w", addr, err)
	}
	p := &portalServer{lis: lis, mux: http.NewServeMux(), base: "http://" + lis.Addr().String(), done: make(chan struct{})}
	p.srv = &http.Server{
		Handler:           p.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(p.done)
		if err := p.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("portal stopped", "err", err)
		}
	}()
	return p, nil
}

// mountDevIssuer serves the development OpenID provider on the portal and returns the citizen-login
// configuration that trusts it. Only `aperture dev` calls this: the broker command has no way to.
func (p *portalServer) mountDevIssuer(pop *demo.Population, now func() time.Time) (citizenauth.Config, error) {
	var citizens []devissuer.Citizen
	for _, f := range pop.Featured() {
		citizens = append(citizens, devissuer.Citizen{ID: f.ID, Name: f.Name, Note: f.Story})
	}
	iss, err := devissuer.New(devissuer.Options{Issuer: p.base + "/dev-oidc", ClientID: devClientID, Citizens: citizens, Now: now})
	if err != nil {
		return citizenauth.Config{}, err
	}
	p.mux.Handle(iss.MountPath(), iss.Handler())
	p.issuer = iss
	// The development issuer is served over plain http on the portal's loopback address.
	return citizenauth.Config{Issuer: iss.IssuerURL(), ClientID: devClientID, RedirectURL: p.base + "/auth/callback", InsecureLoopbackIssuer: true}, nil
}

// portalSessions is where the portal keeps its sessions: the broker's NATS (so every replica shares
// them) and its sealing key (so a record in the bucket cannot be forged or read).
type portalSessions struct {
	NATS     *nats.Conn
	Sealer   citizenauth.Sealer
	Replicas int
}

// mountPortal adds sign-in and the portal pages, talking to the citizen API at apiAddr over TLS.
func (p *portalServer) mountPortal(cfg citizenauth.Config, v *citizenauth.Verifier, ps portalSessions, apiAddr string, certs mtls.Source, dev bool, now func() time.Time, logger *slog.Logger) error {
	js, err := jetstream.New(ps.NATS)
	if err != nil {
		return fmt.Errorf("portal sessions: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := citizenauth.OpenSessionStore(ctx, js, ps.Sealer, citizenauth.SessionStoreOptions{
		Replicas: ps.Replicas, Logger: logger, Now: now,
	})
	if err != nil {
		return fmt.Errorf("portal sessions: %w", err)
	}
	// The portal renders the sign-in's problems in the citizen's language; it is built after the login,
	// which it uses, and before anything is served.
	var pt *portal.Portal
	login, err := citizenauth.NewLogin(cfg, v, store, citizenauth.WithLogger(logger.With("component", "login")),
		citizenauth.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, status int, problem citizenauth.Problem, _ string) {
			pt.SigninError(w, r, status, string(problem))
		}))
	if err != nil {
		return fmt.Errorf("portal sign-in: %w", err)
	}
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(certs, brokerID()))))
	if err != nil {
		return fmt.Errorf("portal: citizen API at %s: %w", apiAddr, err)
	}
	pt, err = portal.New(portal.Config{
		Citizen: citizenv1.NewCitizenServiceClient(conn), Corrections: citizenv1.NewCitizenCorrectionServiceClient(conn),
		Delegations: citizenv1.NewCitizenDelegationServiceClient(conn), Sessions: sessions{login}, DevBanner: dev,
		Logger: logger.With("component", "portal"), Now: now, Witnesses: p.witnesses,
		Reports: publishedReports(p.reports), Meter: p.meter,
	})
	if err != nil {
		conn.Close()
		return err
	}
	login.Routes(p.mux)
	pt.Routes(p.mux)
	p.login, p.conn, p.sessions = login, conn, store
	return nil
}

// mountLog serves the access log's public read-only endpoint (checkpoint and tiles) under /log/.
func (p *portalServer) mountLog(h http.Handler) { p.mux.Handle("/log/", h) }

// Close stops serving; open Server-Sent Event streams are cut.
func (p *portalServer) Close() {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := p.srv.Shutdown(ctx); err != nil {
			p.srv.Close()
		}
		<-p.done
		if p.conn != nil {
			p.conn.Close()
		}
	})
}

// sessions adapts the sign-in to what the portal needs.
type sessions struct{ l *citizenauth.Login }

func (s sessions) Session(r *http.Request) (token, name string, ok bool) {
	se, ok := s.l.Session(r)
	return se.Token, se.Name, ok
}

func brokerID() string { return mtls.ID(trustDomain, "broker", "") }

// publishedReports is the portal's source of published reports: the directory, or none.
func publishedReports(dir string) portal.Reports {
	if dir == "" {
		return nil
	}
	return report.Dir(dir)
}
