package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/server"
	"github.com/aperture-gov/aperture/policies"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// secretCitizen stands for a field value or citizen id a handler holds when it fails: it must reach
// neither the caller nor the log.
const secretCitizen = "0101901234"

func TestCodeOfEveryKind(t *testing.T) {
	want := map[refusal.Kind]codes.Code{
		refusal.Internal:           codes.Internal,
		refusal.PermissionDenied:   codes.PermissionDenied,
		refusal.FailedPrecondition: codes.FailedPrecondition,
		refusal.NotFound:           codes.NotFound,
		refusal.InvalidArgument:    codes.InvalidArgument,
		refusal.Unavailable:        codes.Unavailable,
		refusal.Unauthenticated:    codes.Unauthenticated,
		refusal.Aborted:            codes.Aborted,
		refusal.ResourceExhausted:  codes.ResourceExhausted,
	}
	for _, k := range refusal.Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			got := server.Code(k)
			if got == codes.OK {
				t.Fatalf("Code(%v) = OK: a refusal would reach the caller as success", k)
			}
			w, ok := want[k]
			if !ok {
				t.Fatalf("kind %v is new: add its code to this table and to the edge", k)
			}
			if got != w {
				t.Errorf("Code(%v) = %v, want %v", k, got, w)
			}
		})
	}
	if got := server.Code(refusal.Kind(len(refusal.Kinds()) + 7)); got != codes.Internal {
		t.Errorf("Code(unknown kind) = %v, want Internal", got)
	}
}

// fakeBroker is a BrokerService whose handlers do what the test says: fail with a given error, or panic.
type fakeBroker struct {
	brokerv1.UnimplementedBrokerServiceServer
	err    atomic.Pointer[error]
	called atomic.Int32
}

func (f *fakeBroker) GetCase(ctx context.Context, _ *brokerv1.GetCaseRequest) (*brokerv1.GetCaseResponse, error) {
	f.called.Add(1)
	if _, ok := server.CallerFrom(ctx); !ok {
		return nil, errors.New("the identity stage put no caller in the context")
	}
	if e := f.err.Load(); e != nil {
		return nil, *e
	}
	return &brokerv1.GetCaseResponse{}, nil
}

func (f *fakeBroker) OpenCase(_ context.Context, req *brokerv1.OpenCaseRequest) (*brokerv1.OpenCaseResponse, error) {
	panic(fmt.Sprintf("cannot open a case for %s", req.GetCitizenId()))
}

type fakeCitizen struct {
	citizenv1.UnimplementedCitizenServiceServer
}

func (fakeCitizen) WatchAccesses(*citizenv1.WatchAccessesRequest, grpc.ServerStreamingServer[citizenv1.WatchAccessesResponse]) error {
	var ids []string
	_ = ids[len(secretCitizen)] // index out of range: a runtime panic, as a bug in a handler would be
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type edgeWorld struct {
	broker  *fakeBroker
	logs    *syncBuffer
	addr    string
	ca      *mtls.DevCA
	reg     *policy.Registry
	agency  *policy.Agency
	brokerI string
	metrics *sdkmetric.ManualReader
}

// startEdge serves the fakes behind the broker's edge, with TLS and the agency identity of the
// registry, on a loopback port.
func startEdge(t *testing.T) *edgeWorld {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Agencies) == 0 {
		t.Fatal("the registry has no agency")
	}
	agency := reg.Agencies[0]
	td, _, _, err := mtls.ParseID(agency.Identity)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := mtls.OpenDevCA(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	edge, err := server.NewEdge(server.EdgeConfig{
		Identity: server.AgencyIdentity(func() *policy.Registry { return reg }),
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	calls, err := server.NewCallMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	opts := append(calls.ServerOptions(), edge.ServerOptions()...)
	srv := grpc.NewServer(append(opts, grpc.Creds(credentials.NewTLS(mtls.ServerConfig(src))))...)
	fb := &fakeBroker{}
	brokerv1.RegisterBrokerServiceServer(srv, fb)
	citizenv1.RegisterCitizenServiceServer(srv, fakeCitizen{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &edgeWorld{broker: fb, logs: logs, addr: lis.Addr().String(), ca: ca, reg: reg, agency: agency,
		brokerI: mtls.ID(td, mtls.KindBroker, ""), metrics: reader}
}

// calls is how many calls of method (without the leading slash) the call-duration histogram counted
// with status code (as otelgrpc names it, e.g. "INVALID_ARGUMENT").
func (w *edgeWorld) calls(t *testing.T, method, code string) uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := w.metrics.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != server.MetricCallDuration || !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				mv, _ := dp.Attributes.Value("rpc.method")
				cv, _ := dp.Attributes.Value("rpc.response.status_code")
				if mv.AsString() == method && cv.AsString() == code {
					n += dp.Count
				}
			}
		}
	}
	return n
}

// conn dials the edge with a certificate of kind/name.
func (w *edgeWorld) conn(t *testing.T, kind, name string) *grpc.ClientConn {
	t.Helper()
	src, err := w.ca.Source(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(w.addr, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, w.brokerI))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func caseworkerCtx(t *testing.T) context.Context {
	return metadata.AppendToOutgoingContext(t.Context(), server.CaseworkerHeader, "cw-1")
}

const validCaseID = "case_0123456789abcdefghijklmnop"

// Every refusal kind reaches a real client as a non-OK code — the one the kind maps to — and a kind
// the edge does not know (a bug) as Internal without its reason.
func TestEveryRefusalKindIsAnErrorOverGRPC(t *testing.T) {
	w := startEdge(t)
	client := brokerv1.NewBrokerServiceClient(w.conn(t, mtls.KindAgency, agencyName(t, w.agency)))
	kinds := append(refusal.Kinds(), refusal.Kind(len(refusal.Kinds())+3))
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			var err error = refusal.New(k, "refused as %v", k)
			w.broker.err.Store(&err)
			_, got := client.GetCase(caseworkerCtx(t), &brokerv1.GetCaseRequest{CaseId: validCaseID})
			st, _ := status.FromError(got)
			if got == nil || st.Code() == codes.OK {
				t.Fatalf("refusal of kind %v answered OK", k)
			}
			if st.Code() != server.Code(k) {
				t.Errorf("code %v, want %v", st.Code(), server.Code(k))
			}
			if st.Code() == codes.Internal && st.Message() != "internal error" {
				t.Errorf("an Internal answer shows %q", st.Message())
			}
		})
	}
}

func agencyName(t *testing.T, a *policy.Agency) string {
	t.Helper()
	_, kind, name, err := mtls.ParseID(a.Identity)
	if err != nil || kind != mtls.KindAgency {
		t.Fatalf("agency %s identity %q: %v", a.ID, a.Identity, err)
	}
	return name
}

func TestEdgeStages(t *testing.T) {
	w := startEdge(t)
	agencyConn := w.conn(t, mtls.KindAgency, agencyName(t, w.agency))
	client := brokerv1.NewBrokerServiceClient(agencyConn)
	stranger := brokerv1.NewBrokerServiceClient(w.conn(t, mtls.KindAgency, "not-in-the-registry"))
	internal := errors.New("disk on fire")
	wrappedStatus := fmt.Errorf("fetch from authority: %w", status.Error(codes.NotFound, "no such record at the authority"))

	tests := []struct {
		name       string
		client     brokerv1.BrokerServiceClient
		ctx        func(*testing.T) context.Context
		caseID     string
		handlerErr *error
		want       codes.Code
		handled    bool // the handler ran
	}{
		{"ok", client, caseworkerCtx, validCaseID, nil, codes.OK, true},
		{"unregistered certificate", stranger, caseworkerCtx, validCaseID, nil, codes.PermissionDenied, false},
		{"no caseworker", client, func(t *testing.T) context.Context { return t.Context() }, validCaseID, nil, codes.InvalidArgument, false},
		{"invalid request", client, caseworkerCtx, "case-not-an-id", nil, codes.InvalidArgument, false},
		{"plain error is internal", client, caseworkerCtx, validCaseID, &internal, codes.Internal, true},
		{"a status deep in the chain is internal", client, caseworkerCtx, validCaseID, &wrappedStatus, codes.Internal, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.broker.err.Store(tc.handlerErr)
			before := w.broker.called.Load()
			const method = "aperture.broker.v1.BrokerService/GetCase"
			counted := w.calls(t, method, rpccode.Code(tc.want).String())
			_, err := tc.client.GetCase(tc.ctx(t), &brokerv1.GetCaseRequest{CaseId: tc.caseID})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			// Measured with the code the caller got: the edge maps errors inside the measurement.
			if n := w.calls(t, method, rpccode.Code(tc.want).String()); n != counted+1 {
				t.Errorf("calls measured with %v: %d, want %d", tc.want, n, counted+1)
			}
			if handled := w.broker.called.Load() > before; handled != tc.handled {
				t.Errorf("handler ran: %v, want %v", handled, tc.handled)
			}
			if tc.want == codes.Internal && status.Convert(err).Message() != "internal error" {
				t.Errorf("Internal shows %q", status.Convert(err).Message())
			}
		})
	}
}

// A panicking handler answers Internal with nothing of the panic; the log says which method panicked
// and where, never the panic's value; the server goes on serving.
func TestPanicBecomesInternal(t *testing.T) {
	w := startEdge(t)
	cc := w.conn(t, mtls.KindAgency, agencyName(t, w.agency))
	client := brokerv1.NewBrokerServiceClient(cc)

	_, err := client.OpenCase(caseworkerCtx(t), &brokerv1.OpenCaseRequest{Journey: "any-journey", CitizenId: secretCitizen})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("unary panic answered %v %q, want Internal \"internal error\"", st.Code(), st.Message())
	}

	stream, err := citizenv1.NewCitizenServiceClient(cc).WatchAccesses(caseworkerCtx(t), &citizenv1.WatchAccessesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("stream panic answered %v %q, want Internal \"internal error\"", st.Code(), st.Message())
	}

	if _, err := client.GetCase(caseworkerCtx(t), &brokerv1.GetCaseRequest{CaseId: validCaseID}); err != nil {
		t.Fatalf("after the panics the server does not serve: %v", err)
	}
	logs := w.logs.String()
	for _, want := range []string{
		"panic in a gRPC handler", "/aperture.broker.v1.BrokerService/OpenCase", "/aperture.citizen.v1.CitizenService/WatchAccesses",
		"panic_type=string", "fakeBroker).OpenCase", "index out of range",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, secretCitizen) {
		t.Errorf("the log shows the panic's value:\n%s", logs)
	}
}
