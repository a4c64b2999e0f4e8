package vaulttest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	vaultdeploy "github.com/aperture-gov/aperture/deploy/vault"
	"github.com/aperture-gov/aperture/services/kit/mtls"
	"github.com/aperture-gov/aperture/services/kit/vault"
)

// Environment variables that point the tests at a real Vault (a dev server: `vault server -dev`).
const (
	EnvAddr  = "APERTURE_TEST_VAULT_ADDR"
	EnvToken = "APERTURE_TEST_VAULT_TOKEN"
)

// TrustDomain is the SPIFFE trust domain of the test PKI roles.
const TrustDomain = "aperture.test"

// Components that Env creates an AppRole, a policy and a PKI role for, as setup.sh does.
var Components = []string{"broker", "authority-population", "authority-tax", "agency-jobcentre"}

// Options shape an Env.
type Options struct {
	// TokenTTL and TokenMaxTTL of AppRole tokens (default 1h and 24h).
	TokenTTL, TokenMaxTTL time.Duration
}

// Env is a Vault configured for Aperture: transit keys, a PKI with one role per component, and one
// AppRole and least-privilege policy per component (from deploy/vault/policies).
type Env struct {
	Addr      string
	RootToken string
	Transit   vault.TransitConfig
	PKIMount  string
	// Double is the HTTP double, or nil against a real Vault.
	Double *HTTPDouble

	appRoleMount string
	creds        map[string][2]string
}

// Each runs fn against the HTTP double and, when EnvAddr and EnvToken are set, against that real
// Vault (otherwise that subtest is skipped, saying how to enable it).
func Each(t *testing.T, opts Options, fn func(t *testing.T, e *Env)) {
	t.Run("double", func(t *testing.T) { fn(t, NewDoubleEnv(t, opts)) })
	t.Run("vault", func(t *testing.T) { fn(t, NewRealEnv(t, opts)) })
}

func (o Options) withDefaults() Options {
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	if o.TokenMaxTTL == 0 {
		o.TokenMaxTTL = 24 * time.Hour
	}
	return o
}

// NewDoubleEnv starts an HTTPDouble configured like setup.sh configures a Vault.
func NewDoubleEnv(t testing.TB, opts Options) *Env {
	t.Helper()
	opts = opts.withDefaults()
	d := NewHTTPDouble(t)
	d.SetTokenTTL(opts.TokenTTL, opts.TokenMaxTTL)
	e := &Env{
		Addr: d.Addr(), RootToken: d.RootToken(), Double: d,
		Transit:  vault.TransitConfig{}.WithDefaults(),
		PKIMount: vault.DefaultPKIMount, appRoleMount: vault.DefaultAppRoleMount,
		creds: map[string][2]string{},
	}
	d.AddTransitKey(e.Transit.Mount, e.Transit.CheckpointKey, "ed25519")
	d.AddTransitKey(e.Transit.Mount, e.Transit.DataKey, "aes256-gcm96")
	for _, comp := range Components {
		hcl, err := e.policy(comp)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.AddPolicy("aperture-"+comp, hcl); err != nil {
			t.Fatal(err)
		}
		if err := d.AddPKIRole(e.PKIMount, comp, PKIRole{AllowedURISANs: []string{spiffeID(comp)}}); err != nil {
			t.Fatal(err)
		}
		rid, sid := d.AddAppRole(comp, "aperture-"+comp)
		e.creds[comp] = [2]string{rid, sid}
	}
	return e
}

// NewRealEnv configures the real Vault named by EnvAddr/EnvToken through its HTTP API, in mounts
// with a random suffix (removed when t ends), or skips t if those variables are not set.
func NewRealEnv(t testing.TB, opts Options) *Env {
	t.Helper()
	skipUnlessReal(t)
	addr, tok := os.Getenv(EnvAddr), os.Getenv(EnvToken)
	opts = opts.withDefaults()
	suffix := randHex(4)
	e := &Env{
		Addr: addr, RootToken: tok,
		Transit: vault.TransitConfig{
			Mount: "aperture-transit-" + suffix, CheckpointKey: "aperture-checkpoint", DataKey: "aperture-data",
		},
		PKIMount: "aperture-pki-" + suffix, appRoleMount: "aperture-approle-" + suffix,
		creds: map[string][2]string{},
	}
	admin := e.Admin(t)
	w := func(path string, data map[string]any) *api.Secret {
		t.Helper()
		s, err := admin.Logical().Write(path, data)
		if err != nil {
			t.Fatalf("set up Vault: %s: %v", path, err)
		}
		return s
	}
	w("sys/mounts/"+e.Transit.Mount, map[string]any{"type": "transit"})
	t.Cleanup(func() { admin.Sys().Unmount(e.Transit.Mount) })
	w("sys/mounts/"+e.PKIMount, map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}})
	t.Cleanup(func() { admin.Sys().Unmount(e.PKIMount) })
	w("sys/auth/"+e.appRoleMount, map[string]any{"type": "approle"})
	t.Cleanup(func() { admin.Sys().DisableAuth(e.appRoleMount) })

	w(e.Transit.Mount+"/keys/"+e.Transit.CheckpointKey, map[string]any{"type": "ed25519"})
	w(e.Transit.Mount+"/keys/"+e.Transit.DataKey, map[string]any{"type": "aes256-gcm96"})
	w(e.PKIMount+"/root/generate/internal", map[string]any{
		"common_name": "Aperture test CA " + suffix, "ttl": "87600h", "key_type": "ec", "key_bits": 256,
	})
	for _, comp := range Components {
		w(e.PKIMount+"/roles/"+comp, PKIRoleParams(spiffeID(comp), "72h"))
		hcl, err := e.policy(comp)
		if err != nil {
			t.Fatal(err)
		}
		policy := "aperture-" + suffix + "-" + comp
		w("sys/policies/acl/"+policy, map[string]any{"policy": hcl})
		t.Cleanup(func() { admin.Sys().DeletePolicy(policy) })
		role := "auth/" + e.appRoleMount + "/role/" + comp
		w(role, map[string]any{
			"token_policies": []string{policy},
			"token_ttl":      int(opts.TokenTTL / time.Second),
			"token_max_ttl":  int(opts.TokenMaxTTL / time.Second),
		})
		rid, err := admin.Logical().Read(role + "/role-id")
		if err != nil || rid == nil {
			t.Fatalf("set up Vault: read role id of %s: %v", comp, err)
		}
		sid := w(role+"/secret-id", nil)
		e.creds[comp] = [2]string{rid.Data["role_id"].(string), sid.Data["secret_id"].(string)}
	}
	return e
}

// PKIRoleParams are the parameters of a PKI role that issues only uriSAN (as setup.sh creates
// them): no common name or DNS names, server and client use, EC P-256, not stored.
func PKIRoleParams(uriSAN, maxTTL string) map[string]any {
	return map[string]any{
		"allowed_uri_sans":  uriSAN,
		"require_cn":        false,
		"allow_any_name":    false,
		"allowed_domains":   "",
		"enforce_hostnames": false,
		"allow_ip_sans":     false,
		"allow_localhost":   false,
		"server_flag":       true,
		"client_flag":       true,
		"key_type":          "ec",
		"key_bits":          256,
		"max_ttl":           maxTTL,
		"no_store":          true,
	}
}

func (e *Env) policy(comp string) (string, error) {
	kind, name, _ := strings.Cut(comp, "-")
	return vaultdeploy.Policy(kind, vaultdeploy.Vars{
		Transit: e.Transit.Mount, CheckpointKey: e.Transit.CheckpointKey, DataKey: e.Transit.DataKey,
		PKI: e.PKIMount, Name: name,
	})
}

// SPIFFEID returns the identity a component's PKI role issues.
func SPIFFEID(comp string) string { return spiffeID(comp) }

func spiffeID(comp string) string {
	kind, name, _ := strings.Cut(comp, "-")
	return mtls.ID(TrustDomain, kind, name)
}

// Config returns the vault.Config a component (one of Components) starts with: its AppRole, the
// transit keys and its PKI role. Requests are not retried, so faults show at once.
func (e *Env) Config(comp string) vault.Config {
	c, ok := e.creds[comp]
	if !ok {
		panic(fmt.Sprintf("vaulttest: unknown component %q", comp))
	}
	return vault.Config{
		Address:    e.Addr,
		AppRole:    vault.AppRoleConfig{Mount: e.appRoleMount, RoleID: c[0], SecretID: c[1]},
		Timeout:    5 * time.Second,
		MaxRetries: -1,
		Transit:    e.Transit,
		PKI:        vault.PKIConfig{Mount: e.PKIMount, Role: comp, TTL: time.Hour},
	}
}

// Admin returns a client with the root token.
func (e *Env) Admin(t testing.TB) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = e.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(e.RootToken)
	return c
}

// RotateTransitKey rotates a transit key, as an operator would.
func (e *Env) RotateTransitKey(t testing.TB, name string) {
	t.Helper()
	if _, err := e.Admin(t).Logical().Write(e.Transit.Mount+"/keys/"+name+"/rotate", nil); err != nil {
		t.Fatalf("rotate %s: %v", name, err)
	}
}

// RevokeAccessor revokes the token with accessor, as an operator would.
func (e *Env) RevokeAccessor(t testing.TB, accessor string) {
	t.Helper()
	if _, err := e.Admin(t).Logical().Write("auth/token/revoke-accessor", map[string]any{"accessor": accessor}); err != nil {
		t.Fatalf("revoke token: %v", err)
	}
}

// EachBackend is Each for tests that need several independent Vaults of one kind: fn gets a
// constructor instead of one Env.
func EachBackend(t *testing.T, opts Options, fn func(t *testing.T, newEnv func(testing.TB) *Env)) {
	t.Run("double", func(t *testing.T) {
		fn(t, func(t testing.TB) *Env { return NewDoubleEnv(t, opts) })
	})
	t.Run("vault", func(t *testing.T) {
		skipUnlessReal(t)
		fn(t, func(t testing.TB) *Env { return NewRealEnv(t, opts) })
	})
}

func skipUnlessReal(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvAddr) == "" || os.Getenv(EnvToken) == "" {
		t.Skipf("real Vault not configured: set %s and %s (e.g. `vault server -dev` and its root token) to run this against Vault 1.15+", EnvAddr, EnvToken)
	}
}
