package natsembed_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/policies"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// registryAgencies are the agencies of the policy registry, as the broker admits them.
func registryAgencies(t *testing.T) []natsembed.Agency {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []natsembed.Agency
	for _, a := range reg.Agencies {
		out = append(out, natsembed.Agency{ID: a.ID, Identity: a.Identity})
	}
	if len(out) < 2 {
		t.Fatalf("the registry lists %d agencies; these tests need two", len(out))
	}
	return out
}

// TestUnauthenticatedRefused: nobody gets in without the broker's key or an agency certificate.
func TestUnauthenticatedRefused(t *testing.T) {
	agencies := registryAgencies(t)
	plain, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Shutdown)
	srv := natstest.StartTLS(t, agencies...)
	brokerID := mtls.ID(srv.CA.TrustDomain(), mtls.KindBroker, "")
	otherKey, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	// A certificate from the same CA that is not an agency's: an authority's, and an agency the
	// registry does not list.
	authority, err := srv.CA.Source(mtls.KindAuthority, "some-authority")
	if err != nil {
		t.Fatal(err)
	}
	unlisted, err := srv.CA.Source(mtls.KindAgency, "not-in-the-registry")
	if err != nil {
		t.Fatal(err)
	}
	// A certificate for the right identity from another CA.
	otherCA, err := mtls.OpenDevCA(t.TempDir(), srv.CA.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	_, _, name, _ := mtls.ParseID(agencies[0].Identity)
	forged, err := otherCA.Source(mtls.KindAgency, name)
	if err != nil {
		t.Fatal(err)
	}
	trustingServer := func(client mtls.Source) *tls.Config {
		cfg := mtls.ClientConfig(client, brokerID)
		// Trust the real server; only the client certificate is wrong.
		verify := mtls.ClientConfig(mustSource(t, srv.CA), brokerID).VerifyConnection
		cfg.VerifyConnection = verify
		return cfg
	}

	tests := []struct {
		name string
		url  string
		opts []nats.Option
		// authErr: refused by authentication (nats.ErrAuthorization); otherwise the TLS handshake
		// refuses the client (no or untrusted certificate).
		authErr bool
	}{
		{"anonymous, plain server", plain.ClientURL(), nil, true},
		{"unknown nkey, plain server", plain.ClientURL(), []nats.Option{natsembed.BrokerAuth(otherKey)}, true},
		{"user and password, plain server", plain.ClientURL(), []nats.Option{nats.UserInfo("broker", "broker")}, true},
		{"token, plain server", plain.ClientURL(), []nats.Option{nats.Token("broker")}, true},
		{"TLS without client certificate", srv.ClientURL(), []nats.Option{nats.Secure(&tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, //nolint:gosec // the server is not what is tested
		})}, false},
		{"certificate of an authority", srv.ClientURL(), []nats.Option{nats.Secure(mtls.ClientConfig(authority, brokerID))}, true},
		{"agency the registry does not list", srv.ClientURL(), []nats.Option{nats.Secure(mtls.ClientConfig(unlisted, brokerID))}, true},
		{"agency certificate from another CA", srv.ClientURL(), []nats.Option{nats.Secure(trustingServer(forged))}, false},
		{"unknown nkey over TLS", srv.ClientURL(), []nats.Option{nats.Secure(mtls.ClientConfig(authority, brokerID)), natsembed.BrokerAuth(otherKey)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(tt.url, append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second)}, tt.opts...)...)
			if err == nil {
				nc.Close()
				t.Fatal("connection accepted")
			}
			if tt.authErr && !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("err = %v, want %v", err, nats.ErrAuthorization)
			}
			if !tt.authErr && !isTLSRefusal(err) {
				t.Fatalf("err = %v, want the TLS handshake to refuse the certificate", err)
			}
		})
	}
}

// TestInProcessAnonymousRefused: a connection inside the process authenticates like any other.
// The server refuses it at once (and logs so); the client only notices when the server gives up
// writing the refusal to the synchronous in-process pipe, so the subtests run in parallel.
func TestInProcessAnonymousRefused(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "TLS"}[withTLS], func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			opts := natsembed.Options{Dir: t.TempDir(), Port: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			if withTLS {
				ca, err := mtls.OpenDevCA(t.TempDir(), "aperture.test")
				if err != nil {
					t.Fatal(err)
				}
				opts.TLS = mustSource(t, ca)
			}
			s, err := natsembed.Start(opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Shutdown)
			// nats:// so that the client does not start TLS on the pipe.
			url := "nats://" + strings.SplitN(s.ClientURL(), "://", 2)[1]
			nc, err := nats.Connect(url, nats.InProcessServer(s.NATS()), nats.NoReconnect())
			if err == nil {
				nc.Close()
				t.Fatal("anonymous in-process connection accepted")
			}
			if !strings.Contains(logs.String(), "pipe - cid") || !strings.Contains(logs.String(), "authentication error") {
				t.Fatalf("the server did not refuse the in-process connection for authentication (client: %v):\n%s", err, logs.String())
			}
		})
	}
}

func mustSource(t *testing.T, ca *mtls.DevCA) mtls.Source {
	t.Helper()
	s, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// isTLSRefusal reports whether err is the server refusing the client's certificate. In TLS 1.3 the
// client finishes its handshake before the server checks the certificate, so the refusal arrives as
// the server's alert or, depending on timing, as the connection closing right after the handshake.
func isTLSRefusal(err error) bool {
	s := err.Error()
	return strings.Contains(s, "tls: certificate required") || strings.Contains(s, "tls: bad certificate") ||
		strings.Contains(s, "tls: unknown certificate authority") ||
		(errors.Is(err, nats.ErrTLS) && strings.Contains(s, "connection closed by remote after TLS handshake"))
}

// TestAgencyPermissions: an agency's certificate lets it subscribe to its own events and nothing
// else; every other subscription and every publish is a permission violation reported by the server.
func TestAgencyPermissions(t *testing.T) {
	agencies := registryAgencies(t)
	me, other := agencies[0].ID, agencies[1].ID
	srv := natstest.StartTLS(t, agencies...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := srv.JetStream

	// The broker's streams and buckets, under the names the broker uses.
	mustStream(ctx, t, js, jetstream.StreamConfig{Name: cases.EventStream, Subjects: []string{"aperture.events.>"}})
	mustStream(ctx, t, js, jetstream.StreamConfig{Name: accesslog.AccessStream, Subjects: []string{accesslog.LogSubject}})
	mustStream(ctx, t, js, jetstream.StreamConfig{Name: accesslog.IndexStream, Subjects: []string{accesslog.IndexSubjectPrefix + ">"}})
	mustStream(ctx, t, js, jetstream.StreamConfig{Name: tlog.CheckpointStream, Subjects: []string{tlog.CheckpointSubject}})
	for _, b := range []string{cases.Bucket, consent.Bucket} {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("own events", func(t *testing.T) {
		nc, errs := agencyConn(t, srv, me)
		sub, err := nc.SubscribeSync(natsembed.EventSubject(me))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		subject := natsembed.EventSubjectPrefix + me + "." + cases.EventStepStarted
		if _, err := js.Publish(ctx, subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("own event not received: %v", err)
		}
		if m.Subject != subject {
			t.Fatalf("received %s, want %s", m.Subject, subject)
		}
		select {
		case err := <-errs:
			t.Fatalf("subscribing to its own events raised %v", err)
		default:
		}
	})

	subscribe := func(subject string) func(*nats.Conn) (string, error) {
		return func(nc *nats.Conn) (string, error) {
			_, err := nc.SubscribeSync(subject)
			return subject, err
		}
	}
	publish := func(subject string) func(*nats.Conn) (string, error) {
		return func(nc *nats.Conn) (string, error) {
			return subject, nc.Publish(subject, []byte(`{"duration_days":365}`))
		}
	}
	// jsAPI goes through the JetStream client, which publishes a request to $JS.API.
	jsAPI := func(call func(context.Context, jetstream.JetStream) error, subject string) func(*nats.Conn) (string, error) {
		return func(nc *nats.Conn) (string, error) {
			ajs, err := jetstream.New(nc)
			if err != nil {
				return subject, err
			}
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := call(c, ajs); err == nil {
				t.Errorf("JetStream call on %s succeeded", subject)
			}
			return subject, nil
		}
	}
	tests := []struct {
		name string
		do   func(*nats.Conn) (subject string, err error)
	}{
		{"another agency's events", subscribe(natsembed.EventSubject(other))},
		{"every agency's events", subscribe("aperture.events.>")},
		{"events by wildcard agency", subscribe(natsembed.EventSubjectPrefix + "*.>")},
		{"everything", subscribe(">")},
		{"JetStream API", subscribe("$JS.API.>")},
		{"KV cases", subscribe("$KV." + cases.Bucket + ".>")},
		{"KV consents", subscribe("$KV." + consent.Bucket + ".>")},
		{"ACCESS log", subscribe(accesslog.LogSubject)},
		{"ACCESS and index", subscribe("aperture.access.>")},
		{"citizen index", subscribe(accesslog.IndexSubjectPrefix + ">")},
		{"checkpoints", subscribe(tlog.CheckpointSubject)},
		{"system account", subscribe("$SYS.>")},
		{"stream info request", jsAPI(func(c context.Context, ajs jetstream.JetStream) error {
			_, err := ajs.Stream(c, accesslog.AccessStream)
			return err
		}, "$JS.API.STREAM.INFO."+accesslog.AccessStream)},
		{"KV cases through JetStream", jsAPI(func(c context.Context, ajs jetstream.JetStream) error {
			_, err := ajs.KeyValue(c, cases.Bucket)
			return err
		}, "$JS.API.STREAM.INFO.KV_"+cases.Bucket)},
		{"publish own event", publish(natsembed.EventSubjectPrefix + me + "." + cases.EventStepStarted)},
		{"publish consent", publish("$KV." + consent.Bucket + ".forged")},
		{"publish case", publish("$KV." + cases.Bucket + ".forged")},
		{"publish access batch", publish(accesslog.LogSubject)},
		{"publish index entry", publish(accesslog.IndexSubjectPrefix + "00.forged")},
		{"publish checkpoint", publish(tlog.CheckpointSubject)},
		{"publish stream delete", publish("$JS.API.STREAM.DELETE." + accesslog.AccessStream)},
		{"publish inbox", publish("_INBOX.forged")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, errs := agencyConn(t, srv, me)
			subject, err := tt.do(nc)
			if err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v", subject, err)
			}
			if err == nil {
				_ = nc.Flush()
				err = awaitViolation(t, errs, subject)
			}
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(subject)) {
				t.Fatalf("%s: %v, want a permission violation naming the subject", subject, err)
			}
		})
	}

	// Nothing an agency published reached a stream or bucket.
	for _, name := range []string{"KV_" + consent.Bucket, "KV_" + cases.Bucket, accesslog.AccessStream, accesslog.IndexStream, tlog.CheckpointStream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.CachedInfo().State.Msgs; n != 0 {
			t.Errorf("stream %s holds %d messages after the agency's attempts", name, n)
		}
	}
}

func mustStream(ctx context.Context, t *testing.T, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("create stream %s: %v", cfg.Name, err)
	}
}

// agencyConn connects as agency id and returns the asynchronous errors the server sends it.
func agencyConn(t *testing.T, srv *natstest.Server, id string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := srv.ConnectAgency(t, id, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("agency %s cannot connect: %v", id, err)
	}
	return nc, errs
}

// awaitViolation waits (generously: the server answers at once, but the machine may be loaded) for
// the permission error about subject.
func awaitViolation(t *testing.T, errs <-chan error, subject string) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(subject)) {
				return err
			}
			t.Logf("other asynchronous error: %v", err)
		case <-deadline:
			return errors.New("no permission violation reported within 10s")
		}
	}
}

// TestKeyFile: the broker's seed is created once, private, and reused; a seed others can read is
// refused.
func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nats", "broker.nk")
	k1, err := natsembed.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, err := natsembed.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := k1.PublicKey()
	p2, _ := k2.PublicKey()
	if p1 != p2 || !strings.HasPrefix(p1, "U") {
		t.Fatalf("second load gave %s, first %s", p2, p1)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := natsembed.ReadKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable seed: err = %v", err)
	}
	bad := filepath.Join(t.TempDir(), "account.nk")
	acc, _ := nkeys.CreateAccount()
	seed, _ := acc.Seed()
	if err := os.WriteFile(bad, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsembed.ReadKey(bad); err == nil || !strings.Contains(err.Error(), "not a user seed") {
		t.Fatalf("account seed: err = %v", err)
	}
}

// TestProbeAnonymous: the check the broker runs before it trusts an external server.
func TestProbeAnonymous(t *testing.T) {
	anon, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	anon.Start()
	t.Cleanup(anon.Shutdown)
	if !anon.ReadyForConnections(10 * time.Second) {
		t.Fatal("anonymous server not ready")
	}
	plain, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Shutdown)
	withTLS := natstest.StartTLS(t, registryAgencies(t)...)
	brokerCert := mustSource(t, withTLS.CA)
	roots := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: withTLS.CA.Roots(), GetClientCertificate: brokerCert.GetClientCertificate}
	closed := "nats://127.0.0.1:1"
	// TLS with client verification and no users: the certificate alone lets anyone in whom the CA
	// vouches for, an agency as well as the broker.
	verifyOnly, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TLSConfig: mtls.ServerConfig(brokerCert), TLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	verifyOnly.Start()
	t.Cleanup(verifyOnly.Shutdown)
	if !verifyOnly.ReadyForConnections(10 * time.Second) {
		t.Fatal("TLS server not ready")
	}
	// A certificate mapped to a user: authenticated, so it passes.
	mapped := natstest.StartTLS(t, natsembed.Agency{ID: "probe", Identity: mtls.ID(withTLS.CA.TrustDomain(), mtls.KindAgency, "probe")})
	agencyCert, err := mapped.CA.Source(mtls.KindAgency, "probe")
	if err != nil {
		t.Fatal(err)
	}
	agencyTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: mapped.CA.Roots(), GetClientCertificate: agencyCert.GetClientCertificate}

	tests := []struct {
		name    string
		url     string
		tls     *tls.Config
		wantErr error // nil: the server counts as closed; ErrAnonymousAccepted; errCannotTell
	}{
		{"server without auth", anon.ClientURL(), roots, natsembed.ErrAnonymousAccepted},
		{"embedded, nkey only", plain.ClientURL(), roots, nil},
		{"embedded with TLS and agencies", withTLS.ClientURL(), roots, nil},
		{"TLS verification without users", verifyOnly.ClientURL(), roots, natsembed.ErrAnonymousAccepted},
		{"certificate mapped to a user", mapped.ClientURL(), agencyTLS, nil},
		{"cluster list with one open server", plain.ClientURL() + "," + anon.ClientURL(), roots, natsembed.ErrAnonymousAccepted},
		{"nothing listening", closed, roots, errCannotTell},
		{"cluster list with one node down", closed + "," + plain.ClientURL(), roots, nil},
		{"open server behind a node that is down", closed + "," + anon.ClientURL(), roots, natsembed.ErrAnonymousAccepted},
		{"no URL", " , ", roots, errCannotTell},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := natsembed.ProbeAnonymous(tt.url, tt.tls, 5*time.Second)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("probe: %v, want the server to count as closed", err)
			case tt.wantErr == errCannotTell && (err == nil || errors.Is(err, natsembed.ErrAnonymousAccepted)):
				t.Fatalf("probe: %v, want an error saying it cannot tell", err)
			case tt.wantErr == natsembed.ErrAnonymousAccepted && !errors.Is(err, tt.wantErr):
				t.Fatalf("probe: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errCannotTell = errors.New("cannot tell")

// TestConnectTLSIfOffered: the broker's TLS configuration is used with servers that offer TLS, a
// plain server is spoken to in the clear unless the URL or the caller demands TLS.
func TestConnectTLSIfOffered(t *testing.T) {
	anon, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	anon.Start()
	t.Cleanup(anon.Shutdown)
	if !anon.ReadyForConnections(10 * time.Second) {
		t.Fatal("plain server not ready")
	}
	ca, err := mtls.OpenDevCA(t.TempDir(), "aperture.test")
	if err != nil {
		t.Fatal(err)
	}
	brokerCert := mustSource(t, ca)
	roots := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Roots(), GetClientCertificate: brokerCert.GetClientCertificate}
	withTLS, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TLSConfig: mtls.ServerConfig(brokerCert), TLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	withTLS.Start()
	t.Cleanup(withTLS.Shutdown)
	if !withTLS.ReadyForConnections(10 * time.Second) {
		t.Fatal("TLS server not ready")
	}
	plainURL := anon.ClientURL()
	tlsURL := "tls://" + strings.TrimPrefix(plainURL, "nats://")

	tests := []struct {
		name    string
		url     string
		tls     *tls.Config
		strict  bool
		wantTLS bool
		wantErr error
	}{
		{"plain server, no TLS configuration", plainURL, nil, false, false, nil},
		{"plain server, TLS configuration", plainURL, roots, false, false, nil},
		{"plain server, TLS demanded", plainURL, roots, true, false, nats.ErrSecureConnWanted},
		{"plain server, tls:// URL", tlsURL, roots, false, false, nats.ErrSecureConnWanted},
		{"TLS server, nats:// URL", "nats://" + strings.TrimPrefix(withTLS.ClientURL(), "tls://"), roots, false, true, nil},
		{"TLS server, TLS demanded", withTLS.ClientURL(), roots, true, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := natsembed.ConnectTLSIfOffered(tt.url, tt.tls, tt.strict, nats.NoReconnect(), nats.Timeout(5*time.Second))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					if nc != nil {
						nc.Close()
					}
					t.Fatalf("connect: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer nc.Close()
			if _, err := nc.TLSConnectionState(); (err == nil) != tt.wantTLS {
				t.Fatalf("TLS in use = %v, want %v", err == nil, tt.wantTLS)
			}
		})
	}
}
