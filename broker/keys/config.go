package keys

import (
	"errors"
	"fmt"

	"github.com/aperture-gov/aperture/services/kit/vault"
)

// Key sources for Config.Keys.
const (
	SourceLocal = "local"
	SourceVault = "vault"
)

// Config selects where the broker's keys come from.
//
//	keys: vault            # or local (the default): files in <data>/keys
//	origin: gov.example/aperture/access-log
//	vault:
//	  address: https://vault.internal:8200
//	  approle: {role_id_file: /run/secrets/role-id, secret_id_file: /run/secrets/secret-id}
//	  transit: {mount: transit, checkpoint_key: aperture-checkpoint, data_key: aperture-data}
//	  pki: {mount: pki, role: broker, ttl: 24h}
type Config struct {
	// Keys is "local" (default) or "vault". With "vault" there is no fallback to local keys.
	Keys string `yaml:"keys,omitempty"`
	// Origin is the log origin: the checkpoint key's name. Local keys keep the name they were
	// created with; Vault needs it set (tlog.DefaultOrigin if empty).
	Origin string `yaml:"origin,omitempty"`
	// Vault is used when Keys is "vault".
	Vault vault.Config `yaml:"vault,omitempty"`
	// Bucket is the JetStream KV bucket of the wrapped data keys (default "KEYS").
	Bucket string `yaml:"keys_bucket,omitempty"`
}

// Source returns Keys with its default.
func (c Config) Source() string {
	if c.Keys == "" {
		return SourceLocal
	}
	return c.Keys
}

// Validate checks the configuration; for "vault" also the Vault connection, AppRole and transit
// settings, and the PKI settings if a role is given.
func (c Config) Validate() error {
	switch c.Source() {
	case SourceLocal:
		return nil
	case SourceVault:
		errs := []error{c.Vault.Validate(), c.Vault.Transit.Validate()}
		if c.Vault.PKI.Role != "" {
			errs = append(errs, c.Vault.PKI.Validate())
		}
		return errors.Join(errs...)
	default:
		return fmt.Errorf("keys: %q is not a key source; want %q or %q", c.Keys, SourceLocal, SourceVault)
	}
}
