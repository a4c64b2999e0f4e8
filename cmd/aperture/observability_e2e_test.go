package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestReleaseSpanCarriesAccessID: with tracing on, a release's server span names its access record
// (aperture.access_id), the call to the authority is a span of the same trace, and no span
// attribute holds the citizen's id.
func TestReleaseSpanCarriesAccessID(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	ts := newTestStack(t, func(o *stackOptions) { o.Tracer = tp })
	j := ts.Broker.Bundle().Journeys()[0]
	first := j.Steps[0]
	citizen := ts.citizenFor(j.ID)
	c := ts.open(first.Agency, j.ID, citizen)
	rule := first.Rules[0]
	resp, err := ts.agency(first.Agency).Release(cw("cw-trace"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
	if err != nil {
		t.Fatal(err)
	}
	var release *tracetest.SpanStub
	spans := exp.GetSpans()
	for i, s := range spans {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.String(), citizen) {
				t.Errorf("span %q attribute %s holds the citizen id", s.Name, a.Key)
			}
			if a.Key == "aperture.access_id" && a.Value.AsString() == resp.GetAccessId() {
				release = &spans[i]
			}
		}
	}
	if release == nil {
		t.Fatalf("no span carries aperture.access_id=%s among %d spans", resp.GetAccessId(), len(spans))
	}
	if !strings.HasSuffix(release.Name, "/Release") || release.SpanKind.String() != "server" {
		t.Errorf("the access id is on span %q (%s), want the Release server span", release.Name, release.SpanKind)
	}
	fetched := false
	for _, s := range spans {
		if strings.HasSuffix(s.Name, "/Fetch") && s.SpanContext.TraceID() == release.SpanContext.TraceID() && s.Parent.SpanID() == release.SpanContext.SpanID() {
			fetched = true
		}
	}
	if !fetched {
		t.Error("no Fetch client span in the release's trace")
	}
}

// proxy forwards TCP to target until closed; it can be opened again on the same address.
type proxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	lis    net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target, addr: "127.0.0.1:0"}
	p.open()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) open() {
	p.t.Helper()
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.lis, p.addr = lis, lis.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
}

// close stops listening and cuts every forwarded connection: the authority is unreachable.
func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestHealthFollowsAnAuthority: when an authority a journey releases from becomes unreachable, the
// release service turns NOT_SERVING (the audit service, which does not need it, stays SERVING) and
// /readyz names it; when it is back, both are SERVING again.
func TestHealthFollowsAnAuthority(t *testing.T) {
	proxies := map[string]*proxy{}
	ts := newTestStack(t, func(o *stackOptions) {
		o.MetricsListen = "127.0.0.1:0"
		o.Rewire = func(id, addr string) string {
			proxies[id] = newProxy(t, addr)
			return proxies[id].addr
		}
	})
	authority := ts.Broker.Bundle().Journeys()[0].Steps[0].Rules[0].Authority
	releases := brokerv1.BrokerService_ServiceDesc.ServiceName
	audit := auditv1.AuditService_ServiceDesc.ServiceName
	wait := func(service string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for ts.serviceStatus(service) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s is %v, want %v (failing: %v)", service, ts.serviceStatus(service), want, ts.Broker.HealthFailing())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait(releases, healthpb.HealthCheckResponse_SERVING)

	proxies[authority].close()
	wait(releases, healthpb.HealthCheckResponse_NOT_SERVING)
	if st := ts.serviceStatus(audit); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("%s is %v while only an authority is down, want SERVING", audit, st)
	}
	resp, err := http.Get("http://" + ts.Metrics.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Ready   bool              `json:"ready"`
		Failing map[string]string `json:"failing"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || body.Ready {
		t.Fatalf("/readyz with %s down: %d %+v %v, want 503", authority, resp.StatusCode, body, err)
	}
	if _, ok := body.Failing["authority:"+authority]; !ok || len(body.Failing) != 1 {
		t.Errorf("/readyz names %v, want only authority:%s", body.Failing, authority)
	}

	proxies[authority].open()
	wait(releases, healthpb.HealthCheckResponse_SERVING)
	wait("", healthpb.HealthCheckResponse_SERVING)
	if len(ts.Broker.HealthFailing()) != 0 {
		t.Errorf("failing after recovery: %v", ts.Broker.HealthFailing())
	}
}

// serviceStatus asks the broker's gRPC health for service.
func (ts *testStack) serviceStatus(service string) healthpb.HealthCheckResponse_ServingStatus {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(ts.conn("agency", ts.Registry.Agencies[0].ID)).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}
