// Package natstest starts the real embedded NATS server for tests: JetStream on, storage in the test's
// temporary directory, shut down when the test ends. Every connection it hands out authenticates,
// as in production: the broker with its nkey, agencies with their client certificate.
package natstest

import (
	"crypto/tls"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// JetStream starts a server for t and returns a JetStream context on an in-process connection
// authenticated as the broker.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return brokerJetStream(t, srv)
}

func brokerJetStream(t testing.TB, srv *natsembed.Server) jetstream.JetStream {
	t.Helper()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Server is a server whose client port requires mutual TLS, with a development CA that issues the
// certificates of the broker (the server's own) and of the agencies.
type Server struct {
	*natsembed.Server
	CA *mtls.DevCA
	// JetStream is the broker's (in-process, nkey-authenticated).
	JetStream jetstream.JetStream
	agencies  map[string]string // id → SPIFFE ID
}

// StartTLS starts a server for t that admits the broker and, by certificate, the given agencies. The
// CA's trust domain is the agencies' (aperture.test if there are none); all must share one.
func StartTLS(t testing.TB, agencies ...natsembed.Agency) *Server {
	t.Helper()
	domain := "aperture.test"
	ids := map[string]string{}
	for i, a := range agencies {
		td, _, _, err := mtls.ParseID(a.Identity)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && td != domain {
			t.Fatalf("agencies in trust domains %s and %s", domain, td)
		}
		domain = td
		ids[a.ID] = a.Identity
	}
	ca, err := mtls.OpenDevCA(t.TempDir(), domain)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, TLS: src, Agencies: agencies})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return &Server{Server: srv, CA: ca, JetStream: brokerJetStream(t, srv), agencies: ids}
}

// AgencyTLS is the client TLS configuration of agency id: its certificate from the test CA, and the
// server verified as the broker.
func (s *Server) AgencyTLS(t testing.TB, id string) *tls.Config {
	t.Helper()
	identity, ok := s.agencies[id]
	if !ok {
		t.Fatalf("agency %q was not given to StartTLS", id)
	}
	_, kind, name, err := mtls.ParseID(identity)
	if err != nil {
		t.Fatal(err)
	}
	src, err := s.CA.Source(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	return mtls.ClientConfig(src, mtls.ID(s.CA.TrustDomain(), mtls.KindBroker, ""))
}

// ConnectAgency connects over TCP and TLS as agency id. It returns the error of nats.Connect, so
// tests can also assert refusals.
func (s *Server) ConnectAgency(t testing.TB, id string, opts ...nats.Option) (*nats.Conn, error) {
	t.Helper()
	all := append([]nats.Option{nats.Secure(s.AgencyTLS(t, id)), nats.NoReconnect()}, opts...)
	nc, err := nats.Connect(s.ClientURL(), all...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}
