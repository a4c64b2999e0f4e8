package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/lifecycle"
	"github.com/aperture-gov/aperture/policies"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// A component of the broker that fails — with an error or a panic — stops the whole stack (broker,
// its NATS, the authorities) and Run returns that failure.
func TestComponentFailureStopsTheStack(t *testing.T) {
	boom := errors.New("renewal gave up")
	tests := []struct {
		name  string
		fail  func() error
		check func(t *testing.T, err error)
	}{
		{"error", func() error { return boom }, func(t *testing.T, err error) {
			if !errors.Is(err, boom) {
				t.Errorf("Run = %v, want the component's error", err)
			}
		}},
		{"panic", func() error { panic("renewal bug") }, func(t *testing.T, err error) {
			var pe *lifecycle.PanicError
			if !errors.As(err, &pe) || pe.Component != "test loop" {
				t.Errorf("Run = %v, want the component's panic as an error", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			st, err := startStack(ctx, stackOptions{
				DataDir: t.TempDir(), Listen: "127.0.0.1:0", Citizens: 10, Policies: policies.Files(), RandomPorts: true,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			trigger := make(chan struct{})
			st.Broker.Go(lifecycle.Component{Name: "test loop", Run: func(ctx context.Context) error {
				select {
				case <-trigger:
					return tc.fail()
				case <-ctx.Done():
					return nil
				}
			}})
			done := make(chan error, 1)
			go func() { done <- st.Run(context.Background()) }() // nothing but the failure ends it
			waitDialable(t, st.Broker.Addr(), true)
			close(trigger)
			select {
			case err := <-done:
				tc.check(t, err)
			case <-ctx.Done():
				t.Fatal("the stack did not stop after a component failed")
			}
			if !st.Broker.NATSConn().IsClosed() {
				t.Error("the broker's NATS connection is still open")
			}
			waitDialable(t, st.Broker.Addr(), false)
			for id, addr := range st.AuthorityAddrs {
				if c, err := net.Dial("tcp", addr); err == nil {
					c.Close()
					t.Errorf("authority %s still accepts connections", id)
				}
			}
		})
	}
}

// waitDialable waits until addr accepts TCP connections (up) or refuses them (down).
func waitDialable(t *testing.T, addr string, up bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if c != nil {
			c.Close()
		}
		if (err == nil) == up {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: accepting connections is still %v", addr, err == nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A release in flight when shutdown begins is finished — fetched, durably logged and answered —
// before the access log and NATS are closed: the server stops accepting first and drains.
func TestShutdownDrainsInFlightRelease(t *testing.T) {
	arrived, proceed := make(chan struct{}), make(chan struct{})
	ts := newTestStack(t, func(o *stackOptions) {
		o.Rewire = func(id, addr string) string {
			if id != "population" {
				return addr
			}
			return startHoldingProxy(t, o.DataDir, addr, "cw-drain", arrived, proceed)
		}
	})
	j, _ := ts.Broker.Bundle().Journey("sickness-benefit")
	first := j.Steps[0]
	c := ts.open(first.Agency, j.ID, ts.citizenFor(j.ID))
	type result struct {
		resp *brokerv1.ReleaseResponse
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := ts.agency(first.Agency).Release(cw("cw-drain"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "population", Dataset: "person"})
		res <- result{resp, err}
	}()
	<-arrived // the release is at the authority
	ts.stack.sup.Stop()
	waitDialable(t, ts.Broker.Addr(), false) // stopped accepting
	close(proceed)
	r := <-res
	if r.err != nil || r.resp.GetAccessId() == "" {
		t.Fatalf("the in-flight release = %v, %v; want it answered, with its access record", r.resp, r.err)
	}
	// The broker answers a release only after its access record is durable: the log was still open.
	if err := ts.stack.sup.Wait(context.Background()); err != nil {
		t.Fatalf("stack stopped with %v", err)
	}
}

// startHoldingProxy serves AuthorityService as the population authority, forwarding to the real one,
// but holds each Fetch for caseworker (saying so on arrived, once) until proceed is closed. Other
// fetches, such as the register check when a case is opened, pass at once.
func startHoldingProxy(t *testing.T, dataDir, upstream, caseworker string, arrived, proceed chan struct{}) string {
	return startPopulationProxy(t, dataDir, upstream, func(up authorityv1.AuthorityServiceClient) authorityv1.AuthorityServiceServer {
		return &holder{up: up, caseworker: caseworker, arrived: arrived, proceed: proceed}
	})
}

type holder struct {
	authorityv1.UnimplementedAuthorityServiceServer
	up               authorityv1.AuthorityServiceClient
	caseworker       string
	arrived, proceed chan struct{}
}

func (h *holder) Describe(ctx context.Context, req *authorityv1.DescribeRequest) (*authorityv1.DescribeResponse, error) {
	return h.up.Describe(ctx, req)
}

func (h *holder) Fetch(ctx context.Context, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, error) {
	if req.GetContext().GetCaseworker() != h.caseworker {
		return h.up.Fetch(ctx, req)
	}
	select {
	case <-h.arrived:
	default:
		close(h.arrived)
	}
	<-h.proceed
	return h.up.Fetch(ctx, req)
}
