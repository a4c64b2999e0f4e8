package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/natsembed"
)

// TestBrokerCommandRefusals: the production broker command refuses to start, with a clear message,
// when Vault is configured but unreachable (no fallback to local keys), and it has no development
// login to switch on.
func TestBrokerCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "nats", "broker.nk")
	key, err := natsembed.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Options{Dir: filepath.Join(dir, "nats"), Port: -1, BrokerKey: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	anon := anonymousNATS(t)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vault := []string{"--keys", "vault", "--log-origin", "test.example/log", "--vault-addr", "http://127.0.0.1:1",
		"--vault-role-id-file", secret, "--vault-secret-id-file", secret}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"vault unreachable", append([]string{"--nats-url", srv.ClientURL(), "--nats-nkey", keyFile}, vault...), "refusing to start without them"},
		{"NATS without credentials", append([]string{"--nats-url", srv.ClientURL()}, vault...), "Authorization Violation"},
		{"NATS that accepts anonymous clients", []string{"--data", filepath.Join(dir, "data-anon"), "--nats-url", anon}, "refusing to use NATS at " + anon + ": " + anon + ": NATS server accepts anonymous connections"},
		{"NATS that accepts anonymous clients, vault keys", append([]string{"--nats-url", anon}, vault...), "NATS server accepts anonymous connections"},
		{"creds and nkey", []string{"--data", filepath.Join(dir, "data-creds"), "--nats-url", srv.ClientURL(), "--nats-nkey", keyFile, "--nats-creds", keyFile}, "not both"},
		{"vault needs the NATS cluster", vault, "--keys vault needs --nats-url"},
		{"portal without OpenID Connect", []string{"--portal-listen", "127.0.0.1:0"}, "--portal-listen needs --oidc-issuer"},
		{"no development login", []string{"--dev-login"}, "flag provided but not defined: -dev-login"},
		{"index shards out of range", []string{"--data", filepath.Join(dir, "data-shards"), "--index-shards", "300"}, "index_shards must be 0 (keep the index's count) or 1 to 256, not 300"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			// --certs dev: these refusals are about what comes after the certificate (see
			// TestServingCommandsNeedTLSMaterial for a broker without one).
			args := append([]string{"broker", "--certs", "dev", "--data", filepath.Join(dir, "data"), "--start-timeout", "5s"}, tt.args...)
			if code := run(ctx, args, &out, &errOut); code == 0 {
				t.Fatalf("broker started: %s", out.String())
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("stderr does not say %q:\n%s", tt.want, errOut.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "data", "keys", "pseudonym.key")); err == nil && strings.HasPrefix(tt.name, "vault") {
				t.Fatal("a local key was created although Vault is configured")
			}
		})
	}
}
