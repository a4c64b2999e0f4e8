package citizenauth_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/citizenauth/devissuer"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

var demo = []devissuer.Citizen{
	{ID: "0101901234", Name: "Anna Jensen", Note: "moving house"},
	{ID: "0202855678", Name: "Bo Nielsen"},
}

// clock is a settable clock shared by the issuer and the verifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one loopback HTTP server carrying a development issuer under /dev-oidc/; tests add the
// portal's routes to the same mux, as `aperture dev` does.
type env struct {
	srv      *httptest.Server
	js       jetstream.JetStream
	sealer   *keys.AEADRing
	sessions *citizenauth.SessionStore
	mux      *http.ServeMux
	base     string
	iss      *devissuer.Issuer
	clock    *clock
}

func newEnv(t *testing.T, opts ...func(*devissuer.Options)) *env {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	base := "http://" + srv.Listener.Addr().String()
	clk := &clock{t: time.Now().Truncate(time.Second)}
	o := devissuer.Options{Issuer: base + "/dev-oidc", ClientID: "portal", Citizens: demo, Now: clk.Now}
	for _, f := range opts {
		f(&o)
	}
	iss, err := devissuer.New(o)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(iss.MountPath(), iss.Handler())
	srv.Start()
	t.Cleanup(srv.Close)
	e := &env{srv: srv, mux: mux, base: base, iss: iss, clock: clk}
	e.js, e.sealer = natstest.JetStream(t), keystest.Sealer(t)
	e.sessions = e.sessionStore(t, e.sealer, nil)
	return e
}

// sessionStore opens the session bucket on the env's NATS server with sealer; several stores on
// one server are several portal replicas.
func (e *env) sessionStore(t *testing.T, sealer citizenauth.Sealer, logger *slog.Logger) *citizenauth.SessionStore {
	t.Helper()
	s, err := citizenauth.OpenSessionStore(context.Background(), e.js, sealer, citizenauth.SessionStoreOptions{Now: e.clock.Now, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) config() citizenauth.Config {
	return citizenauth.Config{
		Issuer:      e.iss.IssuerURL(),
		ClientID:    "portal",
		RedirectURL: e.base + "/auth/callback",
		// The development issuer of the tests is served over plain http on loopback.
		InsecureLoopbackIssuer: true,
	}
}

func (e *env) verifier(t *testing.T, cfg citizenauth.Config) *citizenauth.Verifier {
	t.Helper()
	v, err := citizenauth.NewVerifier(context.Background(), cfg, citizenauth.WithClock(e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return v
}
