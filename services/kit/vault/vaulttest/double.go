// Package vaulttest tests Aperture's Vault code: an in-test HTTP double of exactly the Vault
// endpoints Aperture calls (with real crypto: Ed25519 signatures, AES-GCM wrapped data keys, an X.509
// CA issuing real certificates, and Vault's documented request, response and error bodies), and
// Env, which sets up either the double or a real Vault the same way deploy/vault/setup.sh does.
package vaulttest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// HTTPDouble is an in-process Vault that implements only:
//
//	POST auth/<approle>/login, PUT auth/token/renew-self,
//	GET <transit>/keys/<name>, POST <transit>/keys/<name>/rotate, POST <transit>/sign/<name>,
//	POST <transit>/datakey/wrapped/<name>, POST <transit>/decrypt/<name>,
//	POST <pki>/issue/<role>.
//
// Requests are authorised by the ACL policies given to AddPolicy (path globs with * and +,
// capabilities read/update/create); the root token may do anything. Faults are configurable: token
// TTLs, revocation (403), failing paths (any status), and dropping every connection.
type HTTPDouble struct {
	srv          *httptest.Server
	rootToken    string
	appRoleMount string

	mu       sync.Mutex
	tokens   map[string]*token
	roles    map[string]*appRole // by role id
	policies map[string][]rule
	transit  map[string]map[string]*transitKey // mount -> name -> key
	pki      map[string]*pkiMount
	faults   map[string]int // path prefix -> HTTP status
	down     bool
	tokenTTL time.Duration
	maxTTL   time.Duration
	counts   map[string]int
}

type token struct {
	accessor  string
	policies  []string
	expires   time.Time
	maxExpiry time.Time
	revoked   bool
	root      bool
}

type appRole struct {
	name, secretID string
	policies       []string
}

type rule struct {
	glob string
	caps map[string]bool
}

type transitKey struct {
	typ      string
	ed       []ed25519.PrivateKey // index version-1
	aes      [][]byte
	created  []time.Time
	minDecry int
}

type pkiMount struct {
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	caPEM  string
	roles  map[string]PKIRole
}

// PKIRole is the part of a Vault PKI role the double enforces.
type PKIRole struct {
	// AllowedURISANs are globs (a trailing * matches any suffix).
	AllowedURISANs []string
	MaxTTL         time.Duration
}

// NewHTTPDouble starts a double for t; it is closed when t ends. Tokens from AppRole logins live
// for an hour unless SetTokenTTL says otherwise.
func NewHTTPDouble(t testing.TB) *HTTPDouble {
	d := &HTTPDouble{
		rootToken:    "root-" + randHex(8),
		appRoleMount: "approle",
		tokens:       map[string]*token{},
		roles:        map[string]*appRole{},
		policies:     map[string][]rule{},
		transit:      map[string]map[string]*transitKey{},
		pki:          map[string]*pkiMount{},
		faults:       map[string]int{},
		tokenTTL:     time.Hour,
		maxTTL:       24 * time.Hour,
		counts:       map[string]int{},
	}
	d.tokens[d.rootToken] = &token{root: true}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

// Addr is the double's URL, for vault.Config.Address.
func (d *HTTPDouble) Addr() string { return d.srv.URL }

// RootToken may do anything, like a dev server's root token.
func (d *HTTPDouble) RootToken() string { return d.rootToken }

// Close stops the double: Vault becomes unreachable.
func (d *HTTPDouble) Close() { d.srv.Close() }

// SetTokenTTL sets the TTL and max TTL of tokens issued from now on.
func (d *HTTPDouble) SetTokenTTL(ttl, maxTTL time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tokenTTL, d.maxTTL = ttl, maxTTL
}

// RevokeTokens revokes every token issued by login so far (not the root token).
func (d *HTTPDouble) RevokeTokens() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, tk := range d.tokens {
		if !tk.root {
			tk.revoked = true
		}
	}
}

// Fail makes every request whose path (without /v1/) starts with prefix fail with status and a
// Vault error body; status 0 removes the fault.
func (d *HTTPDouble) Fail(prefix string, status int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if status == 0 {
		delete(d.faults, prefix)
	} else {
		d.faults[prefix] = status
	}
}

// SetDown drops every connection (as an unreachable or crashed Vault) while down is true.
func (d *HTTPDouble) SetDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

// Count returns how many successful requests of one kind the double answered: "login", "renew",
// "read-key", "rotate", "sign", "datakey", "decrypt", "issue".
func (d *HTTPDouble) Count(kind string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[kind]
}

// AddPolicy installs an ACL policy written in Vault's HCL (path "..." { capabilities = [...] }).
func (d *HTTPDouble) AddPolicy(name, hcl string) error {
	rules, err := parsePolicy(hcl)
	if err != nil {
		return fmt.Errorf("policy %s: %w", name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policies[name] = rules
	return nil
}

// AddAppRole creates an AppRole with policies and returns its role id and secret id.
func (d *HTTPDouble) AddAppRole(name string, policies ...string) (roleID, secretID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	roleID, secretID = "role-"+randHex(8), "secret-"+randHex(8)
	d.roles[roleID] = &appRole{name: name, secretID: secretID, policies: append([]string{"default"}, policies...)}
	return roleID, secretID
}

// AddTransitKey creates a transit key of type "ed25519" or "aes256-gcm96" at mount.
func (d *HTTPDouble) AddTransitKey(mount, name, typ string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.transit[mount] == nil {
		d.transit[mount] = map[string]*transitKey{}
	}
	k := &transitKey{typ: typ, minDecry: 1}
	k.rotate()
	d.transit[mount][name] = k
}

// AddPKIRole creates (on first use) a PKI mount with a self-signed CA and a role on it.
func (d *HTTPDouble) AddPKIRole(mount, role string, r PKIRole) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.pki[mount]
	if m == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "Aperture test CA (Vault double)"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return err
		}
		cert, _ := x509.ParseCertificate(der)
		m = &pkiMount{caKey: key, caCert: cert, roles: map[string]PKIRole{},
			caPEM: strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))}
		d.pki[mount] = m
	}
	if r.MaxTTL == 0 {
		r.MaxTTL = 72 * time.Hour
	}
	m.roles[role] = r
	return nil
}

func (k *transitKey) rotate() {
	k.created = append(k.created, time.Now())
	switch k.typ {
	case "ed25519":
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		k.ed = append(k.ed, priv)
	default:
		b := make([]byte, 32)
		rand.Read(b)
		k.aes = append(k.aes, b)
	}
}

func (k *transitKey) latest() int { return len(k.created) }

// ---- HTTP ----

type vaultErr struct {
	status int
	msg    string
}

func errorf(status int, format string, a ...any) *vaultErr {
	return &vaultErr{status, fmt.Sprintf(format, a...)}
}

var errPermissionDenied = &vaultErr{http.StatusForbidden, "permission denied"}

func (d *HTTPDouble) serve(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		panic(http.ErrAbortHandler) // drops the connection
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": []string{}})
		return
	}
	for prefix, status := range d.faults {
		if strings.HasPrefix(p, prefix) {
			writeJSON(w, status, map[string]any{"errors": []string{http.StatusText(status)}})
			return
		}
	}
	var body map[string]any
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil && err.Error() != "EOF" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{"failed to parse JSON input: " + err.Error()}})
			return
		}
	}
	if body == nil {
		body = map[string]any{}
	}
	resp, verr := d.route(r, p, body)
	if verr != nil {
		writeJSON(w, verr.status, map[string]any{"errors": []string{verr.msg}})
		return
	}
	resp["request_id"] = randHex(8)
	resp["lease_id"] = ""
	if _, ok := resp["renewable"]; !ok {
		resp["renewable"] = false
	}
	if _, ok := resp["lease_duration"]; !ok {
		resp["lease_duration"] = 0
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (d *HTTPDouble) route(r *http.Request, p string, body map[string]any) (map[string]any, *vaultErr) {
	write := r.Method == http.MethodPut || r.Method == http.MethodPost
	if p == "auth/"+d.appRoleMount+"/login" && write {
		return d.login(body)
	}
	tk := d.tokens[r.Header.Get("X-Vault-Token")]
	if tk == nil || tk.revoked || (!tk.root && time.Now().After(tk.expires)) {
		return nil, errPermissionDenied
	}
	if p == "auth/token/renew-self" && write {
		return d.renewSelf(tk, body)
	}
	if p == "auth/token/revoke-accessor" && write && tk.root {
		acc := str(body["accessor"])
		for _, other := range d.tokens {
			if other.accessor == acc && !other.root {
				other.revoked = true
				d.counts["revoke"]++
				return map[string]any{}, nil
			}
		}
		return nil, errorf(http.StatusBadRequest, "invalid accessor")
	}
	capability := "read"
	if write {
		capability = "update"
	}
	if !tk.root && !d.allowed(tk.policies, p, capability) {
		return nil, errPermissionDenied
	}
	for mount, keys := range d.transit {
		rest, ok := strings.CutPrefix(p, mount+"/")
		if !ok {
			continue
		}
		return d.transitOp(keys, rest, r.Method, body)
	}
	for mount, m := range d.pki {
		if role, ok := strings.CutPrefix(p, mount+"/issue/"); ok && write {
			return d.issue(m, role, body)
		}
	}
	return nil, errorf(http.StatusNotFound, "no handler for route %q. route entry not found.", p)
}

func (d *HTTPDouble) allowed(policies []string, p, capability string) bool {
	for _, name := range policies {
		for _, ru := range d.policies[name] {
			if (ru.caps[capability] || capability == "update" && ru.caps["create"]) && globMatch(ru.glob, p) {
				return true
			}
		}
	}
	return false
}

func globMatch(glob, p string) bool {
	if prefix, ok := strings.CutSuffix(glob, "*"); ok {
		return strings.HasPrefix(p, prefix)
	}
	gs, ps := strings.Split(glob, "/"), strings.Split(p, "/")
	if len(gs) != len(ps) {
		return false
	}
	for i := range gs {
		if gs[i] != "+" && gs[i] != ps[i] {
			return false
		}
	}
	return true
}

func (d *HTTPDouble) login(body map[string]any) (map[string]any, *vaultErr) {
	roleID, _ := body["role_id"].(string)
	secretID, _ := body["secret_id"].(string)
	role := d.roles[roleID]
	if role == nil {
		return nil, errorf(http.StatusBadRequest, "invalid role or secret ID")
	}
	if role.secretID != secretID {
		return nil, errorf(http.StatusBadRequest, "invalid role or secret ID")
	}
	now := time.Now()
	id := "hvs." + randHex(12)
	ttl := min(d.tokenTTL, d.maxTTL)
	tk := &token{accessor: "acc-" + randHex(8), policies: role.policies, expires: now.Add(ttl), maxExpiry: now.Add(d.maxTTL)}
	d.tokens[id] = tk
	d.counts["login"]++
	return map[string]any{"auth": authBody(id, tk.accessor, role.policies, ttl, map[string]any{"role_name": role.name})}, nil
}

func authBody(id, accessor string, policies []string, ttl time.Duration, meta map[string]any) map[string]any {
	return map[string]any{
		"client_token":   id,
		"accessor":       accessor,
		"policies":       policies,
		"token_policies": policies,
		"metadata":       meta,
		"lease_duration": int(ttl / time.Second),
		"renewable":      true,
		"entity_id":      "",
		"token_type":     "service",
		"orphan":         true,
	}
}

func (d *HTTPDouble) renewSelf(tk *token, body map[string]any) (map[string]any, *vaultErr) {
	if tk.root {
		return map[string]any{"auth": authBody(d.rootToken, "root", []string{"root"}, 0, nil)}, nil
	}
	now := time.Now()
	ttl := d.tokenTTL
	if inc, err := intOf(body["increment"]); err == nil && inc > 0 {
		ttl = time.Duration(inc) * time.Second
	}
	if left := tk.maxExpiry.Sub(now); ttl > left {
		ttl = left
	}
	ttl = ttl.Truncate(time.Second)
	tk.expires = now.Add(ttl)
	d.counts["renew"]++
	var id string
	for k, v := range d.tokens {
		if v == tk {
			id = k
		}
	}
	return map[string]any{"auth": authBody(id, tk.accessor, tk.policies, ttl, nil), "warnings": nil}, nil
}

func (d *HTTPDouble) transitOp(keys map[string]*transitKey, rest, method string, body map[string]any) (map[string]any, *vaultErr) {
	segs := strings.Split(rest, "/")
	write := method != http.MethodGet
	var op, name string
	switch {
	case len(segs) == 2 && segs[0] == "keys" && !write:
		op, name = "read-key", segs[1]
	case len(segs) == 3 && segs[0] == "keys" && segs[2] == "rotate" && write:
		op, name = "rotate", segs[1]
	case len(segs) == 2 && (segs[0] == "sign" || segs[0] == "decrypt") && write:
		op, name = segs[0], segs[1]
	case len(segs) == 3 && segs[0] == "datakey" && segs[1] == "wrapped" && write:
		op, name = "datakey", segs[2]
	default:
		return nil, errorf(http.StatusNotFound, "no handler for route %q. route entry not found.", rest)
	}
	k := keys[name]
	if k == nil {
		if op == "read-key" {
			return nil, errorf(http.StatusNotFound, "")
		}
		return nil, errorf(http.StatusBadRequest, "encryption key not found")
	}
	var resp map[string]any
	var verr *vaultErr
	switch op {
	case "read-key":
		resp = k.describe(name)
	case "rotate":
		k.rotate()
		resp = k.describe(name)
	case "sign":
		resp, verr = k.sign(body)
	case "datakey":
		resp, verr = k.datakey(body)
	case "decrypt":
		resp, verr = k.decrypt(body)
	}
	if verr == nil {
		d.counts[op]++
	}
	return resp, verr
}

func (k *transitKey) describe(name string) map[string]any {
	versions := map[string]any{}
	for i, c := range k.created {
		v := strconv.Itoa(i + 1)
		if k.typ == "ed25519" {
			versions[v] = map[string]any{
				"creation_time": c.Format(time.RFC3339Nano),
				"name":          "ed25519",
				"public_key":    base64.StdEncoding.EncodeToString(k.ed[i].Public().(ed25519.PublicKey)),
			}
		} else {
			versions[v] = c.Unix()
		}
	}
	return map[string]any{"data": map[string]any{
		"name": name, "type": k.typ, "keys": versions,
		"latest_version": k.latest(), "min_decryption_version": k.minDecry, "min_encryption_version": 0,
		"deletion_allowed": false, "exportable": false, "supports_signing": k.typ == "ed25519",
		"supports_encryption": k.typ != "ed25519", "supports_decryption": k.typ != "ed25519",
		"supports_derivation": true,
	}}
}

func (k *transitKey) version(body map[string]any) (int, *vaultErr) {
	v, err := intOf(body["key_version"])
	if err != nil || v == 0 {
		return k.latest(), nil
	}
	if v < 0 || v > k.latest() {
		return 0, errorf(http.StatusBadRequest, "invalid key version")
	}
	return v, nil
}

func (k *transitKey) sign(body map[string]any) (map[string]any, *vaultErr) {
	if k.typ != "ed25519" {
		return nil, errorf(http.StatusBadRequest, "key type %s does not support signing", k.typ)
	}
	in, err := base64.StdEncoding.DecodeString(str(body["input"]))
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "unable to decode input as base64: %s", err)
	}
	v, verr := k.version(body)
	if verr != nil {
		return nil, verr
	}
	sig := ed25519.Sign(k.ed[v-1], in)
	return map[string]any{"data": map[string]any{
		"signature":   fmt.Sprintf("vault:v%d:%s", v, base64.StdEncoding.EncodeToString(sig)),
		"key_version": v,
	}}, nil
}

func (k *transitKey) datakey(body map[string]any) (map[string]any, *vaultErr) {
	if k.typ != "aes256-gcm96" {
		return nil, errorf(http.StatusBadRequest, "key type %s does not support encryption", k.typ)
	}
	bits := 256
	if b, err := intOf(body["bits"]); err == nil && b != 0 {
		bits = b
	}
	if bits != 128 && bits != 256 && bits != 512 {
		return nil, errorf(http.StatusBadRequest, "invalid bits value")
	}
	dk := make([]byte, bits/8)
	rand.Read(dk)
	v := k.latest()
	n := nonce()
	ct := k.gcm(v).Seal(n, n, dk, nil) // Vault's layout: nonce || ciphertext || tag
	return map[string]any{"data": map[string]any{
		"ciphertext":  fmt.Sprintf("vault:v%d:%s", v, base64.StdEncoding.EncodeToString(ct)),
		"key_version": v,
	}}, nil
}

func nonce() []byte {
	n := make([]byte, 12)
	rand.Read(n)
	return n
}

func (k *transitKey) gcm(v int) cipher.AEAD {
	b, _ := aes.NewCipher(k.aes[v-1])
	g, _ := cipher.NewGCM(b)
	return g
}

// decrypt reads Vault's ciphertext: "vault:vN:" + base64(nonce || AES-GCM ciphertext || tag).
func (k *transitKey) decrypt(body map[string]any) (map[string]any, *vaultErr) {
	if k.typ != "aes256-gcm96" {
		return nil, errorf(http.StatusBadRequest, "key type %s does not support decryption", k.typ)
	}
	parts := strings.SplitN(str(body["ciphertext"]), ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return nil, errorf(http.StatusBadRequest, "invalid ciphertext: no prefix")
	}
	v, err := strconv.Atoi(parts[1][1:])
	if err != nil || v < 1 || v > k.latest() {
		return nil, errorf(http.StatusBadRequest, "invalid ciphertext: invalid key version")
	}
	if v < k.minDecry {
		return nil, errorf(http.StatusBadRequest, "ciphertext or signature version is disallowed by policy (too old)")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) < 12+16 {
		return nil, errorf(http.StatusBadRequest, "invalid ciphertext: could not decode")
	}
	pt, err := k.gcm(v).Open(nil, raw[:12], raw[12:], nil)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "cipher: message authentication failed")
	}
	return map[string]any{"data": map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)}}, nil
}

func (d *HTTPDouble) issue(m *pkiMount, roleName string, body map[string]any) (map[string]any, *vaultErr) {
	role, ok := m.roles[roleName]
	if !ok {
		return nil, errorf(http.StatusBadRequest, "unknown role: %s", roleName)
	}
	var uris []*url.URL
	for _, s := range strings.Split(str(body["uri_sans"]), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		allowed := false
		for _, g := range role.AllowedURISANs {
			if p, ok := strings.CutSuffix(g, "*"); ok && strings.HasPrefix(s, p) || g == s {
				allowed = true
			}
		}
		if !allowed {
			return nil, errorf(http.StatusBadRequest, "URI Subject Alternative Names are not allowed in this role, but was provided %s", s)
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "invalid URI SAN %q", s)
		}
		uris = append(uris, u)
	}
	ttl := 72 * time.Hour
	if s := str(body["ttl"]); s != "" {
		dur, err := parseVaultDuration(s)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "invalid ttl: %s", err)
		}
		ttl = dur
	}
	ttl = min(ttl, role.MaxTTL)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "%s", err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-30 * time.Second), // Vault's default not_before_duration
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.caCert, &key.PublicKey, m.caKey)
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "%s", err)
	}
	var keyPEM []byte
	if str(body["private_key_format"]) == "pkcs8" {
		b, _ := x509.MarshalPKCS8PrivateKey(key)
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
	} else {
		b, _ := x509.MarshalECPrivateKey(key)
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b})
	}
	hexSerial := hex.EncodeToString(serial.Bytes())
	var colon []string
	for i := 0; i < len(hexSerial); i += 2 {
		colon = append(colon, hexSerial[i:min(i+2, len(hexSerial))])
	}
	d.counts["issue"]++
	return map[string]any{"data": map[string]any{
		"certificate":      strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
		"issuing_ca":       m.caPEM,
		"ca_chain":         []string{m.caPEM},
		"private_key":      strings.TrimSpace(string(keyPEM)),
		"private_key_type": "ec",
		"serial_number":    strings.Join(colon, ":"),
		"expiration":       tmpl.NotAfter.Unix(),
	}}, nil
}

// parseVaultDuration accepts Vault's duration strings: "90", "90s", "5m", "1h".
func parseVaultDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

var (
	pathRE = regexp.MustCompile(`path\s+"([^"]+)"\s*\{([^}]*)\}`)
	capsRE = regexp.MustCompile(`capabilities\s*=\s*\[([^\]]*)\]`)
	strRE  = regexp.MustCompile(`"([^"]*)"`)
)

// parsePolicy reads the subset of Vault's policy HCL that Aperture's policies use.
func parsePolicy(hcl string) ([]rule, error) {
	var lines []string
	for _, l := range strings.Split(hcl, "\n") {
		if t := strings.TrimSpace(l); !strings.HasPrefix(t, "#") {
			lines = append(lines, l)
		}
	}
	var rules []rule
	for _, m := range pathRE.FindAllStringSubmatch(strings.Join(lines, "\n"), -1) {
		c := capsRE.FindStringSubmatch(m[2])
		if c == nil {
			return nil, fmt.Errorf("path %q has no capabilities", m[1])
		}
		ru := rule{glob: path.Clean(m[1]), caps: map[string]bool{}}
		if strings.HasSuffix(m[1], "*") {
			ru.glob = m[1]
		}
		for _, s := range strRE.FindAllStringSubmatch(c[1], -1) {
			ru.caps[s[1]] = true
		}
		rules = append(rules, ru)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("no path rules")
	}
	return rules, nil
}

func intOf(v any) (int, error) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		return int(n), err
	case string:
		return strconv.Atoi(x)
	case nil:
		return 0, fmt.Errorf("missing")
	default:
		return 0, fmt.Errorf("not a number")
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
