package vaultkeys_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/vaultkeys"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/services/kit/vault/vaulttest"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"default is local", ``, ""},
		{"local", `keys: local`, ""},
		{"unknown", `keys: hsm`, `"hsm" is not a key source`},
		{"vault without address", "keys: vault\nvault: {approle: {role_id: r, secret_id_file: /s}}", "address is required"},
		{"vault ok", "keys: vault\norigin: gov.example/log\nvault:\n  address: https://vault:8200\n  timeout: 5s\n  approle: {role_id_file: /r, secret_id_file: /s}\n  transit: {checkpoint_key: cp}\n  pki: {role: broker, ttl: 12h}\n", ""},
		{"vault same keys", "keys: vault\nvault: {address: 'http://v:8200', approle: {role_id: r, secret_id: s}, transit: {checkpoint_key: k, data_key: k}}", "must differ"},
		{"vault bad pki ttl", "keys: vault\nvault: {address: 'http://v:8200', approle: {role_id: r, secret_id: s}, pki: {role: broker, ttl: 1s}}", "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c keys.Config
			if err := yaml.Unmarshal([]byte(tt.yaml), &c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
			}
			if tt.name == "vault ok" && (c.Vault.Timeout != 5*time.Second || c.Vault.PKI.TTL != 12*time.Hour || c.Vault.Transit.CheckpointKey != "cp") {
				t.Fatalf("decoded %+v", c.Vault)
			}
		})
	}
}

func TestOpenConfig(t *testing.T) {
	local, err := vaultkeys.OpenConfig(ctx(t), keys.Config{}, t.TempDir(), nil, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := local.(*keys.LocalProvider); !ok {
		t.Fatalf("local config opened %T", local)
	}
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	cfg := keys.Config{Keys: "vault", Vault: e.Config("broker")}
	p, err := vaultkeys.OpenConfig(ctx(t), cfg, t.TempDir(), natstest.JetStream(t), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Checkpoints().Name() != "aperture.local/access-log" {
		t.Fatalf("origin %q", p.Checkpoints().Name())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	e.Double.Close()
	if _, err := vaultkeys.OpenConfig(ctx(t), cfg, t.TempDir(), natstest.JetStream(t), 1, nil); err == nil || !strings.Contains(err.Error(), "vault is configured but not usable") {
		t.Fatalf("Vault down: %v (must not fall back to local keys)", err)
	}
}
