package vault

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config is how a component reaches Vault and logs in. It is shared by the broker, the authority
// services and agency clients; each has its own AppRole.
//
//	vault:
//	  address: https://vault.internal:8200
//	  ca_cert: /etc/aperture/vault-ca.pem
//	  approle:
//	    role_id_file: /run/secrets/aperture-role-id
//	    secret_id_file: /run/secrets/aperture-secret-id
//	  transit: {mount: transit, checkpoint_key: aperture-checkpoint, data_key: aperture-data}
//	  pki: {mount: pki, role: broker, ttl: 24h}
type Config struct {
	// Address is Vault's URL, e.g. https://vault.internal:8200.
	Address string `yaml:"address"`
	// Namespace is the Vault Enterprise namespace; empty for none.
	Namespace string `yaml:"namespace,omitempty"`
	// CACert is a PEM file of the CA that signed Vault's TLS certificate; empty uses the system roots.
	CACert string `yaml:"ca_cert,omitempty"`
	// TLSServerName overrides the host name checked in Vault's certificate.
	TLSServerName string `yaml:"tls_server_name,omitempty"`
	// AppRole is the login.
	AppRole AppRoleConfig `yaml:"approle"`
	// Timeout bounds every Vault request (default 10s).
	Timeout time.Duration `yaml:"timeout,omitempty"`
	// MaxRetries is how often the client retries a request that failed with a 5xx or a connection
	// error (default 2; negative for none).
	MaxRetries int `yaml:"max_retries,omitempty"`
	// Transit names the transit mount and keys (the broker only).
	Transit TransitConfig `yaml:"transit,omitempty"`
	// PKI names the PKI mount and the role this component issues its certificate from.
	PKI PKIConfig `yaml:"pki,omitempty"`
}

// AppRoleConfig is an AppRole login. Prefer the _file variants: the secret id must not sit in a
// configuration file that is shared or checked in.
type AppRoleConfig struct {
	// Mount is the AppRole auth mount (default "approle").
	Mount        string `yaml:"mount,omitempty"`
	RoleID       string `yaml:"role_id,omitempty"`
	RoleIDFile   string `yaml:"role_id_file,omitempty"`
	SecretID     string `yaml:"secret_id,omitempty"`
	SecretIDFile string `yaml:"secret_id_file,omitempty"`
}

// TransitConfig names the transit keys the broker uses.
type TransitConfig struct {
	// Mount is the transit mount (default "transit").
	Mount string `yaml:"mount,omitempty"`
	// CheckpointKey is the ed25519 key that signs checkpoints (default "aperture-checkpoint").
	CheckpointKey string `yaml:"checkpoint_key,omitempty"`
	// DataKey is the aes256-gcm96 key that wraps the data keys (default "aperture-data").
	DataKey string `yaml:"data_key,omitempty"`
}

// PKIConfig names the PKI role a component's certificate is issued from.
type PKIConfig struct {
	// Mount is the PKI mount (default "pki").
	Mount string `yaml:"mount,omitempty"`
	// Role is the PKI role, e.g. "broker", "authority-population" (see deploy/vault).
	Role string `yaml:"role,omitempty"`
	// TTL is the certificate lifetime asked for (default 24h; the role's max_ttl caps it). The
	// certificate is renewed after two thirds of it.
	TTL time.Duration `yaml:"ttl,omitempty"`
}

// Defaults.
const (
	DefaultAppRoleMount  = "approle"
	DefaultTransitMount  = "transit"
	DefaultCheckpointKey = "aperture-checkpoint"
	DefaultDataKey       = "aperture-data"
	DefaultPKIMount      = "pki"
	DefaultTimeout       = 10 * time.Second
	DefaultCertTTL       = 24 * time.Hour
)

// Vault path segments: mounts may be nested (a/b), names may not.
var (
	mountRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// WithDefaults returns c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.AppRole.Mount == "" {
		c.AppRole.Mount = DefaultAppRoleMount
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 2
	}
	c.Transit = c.Transit.WithDefaults()
	c.PKI = c.PKI.WithDefaults()
	return c
}

// WithDefaults returns t with empty fields set to their defaults.
func (t TransitConfig) WithDefaults() TransitConfig {
	if t.Mount == "" {
		t.Mount = DefaultTransitMount
	}
	if t.CheckpointKey == "" {
		t.CheckpointKey = DefaultCheckpointKey
	}
	if t.DataKey == "" {
		t.DataKey = DefaultDataKey
	}
	return t
}

// WithDefaults returns p with empty fields set to their defaults (Role has none).
func (p PKIConfig) WithDefaults() PKIConfig {
	if p.Mount == "" {
		p.Mount = DefaultPKIMount
	}
	if p.TTL == 0 {
		p.TTL = DefaultCertTTL
	}
	return p
}

// Validate checks the connection and login settings (after defaults). It does not read the files.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	u, err := url.Parse(c.Address)
	switch {
	case c.Address == "":
		errs = append(errs, errors.New("vault.address is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("vault.address %q: %w", c.Address, err))
	case u.Scheme != "https" && u.Scheme != "http" || u.Host == "":
		errs = append(errs, fmt.Errorf("vault.address %q: want http(s)://host:port", c.Address))
	}
	if !mountRE.MatchString(c.AppRole.Mount) {
		errs = append(errs, fmt.Errorf("vault.approle.mount %q is not a Vault mount path", c.AppRole.Mount))
	}
	if (c.AppRole.RoleID == "") == (c.AppRole.RoleIDFile == "") {
		errs = append(errs, errors.New("vault.approle: set exactly one of role_id and role_id_file"))
	}
	if (c.AppRole.SecretID == "") == (c.AppRole.SecretIDFile == "") {
		errs = append(errs, errors.New("vault.approle: set exactly one of secret_id and secret_id_file"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("vault.timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Validate checks the transit settings (after defaults).
func (t TransitConfig) Validate() error {
	t = t.WithDefaults()
	var errs []error
	if !mountRE.MatchString(t.Mount) {
		errs = append(errs, fmt.Errorf("vault.transit.mount %q is not a Vault mount path", t.Mount))
	}
	if !nameRE.MatchString(t.CheckpointKey) {
		errs = append(errs, fmt.Errorf("vault.transit.checkpoint_key %q is not a transit key name", t.CheckpointKey))
	}
	if !nameRE.MatchString(t.DataKey) {
		errs = append(errs, fmt.Errorf("vault.transit.data_key %q is not a transit key name", t.DataKey))
	}
	if t.CheckpointKey == t.DataKey {
		errs = append(errs, errors.New("vault.transit: checkpoint_key and data_key must differ (ed25519 signs, aes256-gcm96 wraps)"))
	}
	return errors.Join(errs...)
}

// Validate checks the PKI settings (after defaults).
func (p PKIConfig) Validate() error {
	p = p.WithDefaults()
	var errs []error
	if !mountRE.MatchString(p.Mount) {
		errs = append(errs, fmt.Errorf("vault.pki.mount %q is not a Vault mount path", p.Mount))
	}
	if !nameRE.MatchString(p.Role) {
		errs = append(errs, fmt.Errorf("vault.pki.role %q is not a PKI role name", p.Role))
	}
	if p.TTL < 3*time.Second {
		errs = append(errs, fmt.Errorf("vault.pki.ttl %s is too short", p.TTL))
	}
	return errors.Join(errs...)
}

// credentials returns the role id and secret id, reading the files if configured.
func (a AppRoleConfig) credentials() (roleID, secretID string, err error) {
	read := func(val, file, what string) (string, error) {
		if file == "" {
			return val, nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			// The path is fine to show; the content never is.
			return "", fmt.Errorf("read AppRole %s file: %w", what, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("AppRole %s file %s is empty", what, file)
		}
		return s, nil
	}
	if roleID, err = read(a.RoleID, a.RoleIDFile, "role id"); err != nil {
		return "", "", err
	}
	if secretID, err = read(a.SecretID, a.SecretIDFile, "secret id"); err != nil {
		return "", "", err
	}
	return roleID, secretID, nil
}
