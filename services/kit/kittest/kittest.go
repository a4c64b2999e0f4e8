// Package kittest serves an authority built with the kit over real mutual TLS on 127.0.0.1, with a
// development CA in a temporary directory, so that tests of authorities (and of their callers) go
// through the same gRPC and TLS code as production.
package kittest

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// TrustDomain is the trust domain of the test CA.
const TrustDomain = "aperture.test"

// Server is an authority being served for a test.
type Server struct {
	// Addr is the host:port it listens on.
	Addr string
	// ID is its SPIFFE ID.
	ID string
	// CA issued its certificate; use it to issue callers' certificates.
	CA *mtls.DevCA
	// Client is connected as the broker.
	Client authorityv1.AuthorityServiceClient
}

// Start serves a with a new development CA, allowing the broker as caller (opts may allow more),
// and stops it when the test ends. Logs go to the test's output unless opts set a logger.
func Start(t testing.TB, a *kit.Authority, opts ...kit.Option) *Server {
	t.Helper()
	ca, err := mtls.OpenDevCA(t.TempDir(), TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	return StartWithCA(t, ca, a, opts...)
}

// StartWithCA is Start with a given CA, for tests that run several components under one CA.
func StartWithCA(t testing.TB, ca *mtls.DevCA, a *kit.Authority, opts ...kit.Option) *Server {
	t.Helper()
	src, err := ca.Source(mtls.KindAuthority, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	base := []kit.Option{
		kit.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))),
		kit.WithAllowedCallers(mtls.ID(ca.TrustDomain(), mtls.KindBroker, "")),
	}
	srv, err := kit.NewServer(a, append(base, opts...)...)
	if err != nil {
		t.Fatalf("kit.NewServer(%s): %v", a.ID, err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, mtls.ServerConfig(src)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve(%s): %v", a.ID, err)
		}
	})
	s := &Server{Addr: lis.Addr().String(), ID: mtls.ID(ca.TrustDomain(), mtls.KindAuthority, a.ID), CA: ca}
	s.Client = s.Dial(t, mtls.KindBroker, "")
	return s
}

// Dial returns a client connected with a certificate for kind/name issued by the server's CA. The
// connection is closed when the test ends.
func (s *Server) Dial(t testing.TB, kind, name string) authorityv1.AuthorityServiceClient {
	t.Helper()
	return authorityv1.NewAuthorityServiceClient(s.Conn(t, kind, name))
}

// Conn returns a connection with a certificate for kind/name, for the other services on the
// server (health, reflection). It is closed when the test ends.
func (s *Server) Conn(t testing.TB, kind, name string) *grpc.ClientConn {
	t.Helper()
	src, err := s.CA.Source(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, s.ID))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Fetch fetches as the broker and returns the response and its record, failing the test on error.
func (s *Server) Fetch(t testing.TB, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, proto.Message) {
	t.Helper()
	resp, err := s.Client.Fetch(context.Background(), req)
	if err != nil {
		t.Fatalf("Fetch %s: %v", req.GetDataset(), err)
	}
	rec, err := resp.GetRecord().UnmarshalNew()
	if err != nil {
		t.Fatalf("Fetch %s: record: %v", req.GetDataset(), err)
	}
	return resp, rec
}

// Request returns a valid FetchRequest for one citizen's dataset reduced to paths, with a test
// access context.
func Request(citizenID, dataset string, paths ...string) *authorityv1.FetchRequest {
	return &authorityv1.FetchRequest{
		CitizenId: citizenID,
		Dataset:   dataset,
		FieldMask: &fieldmaskpb.FieldMask{Paths: paths},
		Context: &authorityv1.AccessContext{
			AccessId: "acc-test-1", CaseId: "case-test-1", Journey: "test-journey", Step: "test-step",
			Purpose: "test", LegalBasis: "test", Agency: "test-agency", Caseworker: "tester",
		},
	}
}
