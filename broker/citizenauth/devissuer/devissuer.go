// Package devissuer is a tiny OpenID Connect provider for `aperture dev` ONLY. It lets the citizen
// portal and the citizen API run exactly the production sign-in and token-verification code
// (broker/citizenauth, go-oidc, golang.org/x/oauth2) on a development machine, with a page to pick
// one of a few demo citizens instead of a real identity provider.
//
// It MUST NOT be exposed to real citizens: anyone who can reach it can sign in as any demo citizen,
// its signing key lives in memory only, and it has no client authentication. Every page it serves
// carries the banner "DEVELOPMENT LOGIN — not for real citizens".
//
// # Mounting
//
// The issuer URL includes a path prefix (e.g. http://127.0.0.1:8080/dev-oidc). Handler serves the
// FULL request paths below that prefix — do not strip the prefix:
//
//	iss, err := devissuer.New(devissuer.Options{Issuer: "http://127.0.0.1:8080/dev-oidc", ClientID: "portal", Citizens: demo})
//	mux.Handle(iss.MountPath(), iss.Handler()) // MountPath() == "/dev-oidc/"
//
// Endpoints (relative to the issuer URL): /.well-known/openid-configuration, /jwks, /authorize
// (GET shows the picker page, POST issues a code), /token (authorization_code grant with PKCE S256).
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/aperture-gov/aperture/broker/citizenauth"
)

// Citizen is a demo citizen offered on the development login page.
type Citizen struct {
	ID   string // 10 digits
	Name string
	Note string // a hint shown on the page, e.g. "has an open moving-house case"
}

// Options configure an Issuer.
type Options struct {
	// Issuer is the full issuer URL including its path prefix, e.g. http://127.0.0.1:8080/dev-oidc.
	// It is the "iss" of every token and the base of every endpoint.
	Issuer string
	// ClientID is the only client the issuer serves (the "aud" of every token).
	ClientID string
	// Citizens are the demo citizens to pick from; at least one.
	Citizens []Citizen
	// Now is the issuer's clock (iat, exp, code expiry); default time.Now.
	Now func() time.Time
	// TokenTTL is the lifetime of issued ID tokens; default 1h.
	TokenTTL time.Duration
	// CitizenClaim, when set and not "sub", additionally puts the citizen id under this claim name,
	// for a development setup that mirrors a production citizen_claim.
	CitizenClaim string
}

// DefaultTokenTTL is the ID token lifetime when Options.TokenTTL is zero.
const DefaultTokenTTL = time.Hour

// codeTTL is how long an authorization code can be redeemed; codes are also single-use.
const codeTTL = time.Minute

// maxPendingCodes bounds memory if codes are requested and never redeemed.
const maxPendingCodes = 10000

// Issuer is a development OpenID Connect provider. It is safe for concurrent use.
type Issuer struct {
	issuer   string // without trailing slash
	prefix   string // URL path of the issuer, without trailing slash ("" at the root)
	host     string // hostname of the issuer, for the redirect_uri check
	clientID string
	citizens []Citizen
	byID     map[string]Citizen
	now      func() time.Time
	ttl      time.Duration
	claim    string

	keyID  string
	public jose.JSONWebKey
	signer jose.Signer

	mu    sync.Mutex
	codes map[string]pendingCode

	handler http.Handler
}

type pendingCode struct {
	redirectURI string
	challenge   string
	nonce       string
	citizenID   string
	expires     time.Time
}

// New validates opts and makes an issuer with a fresh in-memory ES256 signing key.
func New(opts Options) (*Issuer, error) {
	u, err := url.Parse(opts.Issuer)
	if err != nil || opts.Issuer == "" {
		return nil, errors.New("devissuer: issuer must be an absolute http(s) URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("devissuer: issuer must be an absolute http(s) URL without query, fragment or user info")
	}
	if opts.ClientID == "" {
		return nil, errors.New("devissuer: client id is required")
	}
	if len(opts.Citizens) == 0 {
		return nil, errors.New("devissuer: at least one demo citizen is required")
	}
	if opts.TokenTTL < 0 {
		return nil, errors.New("devissuer: token TTL must not be negative")
	}
	byID := make(map[string]Citizen, len(opts.Citizens))
	for i, c := range opts.Citizens {
		if !citizenauth.ValidCitizenID(c.ID) {
			return nil, fmt.Errorf("devissuer: demo citizen %d: id must be 10 digits", i+1)
		}
		if strings.TrimSpace(c.Name) == "" {
			return nil, fmt.Errorf("devissuer: demo citizen %d: name is required", i+1)
		}
		if _, dup := byID[c.ID]; dup {
			return nil, fmt.Errorf("devissuer: demo citizen %d: duplicate id", i+1)
		}
		byID[c.ID] = c
	}
	i := &Issuer{
		issuer:   strings.TrimSuffix(opts.Issuer, "/"),
		prefix:   strings.TrimSuffix(u.EscapedPath(), "/"),
		host:     strings.ToLower(u.Hostname()),
		clientID: opts.ClientID,
		citizens: append([]Citizen(nil), opts.Citizens...),
		byID:     byID,
		now:      opts.Now,
		ttl:      opts.TokenTTL,
		claim:    opts.CitizenClaim,
		codes:    make(map[string]pendingCode),
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.ttl == 0 {
		i.ttl = DefaultTokenTTL
	}
	if err := i.newKey(); err != nil {
		return nil, err
	}
	i.handler = i.routes()
	return i, nil
}

func (i *Issuer) newKey() error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("devissuer: generate signing key: %w", err)
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("devissuer: key thumbprint: %w", err)
	}
	i.keyID = base64.RawURLEncoding.EncodeToString(thumb)
	pub.KeyID = i.keyID
	i.public = pub
	i.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: i.keyID, Algorithm: string(jose.ES256)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return fmt.Errorf("devissuer: signer: %w", err)
	}
	return nil
}

// IssuerURL returns the issuer URL ("iss"), without a trailing slash.
func (i *Issuer) IssuerURL() string { return i.issuer }

// MountPath is the pattern to register Handler under on the caller's mux: the issuer's URL path
// with a trailing slash, e.g. "/dev-oidc/" (or "/" for an issuer at the root of its host).
func (i *Issuer) MountPath() string { return i.prefix + "/" }

// Handler serves the issuer's endpoints at their full paths (the issuer's path prefix included);
// mount it with mux.Handle(i.MountPath(), i.Handler()) and without http.StripPrefix.
func (i *Issuer) Handler() http.Handler { return i.handler }

// Mint returns a signed ID token for a citizen, expiring at expiry, as if the citizen had signed in
// (without a nonce). It is for tests and the CLI. The id must be 10 digits; the name claim is set
// when the id is one of the demo citizens.
func (i *Issuer) Mint(citizenID string, expiry time.Time) (string, error) {
	if !citizenauth.ValidCitizenID(citizenID) {
		return "", errors.New("devissuer: citizen id must be 10 digits")
	}
	now := i.now()
	if !expiry.After(now) {
		// Allowed on purpose: tests mint expired tokens. iat must still not be after exp.
		now = expiry.Add(-time.Minute)
	}
	return i.sign(i.claimsFor(citizenID, "", now, expiry))
}

// MintClaims signs an ID token whose claims are the issuer's defaults (iss, aud, iat = now,
// exp = now + TokenTTL) overridden by claims; a nil value deletes a default. It exists so tests
// can exercise a verifier with wrong audiences, wrong issuers, missing or malformed claims.
func (i *Issuer) MintClaims(claims map[string]any) (string, error) {
	now := i.now()
	c := map[string]any{
		"iss": i.issuer,
		"aud": i.clientID,
		"iat": now.Unix(),
		"exp": now.Add(i.ttl).Unix(),
	}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return i.sign(c)
}

func (i *Issuer) claimsFor(citizenID, nonce string, iat, exp time.Time) map[string]any {
	c := map[string]any{
		"iss": i.issuer,
		"sub": citizenID,
		"aud": i.clientID,
		"iat": iat.Unix(),
		"exp": exp.Unix(),
	}
	if who, ok := i.byID[citizenID]; ok {
		c["name"] = who.Name
	}
	if nonce != "" {
		c["nonce"] = nonce
	}
	if i.claim != "" && i.claim != "sub" {
		c[i.claim] = citizenID
	}
	return c
}

func (i *Issuer) sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devissuer: encode claims: %w", err)
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devissuer: sign: %w", err)
	}
	return jws.CompactSerialize()
}

func (i *Issuer) routes() http.Handler {
	mux := http.NewServeMux()
	p := i.prefix
	mux.HandleFunc("GET "+p+"/.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET "+p+"/jwks", i.jwks)
	mux.HandleFunc("GET "+p+"/authorize", i.authorizePage)
	// The picker form posts back to its own origin; refuse cross-origin browser posts.
	mux.Handle("POST "+p+"/authorize", http.NewCrossOriginProtection().Handler(http.HandlerFunc(i.authorizeSubmit)))
	mux.HandleFunc("POST "+p+"/token", i.token)
	return mux
}

func (i *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.issuer,
		"authorization_endpoint":                i.issuer + "/authorize",
		"token_endpoint":                        i.issuer + "/token",
		"jwks_uri":                              i.issuer + "/jwks",
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(jose.ES256)},
		"scopes_supported":                      []string{"openid", "profile"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "nonce", "name"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"none", "client_secret_basic", "client_secret_post"},
	})
}

func (i *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{i.public}})
}

// authRequest is a validated authorization request.
type authRequest struct {
	ClientID, RedirectURI, State, Nonce, Challenge, Scope string
}

// parseAuthRequest checks the parameters of an authorization request. Its errors are shown on the
// page, never sent to the redirect URI: until both client_id and redirect_uri are checked, sending
// the browser anywhere would make the issuer an open redirector.
func (i *Issuer) parseAuthRequest(v url.Values) (authRequest, error) {
	ar := authRequest{
		ClientID:    v.Get("client_id"),
		RedirectURI: v.Get("redirect_uri"),
		State:       v.Get("state"),
		Nonce:       v.Get("nonce"),
		Challenge:   v.Get("code_challenge"),
		Scope:       v.Get("scope"),
	}
	if ar.ClientID != i.clientID {
		return ar, errors.New("unknown client_id")
	}
	if err := i.checkRedirectURI(ar.RedirectURI); err != nil {
		return ar, err
	}
	if v.Get("response_type") != "code" {
		return ar, errors.New(`response_type must be "code"`)
	}
	if !hasScope(ar.Scope, "openid") {
		return ar, errors.New(`scope must include "openid"`)
	}
	if v.Get("code_challenge_method") != "S256" {
		return ar, errors.New(`PKCE is required: code_challenge_method must be "S256"`)
	}
	if !validChallenge(ar.Challenge) {
		return ar, errors.New("code_challenge must be 43 base64url characters")
	}
	if len(ar.State) > 512 || len(ar.Nonce) > 512 {
		return ar, errors.New("state and nonce must be at most 512 characters")
	}
	return ar, nil
}

// checkRedirectURI allows only absolute http(s) URLs on the issuer's own host name, so a code can
// only ever travel to the development machine's portal.
func (i *Issuer) checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return errors.New("redirect_uri must be an absolute URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return errors.New("redirect_uri must be an absolute http(s) URL without user info or fragment")
	}
	if !strings.EqualFold(u.Hostname(), i.host) {
		return errors.New("redirect_uri must be on the same host as the issuer")
	}
	return nil
}

func hasScope(scope, want string) bool {
	for s := range strings.FieldsSeq(scope) {
		if s == want {
			return true
		}
	}
	return false
}

func validChallenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil
}

func (i *Issuer) authorizePage(w http.ResponseWriter, r *http.Request) {
	ar, err := i.parseAuthRequest(r.URL.Query())
	if err != nil {
		i.renderError(w, http.StatusBadRequest, err.Error())
		return
	}
	i.renderPicker(w, ar)
}

func (i *Issuer) authorizeSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		i.renderError(w, http.StatusBadRequest, "malformed form")
		return
	}
	ar, err := i.parseAuthRequest(r.PostForm)
	if err != nil {
		i.renderError(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.PostForm.Get("action") == "cancel" {
		http.Redirect(w, r, withQuery(ar.RedirectURI, url.Values{
			"error": {"access_denied"}, "error_description": {"sign-in cancelled"}, "state": {ar.State}, "iss": {i.issuer},
		}), http.StatusSeeOther)
		return
	}
	who, ok := i.byID[r.PostForm.Get("citizen")]
	if !ok {
		i.renderError(w, http.StatusBadRequest, "choose one of the demo citizens")
		return
	}
	code, err := i.newCode(pendingCode{
		redirectURI: ar.RedirectURI,
		challenge:   ar.Challenge,
		nonce:       ar.Nonce,
		citizenID:   who.ID,
		expires:     i.now().Add(codeTTL),
	})
	if err != nil {
		i.renderError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	q := url.Values{"code": {code}, "iss": {i.issuer}}
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	http.Redirect(w, r, withQuery(ar.RedirectURI, q), http.StatusSeeOther)
}

func withQuery(base string, add url.Values) string {
	u, _ := url.Parse(base) // validated by checkRedirectURI
	q := u.Query()
	for k, vs := range add {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (i *Issuer) newCode(pc pendingCode) (string, error) {
	code := rand.Text() + rand.Text()
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	for c, p := range i.codes {
		if now.After(p.expires) {
			delete(i.codes, c)
		}
	}
	if len(i.codes) >= maxPendingCodes {
		return "", errors.New("too many pending sign-ins; try again in a minute")
	}
	i.codes[code] = pc
	return code, nil
}

// takeCode removes and returns a code: a code is spent by its first redemption attempt, whether
// or not that attempt succeeds.
func (i *Issuer) takeCode(code string) (pendingCode, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	pc, ok := i.codes[code]
	delete(i.codes, code)
	return pc, ok
}

func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return
	}
	f := r.PostForm
	clientID := f.Get("client_id")
	if id, _, ok := r.BasicAuth(); ok {
		// RFC 6749 §2.3.1: client credentials in the header are form-urlencoded.
		if dec, err := url.QueryUnescape(id); err == nil {
			id = dec
		}
		if clientID != "" && clientID != id {
			tokenError(w, http.StatusBadRequest, "invalid_request", "client_id in header and body differ")
			return
		}
		clientID = id
	}
	if clientID != i.clientID {
		tokenError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	if f.Get("grant_type") != "authorization_code" {
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "only authorization_code is supported")
		return
	}
	pc, ok := i.takeCode(f.Get("code"))
	if !ok {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "unknown or already used code")
		return
	}
	if i.now().After(pc.expires) {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code expired")
		return
	}
	if f.Get("redirect_uri") != pc.redirectURI {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
		return
	}
	verifier := f.Get("code_verifier")
	if len(verifier) < 43 || len(verifier) > 128 {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code_verifier must be 43 to 128 characters")
		return
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(pc.challenge)) != 1 {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return
	}
	now := i.now()
	idToken, err := i.sign(i.claimsFor(pc.citizenID, pc.nonce, now, now.Add(i.ttl)))
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error", "could not sign the ID token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		// The access token is opaque and accepted nowhere; clients use the ID token.
		"access_token": rand.Text(),
		"token_type":   "Bearer",
		"expires_in":   int(i.ttl / time.Second),
		"id_token":     idToken,
		"scope":        "openid",
	})
}

func tokenError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
