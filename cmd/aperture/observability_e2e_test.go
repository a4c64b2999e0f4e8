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

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
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
	wait := ts.waitServing
	wait(releases, healthpb.HealthCheckResponse_SERVING)

	proxies[authority].close()
	wait(releases, healthpb.HealthCheckResponse_NOT_SERVING)
	if st := ts.serviceStatus(audit); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("%s is %v while only an authority is down, want SERVING", audit, st)
	}
	code, ready, failing := ts.readyz()
	if code != http.StatusServiceUnavailable || ready {
		t.Fatalf("/readyz with %s down: %d ready=%v, want 503", authority, code, ready)
	}
	if _, ok := failing["authority:"+authority]; !ok || len(failing) != 1 {
		t.Errorf("/readyz names %v, want only authority:%s", failing, authority)
	}

	proxies[authority].open()
	wait(releases, healthpb.HealthCheckResponse_SERVING)
	wait("", healthpb.HealthCheckResponse_SERVING)
	if len(ts.Broker.HealthFailing()) != 0 {
		t.Errorf("failing after recovery: %v", ts.Broker.HealthFailing())
	}
}

// TestHealthFollowsTheIndexLayout: when another replica re-lays the per-citizen index out with
// another shard count, this broker's listings cannot work, so the services that list (audit,
// citizen, corrections) turn NOT_SERVING and /readyz names access-index alone, while releases, which
// do not read the index, stay SERVING; once the index has this broker's count again, all serve.
func TestHealthFollowsTheIndexLayout(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.MetricsListen = "127.0.0.1:0" })
	releases := brokerv1.BrokerService_ServiceDesc.ServiceName
	audit := auditv1.AuditService_ServiceDesc.ServiceName
	ts.waitServing(audit, healthpb.HealthCheckResponse_SERVING)

	js, err := jetstream.New(ts.Broker.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shards := 0
	for range js.StreamNames(ctx, jetstream.WithStreamListSubject(accesslog.IndexSubjectPrefix+">")).Name() {
		shards++
	}
	// What another replica started with another count does at its start (any key: it only lays out).
	relayout := func(n int) {
		t.Helper()
		other, err := accesslog.Open(ctx, js, accesslog.Options{IndexShards: n, Sealer: keystest.Sealer(t)})
		if err != nil {
			t.Fatal(err)
		}
		other.Close()
	}
	relayout(shards + 1)
	ts.waitServing(audit, healthpb.HealthCheckResponse_NOT_SERVING)
	if st := ts.serviceStatus(releases); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("%s is %v while only the index layout changed, want SERVING", releases, st)
	}
	code, ready, failing := ts.readyz()
	if code != http.StatusServiceUnavailable || ready {
		t.Fatalf("/readyz with the index re-laid out: %d ready=%v, want 503", code, ready)
	}
	if why, ok := failing[broker.CheckAccessIndex]; !ok || len(failing) != 1 || !strings.Contains(why, "shard count") {
		t.Errorf("/readyz names %v, want only %s saying the shard count differs", failing, broker.CheckAccessIndex)
	}

	relayout(shards)
	ts.waitServing(audit, healthpb.HealthCheckResponse_SERVING)
	ts.waitServing("", healthpb.HealthCheckResponse_SERVING)
}

// waitServing waits up to 30 s for the broker's gRPC health to say want for service.
func (ts *testStack) waitServing(service string, want healthpb.HealthCheckResponse_ServingStatus) {
	ts.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for ts.serviceStatus(service) != want {
		if time.Now().After(deadline) {
			ts.t.Fatalf("%s is %v, want %v (failing: %v)", service, ts.serviceStatus(service), want, ts.Broker.HealthFailing())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readyz asks /readyz: the status code, and the body's ready flag and failing checks.
func (ts *testStack) readyz() (code int, ready bool, failing map[string]string) {
	ts.t.Helper()
	resp, err := http.Get("http://" + ts.Metrics.Addr() + "/readyz")
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Ready   bool              `json:"ready"`
		Failing map[string]string `json:"failing"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		ts.t.Fatalf("/readyz body: %v", err)
	}
	return resp.StatusCode, body.Ready, body.Failing
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
