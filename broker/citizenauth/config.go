// Package citizenauth authenticates citizens with OpenID Connect.
//
// A Verifier checks ID tokens (signature against the issuer's JWKS, issuer, audience, expiry — all
// by go-oidc) and maps one configured claim to the 10-digit citizen id; the citizen gRPC API uses it
// as its Authenticator. A Login is the citizen portal's sign-in: the OAuth 2.0 authorization code
// flow with PKCE (S256), state and nonce. The verified ID token is kept server-side in a SessionStore
// (NATS JetStream KV, sealed, expiring with the token); the HttpOnly session cookie carries only an
// opaque random session id. The token is re-verified on every request, so an expired token ends the
// session, and signing out deletes the record, so a copied cookie is dead afterwards.
//
// Tokens and citizen ids never appear in errors or log lines produced by this package.
//
// In development the issuer is broker/citizenauth/devissuer, so the same code runs in dev and
// production.
package citizenauth

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config configures citizen authentication. The zero values of CitizenClaim, Scopes and ClockSkew
// mean their defaults.
type Config struct {
	Issuer       string        `yaml:"issuer"`        // OIDC issuer URL (discovery at Issuer/.well-known/openid-configuration)
	ClientID     string        `yaml:"client_id"`     // expected audience of ID tokens, and the portal's OAuth client id
	ClientSecret string        `yaml:"client_secret"` // the portal's client secret ("" for a public client with PKCE)
	CitizenClaim string        `yaml:"citizen_claim"` // claim holding the 10-digit citizen id; default "sub"
	RedirectURL  string        `yaml:"redirect_url"`  // the portal's callback URL, e.g. https://portal.example/auth/callback
	CAFile       string        `yaml:"ca_file"`       // optional extra CA to trust for the issuer
	Scopes       []string      `yaml:"scopes"`        // default openid
	ClockSkew    time.Duration `yaml:"clock_skew"`    // default 0
	// InsecureLoopbackIssuer allows a plain-http Issuer on a loopback host (127.0.0.1, ::1,
	// localhost), for development only: `aperture dev` serves its development issuer that way. The
	// broker command sets it from --oidc-insecure-loopback; it is never the default.
	InsecureLoopbackIssuer bool `yaml:"insecure_loopback_issuer"`
}

// InsecureLoopbackFlag is the command-line flag that sets Config.InsecureLoopbackIssuer; errors name
// it so an operator knows what to change.
const InsecureLoopbackFlag = "--oidc-insecure-loopback"

// DefaultCitizenClaim is the claim read when Config.CitizenClaim is empty.
const DefaultCitizenClaim = "sub"

// MaxClockSkew bounds Config.ClockSkew: more than this is a broken clock, not skew.
const MaxClockSkew = 5 * time.Minute

// Validate reports the first problem with the configuration. RedirectURL is optional here (a
// Verifier does not need it); NewLogin requires it.
func (c Config) Validate() error {
	if c.Issuer == "" {
		return errors.New("citizenauth: issuer is required")
	}
	if err := checkIssuerURL(c.Issuer, c.InsecureLoopbackIssuer); err != nil {
		return err
	}
	if strings.TrimSpace(c.ClientID) == "" {
		return errors.New("citizenauth: client_id is required")
	}
	if c.CitizenClaim != "" && strings.TrimSpace(c.CitizenClaim) != c.CitizenClaim {
		return errors.New("citizenauth: citizen_claim must not have surrounding spaces")
	}
	if c.RedirectURL != "" {
		if err := checkRedirectURL(c.RedirectURL); err != nil {
			return err
		}
	}
	if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, "openid") {
		return errors.New(`citizenauth: scopes must include "openid"`)
	}
	for _, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			return fmt.Errorf("citizenauth: scope %q is not a valid scope token", s)
		}
	}
	if c.ClockSkew < 0 {
		return errors.New("citizenauth: clock_skew must not be negative")
	}
	if c.ClockSkew > MaxClockSkew {
		return fmt.Errorf("citizenauth: clock_skew must be at most %s", MaxClockSkew)
	}
	return nil
}

// withDefaults fills in the documented defaults.
func (c Config) withDefaults() Config {
	if c.CitizenClaim == "" {
		c.CitizenClaim = DefaultCitizenClaim
	}
	if len(c.Scopes) == 0 {
		c.Scopes = []string{"openid"}
	} else {
		c.Scopes = slices.Clone(c.Scopes)
	}
	return c
}

// checkIssuerURL requires https: an ID token's authenticity rests on the JWKS fetched from the
// issuer, which plain http cannot protect. Plain http is accepted only for a loopback host and only
// when insecureLoopback is set explicitly (development, tests).
func checkIssuerURL(raw string, insecureLoopback bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("citizenauth: issuer is not a valid URL")
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("citizenauth: issuer must be an absolute https URL")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("citizenauth: issuer must not have user info, query or fragment")
	}
	if u.Scheme == "http" {
		if !isLoopback(u.Hostname()) {
			return errors.New("citizenauth: issuer must use https (plain http is allowed only for a loopback host with " + InsecureLoopbackFlag + ", for development)")
		}
		if !insecureLoopback {
			return errors.New("citizenauth: issuer must use https; a plain-http issuer on a loopback host needs " + InsecureLoopbackFlag + " (insecure_loopback_issuer), for development only")
		}
	}
	return nil
}

func checkRedirectURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("citizenauth: redirect_url is not a valid URL")
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("citizenauth: redirect_url must be an absolute http(s) URL")
	}
	if u.User != nil || u.Fragment != "" {
		return errors.New("citizenauth: redirect_url must not have user info or a fragment")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return errors.New("citizenauth: redirect_url must use https (plain http is allowed only for a loopback host)")
	}
	if p := u.Path; p == "" || p == "/" {
		return errors.New("citizenauth: redirect_url must have a callback path, e.g. /auth/callback")
	}
	return nil
}

// isLoopback accepts "localhost" and loopback IP addresses. Names under .localhost are not
// accepted: whether they resolve to loopback is up to the resolver, and over plain http that is
// exactly what must not be left to chance.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
