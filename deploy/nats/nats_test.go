package natsdeploy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

func registry(t *testing.T) *policy.Registry {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestAuthMatchesRegistry: auth.conf has the broker's nkey and exactly one user per registry agency,
// with the permissions the embedded server gives it.
func TestAuthMatchesRegistry(t *testing.T) {
	key, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	t.Setenv("APERTURE_BROKER_NKEY", pub)
	opts, err := server.ProcessConfigFile("auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Nkeys) != 1 || opts.Nkeys[0].Nkey != pub || opts.Nkeys[0].Permissions != nil {
		t.Fatalf("nkey users %+v, want only the broker's, with full access", opts.Nkeys)
	}
	if opts.NoAuthUser != "" || opts.Username != "" || opts.Authorization != "" {
		t.Fatal("auth.conf lets someone in without a key or certificate")
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		if u.Password != "" {
			t.Errorf("user %s has a password: agencies authenticate with their certificate only", u.Username)
		}
		users[u.Username] = u
	}
	standard := map[string]struct{}{"STANDARD": {}}
	for _, a := range registry(t).Agencies {
		u, ok := users[a.Identity]
		if !ok {
			t.Errorf("auth.conf has no user %s for agency %s", a.Identity, a.ID)
			continue
		}
		delete(users, a.Identity)
		if want := natsembed.AgencyPermissions(a.ID); !reflect.DeepEqual(u.Permissions.Publish, want.Publish) ||
			!reflect.DeepEqual(u.Permissions.Subscribe, want.Subscribe) || u.Permissions.Response != nil {
			t.Errorf("agency %s: permissions %+v %+v, want %+v %+v", a.ID, u.Permissions.Publish, u.Permissions.Subscribe, want.Publish, want.Subscribe)
		}
		if !reflect.DeepEqual(u.AllowedConnectionTypes, standard) {
			t.Errorf("agency %s: connection types %v, want STANDARD only", a.ID, u.AllowedConnectionTypes)
		}
	}
	for name := range users {
		t.Errorf("auth.conf admits %s, which is not an agency of the registry", name)
	}
}

// TestClusterFromConfigs starts the three nodes from cluster-*.conf (ports moved to free ones,
// certificates generated), then: the broker connects as a deployment does (probe, nkey, TLS) and
// writes to a replicated bucket; an agency connects with its certificate, receives its events and
// may publish nothing; a client without credentials is refused.
func TestClusterFromConfigs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	reg := registry(t)
	dir := t.TempDir()
	ports := freePorts(t, 6)
	rewrite := strings.NewReplacer(
		"127.0.0.1:4222", ports[0], "127.0.0.1:4223", ports[1], "127.0.0.1:4224", ports[2],
		"127.0.0.1:6222", ports[3], "127.0.0.1:6223", ports[4], "127.0.0.1:6224", ports[5],
		"./tls/", filepath.Join(dir, "tls")+"/", "./nats-data/", filepath.Join(dir, "nats-data")+"/",
	)
	for _, f := range []string{"auth.conf", "cluster-1.conf", "cluster-2.conf", "cluster-3.conf"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(rewrite.Replace(string(b))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The Aperture CA (broker and agencies) and the NATS CA (servers and routes).
	ca, err := mtls.OpenDevCA(filepath.Join(dir, "pki"), strings.Split(strings.TrimPrefix(reg.Agencies[0].Identity, "spiffe://"), "/")[0])
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(ca.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tlsDir, "ca.crt"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	writeNATSCerts(t, tlsDir, 3)

	seed := filepath.Join(dir, "broker.nk")
	key, err := natsembed.LoadOrCreateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	t.Setenv("APERTURE_BROKER_NKEY", pub)
	var urls []string
	for n := 1; n <= 3; n++ {
		opts, err := server.ProcessConfigFile(filepath.Join(dir, fmt.Sprintf("cluster-%d.conf", n)))
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs, opts.NoLog = true, true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(srv.Shutdown)
		if !srv.ReadyForConnections(20 * time.Second) {
			t.Fatalf("node %d not ready", n)
		}
		urls = append(urls, "tls://"+ports[n-1])
	}
	url := strings.Join(urls, ",")

	brokerCert, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	natsCA := filepath.Join(tlsDir, "nats-ca.crt")
	nc, err := broker.ConnectExternalNATS(broker.Config{NATSURL: url, NATSNKeyFile: seed, NATSCA: natsCA}, brokerCert, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("the broker cannot connect to the cluster: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The cluster elects its meta leader over the TLS routes; until then stream creation fails.
	for {
		// A request sent before the leader exists gets no answer: each attempt has its own deadline.
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.CreateKeyValue(actx, jetstream.KeyValueConfig{Bucket: "consents", Replicas: 3})
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no replicated bucket on the cluster (routes over TLS?): %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"aperture.events.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}

	// Without credentials: refused (the probe presents the broker's certificate, but no key).
	tc, err := broker.ExternalNATSTLS(natsCA, brokerCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsembed.ProbeAnonymous(url, tc, 10*time.Second); err != nil {
		t.Fatalf("the cluster lets a client in without credentials: %v", err)
	}

	agency := reg.Agencies[0].ID
	src, err := ca.Source(mtls.KindAgency, agency)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	anc, err := nats.Connect(url, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: tc.RootCAs, GetClientCertificate: src.GetClientCertificate}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("agency %s cannot connect with its certificate: %v", agency, err)
	}
	defer anc.Close()
	sub, err := anc.SubscribeSync(natsembed.EventSubject(agency))
	if err != nil {
		t.Fatal(err)
	}
	if err := anc.Flush(); err != nil {
		t.Fatal(err)
	}
	subject := natsembed.EventSubjectPrefix + agency + ".step_started"
	// Flush only proves the agency's own node has the subscription; the node the broker
	// publishes to learns of it over the route a moment later, and core delivery drops what
	// arrives before that. So publish until one arrives, as a live event stream would.
	received := false
	for deadline := time.Now().Add(30 * time.Second); !received && time.Now().Before(deadline); {
		if _, err := js.Publish(ctx, subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(time.Second); err == nil {
			received = true
		} else if !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("agency subscription: %v", err)
		}
	}
	if !received {
		t.Fatal("agency did not receive its event within 30 s")
	}
	if err := anc.Publish("$KV.consents.forged", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	_ = anc.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "$KV.consents.forged") {
			t.Fatalf("agency publish: %v, want a permission violation", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agency publish to KV consents was not refused")
	}
	kv, err := js.KeyValue(ctx, "consents")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			t.Fatalf("KV consents holds %q after the agency's attempt", k)
		}
	}
}

// freePorts returns n loopback addresses for the nodes' fixed ports (natstest.FreePort says why not
// port 0).
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(natstest.FreePort(t)))
	}
	return out
}

// writeNATSCerts writes the NATS CA (nats-ca.crt) and one certificate per node (nats-N.crt/.key)
// for server and route use, valid for 127.0.0.1 and localhost, as an operator would issue them
// from a dedicated Vault PKI mount.
func writeNATSCerts(t *testing.T, dir string, nodes int) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Aperture NATS CA (test)"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, "nats-ca.crt"), "CERTIFICATE", caDER)
	for n := 1; n <= nodes; n++ {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(n + 1)), Subject: pkix.Name{CommonName: fmt.Sprintf("aperture-n%d", n)},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, fmt.Sprintf("nats-%d.crt", n)), "CERTIFICATE", der)
		writePEM(t, filepath.Join(dir, fmt.Sprintf("nats-%d.key", n)), "PRIVATE KEY", kb)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
