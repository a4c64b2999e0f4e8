package health_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/aperture-gov/aperture/broker/health"
)

// serve puts hs on a real gRPC server on loopback and returns a health client.
func serve(t *testing.T, hs *grpchealth.Server) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func status(t *testing.T, c healthpb.HealthClient, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health of %q: %v", service, err)
	}
	return resp.GetStatus()
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// TestServicesFollowTheirChecks: each service is SERVING exactly while the checks that gate it pass;
// "" and /readyz need every check; /healthz stays 200 (a failing dependency is not a dead process).
func TestServicesFollowTheirChecks(t *testing.T) {
	var logErr, authErr atomic.Pointer[error]
	check := func(p *atomic.Pointer[error]) func(context.Context) error {
		return func(context.Context) error {
			if e := p.Load(); e != nil {
				return *e
			}
			return nil
		}
	}
	hs := grpchealth.NewServer()
	m, err := health.New(health.Options{Interval: time.Hour, Servers: []*grpchealth.Server{hs}},
		health.Check{Name: "log", Services: []string{"svc.Release", "svc.Audit"}, Run: check(&logErr)},
		health.Check{Name: "authority:x", Services: []string{"svc.Release"}, Run: check(&authErr)},
	)
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, hs)
	if st := status(t, c, "svc.Release"); st != notServing {
		t.Fatalf("before the first round: %v, want NOT_SERVING", st)
	}
	down := errors.New("down")
	for _, tc := range []struct {
		name              string
		logDown, authDown bool
		want              map[string]healthpb.HealthCheckResponse_ServingStatus
		ready             bool
	}{
		{"all well", false, false, map[string]healthpb.HealthCheckResponse_ServingStatus{"": serving, "svc.Release": serving, "svc.Audit": serving}, true},
		{"authority down", false, true, map[string]healthpb.HealthCheckResponse_ServingStatus{"": notServing, "svc.Release": notServing, "svc.Audit": serving}, false},
		{"log down", true, false, map[string]healthpb.HealthCheckResponse_ServingStatus{"": notServing, "svc.Release": notServing, "svc.Audit": notServing}, false},
		{"recovered", false, false, map[string]healthpb.HealthCheckResponse_ServingStatus{"": serving, "svc.Release": serving, "svc.Audit": serving}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logErr.Store(nil)
			authErr.Store(nil)
			if tc.logDown {
				logErr.Store(&down)
			}
			if tc.authDown {
				authErr.Store(&down)
			}
			m.Round(context.Background())
			for svc, want := range tc.want {
				if got := status(t, c, svc); got != want {
					t.Errorf("service %q: %v, want %v", svc, got, want)
				}
			}
			code, body := get(t, m.Handler(), "/readyz")
			if (code == http.StatusOK) != tc.ready {
				t.Errorf("/readyz: %d %s, want ready=%v", code, body, tc.ready)
			}
			if tc.authDown && !strings.Contains(body, `"authority:x":"down"`) {
				t.Errorf("/readyz body %s does not name the failing check", body)
			}
			if code, _ := get(t, m.Handler(), "/healthz"); code != http.StatusOK {
				t.Errorf("/healthz: %d, want 200", code)
			}
		})
	}
}

// TestFailureIsPublishedBeforeSlowChecks: a failing check turns its services NOT_SERVING while a
// slow check of the same round is still running.
func TestFailureIsPublishedBeforeSlowChecks(t *testing.T) {
	var fail atomic.Bool
	release := make(chan struct{})
	hs := grpchealth.NewServer()
	m, err := health.New(health.Options{Interval: time.Hour, Timeout: time.Minute, Servers: []*grpchealth.Server{hs}},
		health.Check{Name: "fast", Services: []string{"svc"}, Run: func(context.Context) error {
			if fail.Load() {
				return errors.New("broken")
			}
			return nil
		}},
		health.Check{Name: "slow", Run: func(ctx context.Context) error {
			if fail.Load() {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, hs)
	m.Round(context.Background())
	if st := status(t, c, "svc"); st != serving {
		t.Fatalf("svc: %v, want SERVING", st)
	}
	fail.Store(true)
	done := make(chan struct{})
	go func() { m.Round(context.Background()); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for status(t, c, "svc") != notServing {
		if time.Now().After(deadline) {
			t.Fatal("the failure was not published while the slow check ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("the round ended before the slow check was released; the test proves nothing")
	default:
	}
	close(release)
	<-done
}
