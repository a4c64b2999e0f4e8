package vault_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/services/kit/mtls"
	"github.com/aperture-gov/aperture/services/kit/vault"
	"github.com/aperture-gov/aperture/services/kit/vault/vaulttest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func open(t *testing.T, cfg vault.Config) *vault.Client {
	t.Helper()
	c, err := vault.Open(ctx(t), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := vault.Config{Address: "https://vault:8200", AppRole: vault.AppRoleConfig{RoleIDFile: "/r", SecretIDFile: "/s"}}
	tests := []struct {
		name    string
		mut     func(*vault.Config)
		wantErr string
	}{
		{"ok", func(*vault.Config) {}, ""},
		{"no address", func(c *vault.Config) { c.Address = "" }, "address is required"},
		{"bad scheme", func(c *vault.Config) { c.Address = "vault:8200" }, "want http(s)"},
		{"no role id", func(c *vault.Config) { c.AppRole.RoleIDFile = "" }, "role_id"},
		{"two secret ids", func(c *vault.Config) { c.AppRole.SecretID = "x" }, "secret_id"},
		{"bad mount", func(c *vault.Config) { c.AppRole.Mount = "a b" }, "mount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mut(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if err := (vault.TransitConfig{CheckpointKey: "k", DataKey: "k"}).Validate(); err == nil {
		t.Fatal("same checkpoint and data key accepted")
	}
	if err := (vault.PKIConfig{}).Validate(); err == nil {
		t.Fatal("PKI without role accepted")
	}
}

// TestOpenRefuses: Vault configured but unusable at start is an error, never a silent fallback.
func TestOpenRefuses(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + lis.Addr().String()
	lis.Close()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret-id")
	os.WriteFile(secretFile, []byte(e.Config("broker").AppRole.SecretID+"\n"), 0o600)

	tests := []struct {
		name    string
		mut     func(*vault.Config)
		wantErr string
	}{
		{"unreachable", func(c *vault.Config) { c.Address = unreachable }, "not usable at " + unreachable},
		{"wrong secret id", func(c *vault.Config) { c.AppRole.SecretID = "wrong" }, "invalid role or secret ID"},
		{"missing secret file", func(c *vault.Config) { c.AppRole.SecretID, c.AppRole.SecretIDFile = "", filepath.Join(dir, "nope") }, "read AppRole secret id file"},
		{"invalid", func(c *vault.Config) { c.Address = "" }, "address is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.Config("broker")
			tt.mut(&cfg)
			c, err := vault.Open(ctx(t), cfg, nil)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open: %v; want it to mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), e.Config("broker").AppRole.SecretID) {
				t.Fatal("error carries the secret id")
			}
		})
	}
	t.Run("secret id from file", func(t *testing.T) {
		cfg := e.Config("broker")
		cfg.AppRole.SecretID, cfg.AppRole.SecretIDFile = "", secretFile
		open(t, cfg)
	})
}

// TestTokenLifecycle: the LifetimeWatcher renews the token, and the client logs in again when the
// token reaches its max TTL or is revoked, without failing requests.
func TestTokenLifecycle(t *testing.T) {
	vaulttest.Each(t, vaulttest.Options{TokenTTL: 2 * time.Second, TokenMaxTTL: 4 * time.Second}, func(t *testing.T, e *vaulttest.Env) {
		t.Parallel()
		c := open(t, e.Config("broker"))
		tr := c.Transit("")
		eventually(t, 5*time.Second, "a token renewal", func() bool { return c.Renewals() > 0 })
		eventually(t, 8*time.Second, "a re-login at max TTL", func() bool { return c.Logins() >= 2 })
		if _, err := tr.ReadKey(ctx(t), e.Transit.CheckpointKey); err != nil {
			t.Fatalf("after re-login: %v", err)
		}
		// Revoked under our feet: the next request gets 403, logs in again and succeeds.
		before := c.Logins()
		e.RevokeAccessor(t, c.Accessor())
		if _, err := tr.ReadKey(ctx(t), e.Transit.CheckpointKey); err != nil {
			t.Fatalf("after revocation: %v", err)
		}
		if c.Logins() <= before {
			t.Fatal("no re-login after revocation")
		}
	})
}

func TestTokenExpiredWhileIdle(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{TokenTTL: time.Hour})
	c := open(t, e.Config("broker"))
	// Renewal fails (Vault answers 500), and meanwhile the token is revoked: requests recover by
	// logging in once, and a persistent 403 is reported as permission denied.
	e.Double.Fail("auth/token/renew-self", http.StatusInternalServerError)
	e.Double.RevokeTokens()
	if _, err := c.Transit("").ReadKey(ctx(t), e.Transit.CheckpointKey); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Transit("").Sign(ctx(t), e.Transit.DataKey, 0, []byte("x"))
	if !errors.Is(err, vault.ErrPermissionDenied) {
		t.Fatalf("sign with a key outside the policy: %v, want ErrPermissionDenied", err)
	}
}

// TestLeastPrivilege runs the deploy/vault policies: each component reaches only its own paths.
func TestLeastPrivilege(t *testing.T) {
	vaulttest.Each(t, vaulttest.Options{}, func(t *testing.T, e *vaulttest.Env) {
		t.Parallel()
		broker := open(t, e.Config("broker"))
		tax := open(t, e.Config("authority-tax"))
		c := ctx(t)
		if _, _, err := broker.Transit("").Sign(c, e.Transit.CheckpointKey, 0, []byte("m")); err != nil {
			t.Fatalf("broker sign: %v", err)
		}
		// issue gets a certificate and stops its renewal at once: only the outcome matters here.
		issue := func(c *vault.Client, role, id string) error {
			src, err := vault.NewCertSource(ctx(t), c, vault.PKIConfig{Mount: e.PKIMount, Role: role, TTL: time.Hour}, vaulttest.SPIFFEID(id))
			if err == nil {
				src.Close()
			}
			return err
		}
		denied := map[string]error{}
		_, _, denied["authority signs"] = tax.Transit("").Sign(c, e.Transit.CheckpointKey, 0, []byte("m"))
		_, denied["authority gets a data key"] = tax.Transit("").DataKeyWrapped(c, e.Transit.DataKey, 256)
		_, denied["broker signs with the data key"] = broker.Transit("").Decrypt(c, e.Transit.CheckpointKey, "vault:v1:AAAA")
		denied["authority issues another's certificate"] = issue(tax, "authority-population", "authority-population")
		_, denied["broker reads the data key"] = broker.Read(c, e.Transit.Mount+"/export/encryption-key/"+e.Transit.DataKey)
		for what, err := range denied {
			if !errors.Is(err, vault.ErrPermissionDenied) {
				t.Errorf("%s: err = %v, want permission denied", what, err)
			}
		}
		// And an authority cannot get a certificate with another identity from its own role.
		if err := issue(tax, "authority-tax", "authority-population"); err == nil {
			t.Error("authority-tax got a certificate for authority/population")
		}
		if err := issue(tax, "authority-tax", "authority-tax"); err != nil {
			t.Errorf("authority-tax own certificate: %v", err)
		}
	})
}

func TestTransit(t *testing.T) {
	vaulttest.Each(t, vaulttest.Options{}, func(t *testing.T, e *vaulttest.Env) {
		t.Parallel()
		c := open(t, e.Config("broker"))
		tr := c.Transit("")
		k, err := tr.ReadKey(ctx(t), e.Transit.CheckpointKey)
		if err != nil {
			t.Fatal(err)
		}
		if k.Type != "ed25519" || k.LatestVersion != 1 || len(k.PublicKeys[1]) != ed25519.PublicKeySize {
			t.Fatalf("key = %+v", k)
		}
		msg := []byte("aperture.test/log\n1\nroot\n")
		sig, v, err := tr.Sign(ctx(t), e.Transit.CheckpointKey, 1, msg)
		if err != nil || v != 1 || !ed25519.Verify(k.PublicKeys[1], msg, sig) {
			t.Fatalf("sign: v%d %v; verifies: %v", v, err, err == nil && ed25519.Verify(k.PublicKeys[1], msg, sig))
		}
		e.RotateTransitKey(t, e.Transit.CheckpointKey)
		k2, err := tr.ReadKey(ctx(t), e.Transit.CheckpointKey)
		if err != nil || k2.LatestVersion != 2 || !k2.PublicKeys[1].Equal(k.PublicKeys[1]) {
			t.Fatalf("after rotation: %+v, %v", k2, err)
		}
		if _, v, _ := tr.Sign(ctx(t), e.Transit.CheckpointKey, 0, msg); v != 2 {
			t.Fatalf("latest signs with v%d, want v2", v)
		}

		wrapped, err := tr.DataKeyWrapped(ctx(t), e.Transit.DataKey, 256)
		if err != nil {
			t.Fatal(err)
		}
		dk, err := tr.Decrypt(ctx(t), e.Transit.DataKey, wrapped)
		if err != nil || len(dk) != 32 {
			t.Fatalf("decrypt: %d bytes, %v", len(dk), err)
		}
		e.RotateTransitKey(t, e.Transit.DataKey)
		dk2, err := tr.Decrypt(ctx(t), e.Transit.DataKey, wrapped)
		if err != nil || string(dk2) != string(dk) {
			t.Fatalf("a data key wrapped before rotating the KEK no longer unwraps: %v", err)
		}
		if _, err := tr.Decrypt(ctx(t), e.Transit.DataKey, "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err == nil {
			t.Fatal("garbage decrypts")
		}
	})
}

// handshake dials srv with client certificates from cli, checking the broker identity, and returns
// the serial of the certificate the server presented.
func handshake(t *testing.T, addr string, cli mtls.Source, serverID string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, mtls.ClientConfig(cli, serverID))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	io.ReadAll(conn)
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// serveTLS accepts connections with mtls.ServerConfig(src) and closes them after the handshake; it
// records the identity of each client.
func serveTLS(t *testing.T, src mtls.Source) (addr string, peers chan string) {
	lis, err := tls.Listen("tcp", "127.0.0.1:0", mtls.ServerConfig(src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	peers = make(chan string, 100)
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err == nil {
				id, _ := mtls.IDFromCert(tc.ConnectionState().VerifiedChains[0][0])
				peers <- id
			}
			tc.Close()
		}
	}()
	return lis.Addr().String(), peers
}

// TestPKIRenewalSwapsCertificate: short-lived certificates from the PKI role are renewed in the
// background and a running TLS server presents the new one on the next handshake.
func TestPKIRenewalSwapsCertificate(t *testing.T) {
	vaulttest.Each(t, vaulttest.Options{}, func(t *testing.T, e *vaulttest.Env) {
		t.Parallel()
		bc, ac := open(t, e.Config("broker")), open(t, e.Config("authority-population"))
		brokerID := vaulttest.SPIFFEID("broker")
		short := vault.PKIConfig{Mount: e.PKIMount, Role: "broker", TTL: 3 * time.Second}
		bsrc, err := vault.NewCertSource(ctx(t), bc, short, brokerID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bsrc.Close() })
		asrc, err := vault.NewCertSource(ctx(t), ac, vault.PKIConfig{}, vaulttest.SPIFFEID("authority-population"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { asrc.Close() })

		addr, peers := serveTLS(t, bsrc)
		first := handshake(t, addr, asrc, brokerID)
		if got := <-peers; got != vaulttest.SPIFFEID("authority-population") {
			t.Fatalf("server saw client %q", got)
		}
		// A client that expects another identity refuses the broker.
		if conn, err := tls.Dial("tcp", addr, mtls.ClientConfig(asrc, vaulttest.SPIFFEID("authority-tax"))); err == nil {
			conn.Close()
			t.Fatal("client accepted the wrong server identity")
		}
		eventually(t, 6*time.Second, "certificate renewal", func() bool { return bsrc.Issued() >= 2 })
		if second := handshake(t, addr, asrc, brokerID); second == first {
			t.Fatal("server still presents the first certificate after renewal")
		}
	})
}

// TestPKIRenewalFailureKeepsCertificate: while Vault cannot issue, the source keeps serving the
// current certificate and retries; once Vault is back, it renews.
func TestPKIRenewalFailureKeepsCertificate(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	c := open(t, e.Config("broker"))
	src, err := vault.NewCertSource(ctx(t), c, vault.PKIConfig{Mount: e.PKIMount, Role: "broker", TTL: 3 * time.Second}, vaulttest.SPIFFEID("broker"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first := src.Certificate()
	e.Double.Fail(e.PKIMount+"/issue/", http.StatusServiceUnavailable)
	time.Sleep(2500 * time.Millisecond) // past the renewal point (2s)
	if src.Certificate() != first || src.Issued() != 1 {
		t.Fatal("certificate changed although Vault could not issue")
	}
	if _, err := src.GetCertificate(nil); err != nil {
		t.Fatalf("no certificate served during the outage: %v", err)
	}
	e.Double.Fail(e.PKIMount+"/issue/", 0)
	eventually(t, 3*time.Second, "renewal after the outage", func() bool { return src.Issued() >= 2 })
}

func TestRequestFailsWhenVaultDown(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	c := open(t, e.Config("broker"))
	e.Double.SetDown(true)
	if _, _, err := c.Transit("").Sign(ctx(t), e.Transit.CheckpointKey, 0, []byte("m")); err == nil {
		t.Fatal("sign succeeded with Vault down")
	}
	e.Double.SetDown(false)
	if _, _, err := c.Transit("").Sign(ctx(t), e.Transit.CheckpointKey, 0, []byte("m")); err != nil {
		t.Fatalf("sign after Vault came back: %v", err)
	}
}

// TestInstrument: the token's TTL, logins and renewals are metrics an operator can alert on, and a
// failed request counts.
func TestInstrument(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{TokenTTL: time.Hour})
	c := open(t, e.Config("broker"))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	reg, err := c.Instrument(mp.Meter("test"), "keys")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Unregister() }()
	if _, err := c.Read(ctx(t), "no-such-mount/thing"); err == nil {
		t.Fatal("reading an unmounted path succeeded")
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[float64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Sum[int64]:
				got[m.Name] = float64(d.DataPoints[0].Value)
			}
		}
	}
	if ttl := got["aperture_vault_token_ttl_seconds"]; ttl < 3500 || ttl > 3600 {
		t.Errorf("token TTL %v s, want about an hour", ttl)
	}
	if got["aperture_vault_logins_total"] < 1 || got["aperture_vault_failures_total"] < 1 {
		t.Errorf("metrics %v: want the login and the failed read counted", got)
	}
}
