package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/aperture-gov/aperture/services/kit/mtls"
)

const td = "aperture.test"

func TestParseID(t *testing.T) {
	tests := []struct {
		id                string
		wantTD, wantKind  string
		wantName, errLike string
	}{
		{id: "spiffe://aperture.test/broker", wantTD: td, wantKind: "broker"},
		{id: "spiffe://aperture.test/authority/population", wantTD: td, wantKind: "authority", wantName: "population"},
		{id: "spiffe://aperture.test/agency/jobcentre_cph", wantTD: td, wantKind: "agency", wantName: "jobcentre_cph"},
		{id: "spiffe://aperture.test/auditor/dpo", wantTD: td, wantKind: "auditor", wantName: "dpo"},
		{id: "https://aperture.test/broker", errLike: "scheme"},
		{id: "spiffe://aperture.test/broker/x", errLike: "path"},
		{id: "spiffe://aperture.test/authority", errLike: "path"},
		{id: "spiffe://aperture.test/citizen/x", errLike: "path"},
		{id: "spiffe://aperture.test/authority/Tax", errLike: "name"},
		{id: "spiffe://Aperture.test/broker", errLike: "trust domain"},
		{id: "spiffe://aperture.test:8443/broker", errLike: "port"},
		{id: "spiffe://aperture.test/broker?x=1", errLike: "query"},
		{id: "spiffe:///broker", errLike: "trust domain"},
		{id: "spiffe://aperture.test/broker/", errLike: "path"},
		{id: "spiffe://aperture.test/agency/", errLike: "name"},
		{id: "spiffe://aperture.test/agency/a/b", errLike: "path"},
		{id: "spiffe://aperture.test/agency/-a", errLike: "name"},
		{id: "spiffe://aperture.test/agency/" + strings.Repeat("a", 64), errLike: "name"},
		{id: "spiffe://aperture.test/agency/" + strings.Repeat("a", 63), wantTD: td, wantKind: "agency", wantName: strings.Repeat("a", 63)},
		{id: "spiffe://a_b-c.0/broker", wantTD: "a_b-c.0", wantKind: "broker"},
		{id: "spiffe://aperture.test", errLike: "path"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			gotTD, kind, name, err := mtls.ParseID(tt.id)
			if tt.errLike != "" {
				if err == nil {
					t.Fatalf("ParseID(%q) = nil error, want error about %s", tt.id, tt.errLike)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseID(%q): %v", tt.id, err)
			}
			if gotTD != tt.wantTD || kind != tt.wantKind || name != tt.wantName {
				t.Fatalf("ParseID(%q) = %q %q %q", tt.id, gotTD, kind, name)
			}
			if back := mtls.ID(gotTD, kind, name); back != tt.id {
				t.Fatalf("ID round trip = %q, want %q", back, tt.id)
			}
		})
	}
	if got := mtls.ID(td, mtls.KindBroker, "ignored"); got != "spiffe://aperture.test/broker" {
		t.Fatalf("broker ID = %q", got)
	}
}

func TestIDFromCert(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name    string
		uris    []*url.URL
		want    string
		wantErr bool
	}{
		{"one", []*url.URL{u("spiffe://aperture.test/broker")}, "spiffe://aperture.test/broker", false},
		{"one plus https", []*url.URL{u("https://example.org"), u("spiffe://aperture.test/agency/a")}, "spiffe://aperture.test/agency/a", false},
		{"none", nil, "", true},
		{"two", []*url.URL{u("spiffe://aperture.test/broker"), u("spiffe://aperture.test/agency/a")}, "", true},
		{"malformed", []*url.URL{u("spiffe://aperture.test/nobody")}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mtls.IDFromCert(&x509.Certificate{URIs: tt.uris})
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("IDFromCert = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// peerRecorder is a gRPC interceptor that remembers the caller identity the server saw.
type peerRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (p *peerRecorder) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, err := mtls.PeerID(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.ids = append(p.ids, id)
	p.mu.Unlock()
	return h(ctx, req)
}

// serve runs a gRPC health server over mTLS with src on 127.0.0.1:0 and returns its address.
func serve(t *testing.T, src mtls.Source) (string, *peerRecorder) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &peerRecorder{}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtls.ServerConfig(src))), grpc.UnaryInterceptor(rec.intercept))
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String(), rec
}

func check(t *testing.T, addr string, conf *tls.Config) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func mustSource(t *testing.T, ca *mtls.DevCA, kind, name string) mtls.Source {
	t.Helper()
	src, err := ca.Source(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestHandshake(t *testing.T) {
	ca, err := mtls.OpenDevCA(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	other, err := mtls.OpenDevCA(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	serverID := mtls.ID(td, mtls.KindAuthority, "population")
	addr, rec := serve(t, mustSource(t, ca, mtls.KindAuthority, "population"))
	broker := mustSource(t, ca, mtls.KindBroker, "")

	// A client whose certificate comes from the other CA but which trusts ours, so that only the
	// server's verification can fail.
	foreign := mustSource(t, other, mtls.KindBroker, "")
	foreignCert, err := foreign.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	foreignClient := mtls.NewMemorySource(foreignCert, ca.Roots())
	noCert := mtls.NewMemorySource(&tls.Certificate{}, ca.Roots())
	// A server with a certificate from the other CA, claiming the right identity.
	impostorAddr, _ := serve(t, mtls.NewMemorySource(mustCert(t, other, mtls.KindAuthority, "population"), other.Roots()))

	tests := []struct {
		name   string
		addr   string
		client mtls.Source
		server string
		ok     bool
	}{
		{"right identity", addr, broker, serverID, true},
		{"wrong server id", addr, broker, mtls.ID(td, mtls.KindAuthority, "tax"), false},
		{"client cert from other CA", addr, foreignClient, serverID, false},
		{"no client cert", addr, noCert, serverID, false},
		{"server cert from other CA", impostorAddr, broker, serverID, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(t, tt.addr, mtls.ClientConfig(tt.client, tt.server))
			if tt.ok && err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("Check succeeded, want handshake refused")
			}
		})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ids) != 1 || rec.ids[0] != mtls.ID(td, mtls.KindBroker, "") {
		t.Fatalf("server saw callers %v, want exactly the broker once", rec.ids)
	}
}

func mustCert(t *testing.T, ca *mtls.DevCA, kind, name string) *tls.Certificate {
	t.Helper()
	c, err := mustSource(t, ca, kind, name).GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDevCAReopenReusesFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := mtls.OpenDevCA(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	first := mustCert(t, ca, mtls.KindAgency, "jobcentre")
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.key", "agency-jobcentre.key"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}

	again, err := mtls.OpenDevCA(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if caPEM2, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(caPEM2) != string(caPEM) {
		t.Fatal("reopening rewrote ca.crt")
	}
	second := mustCert(t, again, mtls.KindAgency, "jobcentre")
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Fatal("reopened CA issued a new leaf instead of reusing the saved one")
	}
	if _, err := mtls.OpenDevCA(dir, "elsewhere.test"); err == nil {
		t.Fatal("OpenDevCA with another trust domain succeeded")
	}
	if _, err := again.Source("citizen", "x"); err == nil {
		t.Fatal("Source with an unknown kind succeeded")
	}
}

func TestLoadSource(t *testing.T) {
	dir := t.TempDir()
	ca, err := mtls.OpenDevCA(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serve(t, mustSource(t, ca, mtls.KindBroker, ""))
	mustSource(t, ca, mtls.KindAgency, "municipality") // writes the files an agency would be given
	src, err := mtls.LoadSource(filepath.Join(dir, "agency-municipality.crt"), filepath.Join(dir, "agency-municipality.key"), ca.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := check(t, addr, mtls.ClientConfig(src, mtls.ID(td, mtls.KindBroker, ""))); err != nil {
		t.Fatalf("Check with file source: %v", err)
	}
	if err := src.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, err := mtls.LoadSource(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key"), ca.CertFile()); err == nil {
		t.Fatal("LoadSource of missing files succeeded")
	}
}
