package citizenauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/citizenauth/devissuer"
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
	srv   *httptest.Server
	mux   *http.ServeMux
	base  string
	iss   *devissuer.Issuer
	clock *clock
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
	return &env{srv: srv, mux: mux, base: base, iss: iss, clock: clk}
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
