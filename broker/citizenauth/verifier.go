package citizenauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Errors returned by Verify and Authenticate. Every token rejection matches ErrInvalidToken with
// errors.Is; ErrTokenExpired and ErrNoCitizenID narrow it. ErrIssuerUnavailable means the token
// could not be checked (the issuer's keys could not be fetched), not that it is bad.
var (
	ErrInvalidToken      = errors.New("citizenauth: invalid ID token")
	ErrTokenExpired      = errors.New("citizenauth: ID token expired")
	ErrNoCitizenID       = errors.New("citizenauth: ID token carries no valid citizen id")
	ErrIssuerUnavailable = errors.New("citizenauth: identity provider unavailable")
)

// TokenError is the error Verify returns for a token it refuses. Its message names the kind of
// problem only; the token, its claims and the underlying library error text are never part of it
// (the cause stays reachable through errors.As/Unwrap for debugging in tests).
type TokenError struct {
	Kind   error  // ErrInvalidToken, ErrTokenExpired, ErrNoCitizenID or ErrIssuerUnavailable
	Reason string // a fixed phrase, safe to log and to show
	cause  error
}

func (e *TokenError) Error() string {
	if e.Reason == "" {
		return e.Kind.Error()
	}
	return e.Kind.Error() + ": " + e.Reason
}

// Is makes every TokenError except an unavailable issuer match ErrInvalidToken.
func (e *TokenError) Is(target error) bool {
	if target == e.Kind {
		return true
	}
	return target == ErrInvalidToken && e.Kind != ErrIssuerUnavailable
}

func (e *TokenError) Unwrap() error { return e.cause }

// maxTokenSize bounds the work done on a token: real ID tokens are a few kilobytes at most.
const maxTokenSize = 16 << 10

var citizenIDPattern = regexp.MustCompile(`^[0-9]{10}$`)

// ValidCitizenID reports whether id is a citizen id as the broker uses it: exactly 10 ASCII digits.
func ValidCitizenID(id string) bool { return citizenIDPattern.MatchString(id) }

// Identity is what a verified ID token says about the citizen.
type Identity struct {
	CitizenID string
	Name      string    // the "name" claim, "" if absent
	Expiry    time.Time // the token's exp
}

// Option configures a Verifier.
type Option func(*verifierOptions)

type verifierOptions struct {
	now    func() time.Time
	client *http.Client
}

// WithClock sets the clock used to check token expiry (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *verifierOptions) { o.now = now }
}

// WithHTTPClient sets the client for discovery, JWKS and token requests to the issuer. It takes
// precedence over Config.CAFile.
func WithHTTPClient(c *http.Client) Option {
	return func(o *verifierOptions) { o.client = c }
}

// Verifier checks citizens' ID tokens. It is safe for concurrent use.
type Verifier struct {
	cfg      Config
	now      func() time.Time
	client   *http.Client
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

// NewVerifier validates cfg and runs OpenID Connect discovery against cfg.Issuer, so a wrong or
// unreachable issuer is reported at startup rather than at the first citizen's request.
func NewVerifier(ctx context.Context, cfg Config, opts ...Option) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := verifierOptions{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	client := o.client
	if client == nil {
		var err error
		if client, err = httpClient(cfg.CAFile); err != nil {
			return nil, err
		}
	}
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, client), cfg.Issuer)
	if err != nil {
		var mismatch *oidc.IssuerMismatchError
		if errors.As(err, &mismatch) {
			return nil, fmt.Errorf("citizenauth: issuer %s announces itself as %q in its discovery document; set issuer to exactly that URL", cfg.Issuer, mismatch.Discovered)
		}
		return nil, fmt.Errorf("citizenauth: OpenID Connect discovery at %s/.well-known/openid-configuration failed (is the issuer URL right and reachable?): %w",
			strings.TrimSuffix(cfg.Issuer, "/"), err)
	}
	now, skew := o.now, cfg.ClockSkew
	verifier := provider.VerifierContext(oidc.ClientContext(context.Background(), client), &oidc.Config{
		ClientID: cfg.ClientID,
		// go-oidc refuses a token whose exp is before Now; running the clock back by the skew
		// accepts tokens up to ClockSkew past their expiry.
		Now: func() time.Time { return now().Add(-skew) },
	})
	return &Verifier{cfg: cfg, now: now, client: client, provider: provider, verifier: verifier}, nil
}

func httpClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{Timeout: 30 * time.Second}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("citizenauth: ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("citizenauth: ca_file %s holds no PEM certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// Issuer returns the configured issuer URL.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// Authenticate returns the citizen id of a valid ID token. It accepts the raw token or an HTTP
// Authorization value ("Bearer <token>"). Errors are *TokenError values (see Verify).
func (v *Verifier) Authenticate(ctx context.Context, rawToken string) (citizenID string, err error) {
	if len(rawToken) > 7 && strings.EqualFold(rawToken[:7], "bearer ") {
		rawToken = strings.TrimSpace(rawToken[7:])
	}
	id, err := v.Verify(ctx, rawToken)
	if err != nil {
		return "", err
	}
	return id.CitizenID, nil
}

// Verify checks the token's signature against the issuer's keys, its issuer, audience (ClientID)
// and expiry, and reads the citizen id from the configured claim: a JSON string of exactly 10
// ASCII digits. Every error is a *TokenError.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (Identity, error) {
	id, _, err := v.verify(ctx, rawToken)
	return id, err
}

// verify is Verify that also returns the token's nonce, for the sign-in callback.
func (v *Verifier) verify(ctx context.Context, rawToken string) (id Identity, nonce string, err error) {
	if rawToken == "" {
		return Identity{}, "", &TokenError{Kind: ErrInvalidToken, Reason: "no token"}
	}
	if len(rawToken) > maxTokenSize {
		return Identity{}, "", &TokenError{Kind: ErrInvalidToken, Reason: "token too large"}
	}
	tok, err := v.verifier.Verify(ctx, rawToken)
	if err != nil {
		return Identity{}, "", classify(err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return Identity{}, "", &TokenError{Kind: ErrInvalidToken, Reason: "malformed claims", cause: err}
	}
	raw, ok := claims[v.cfg.CitizenClaim]
	if !ok {
		return Identity{}, "", &TokenError{Kind: ErrNoCitizenID, Reason: "claim " + v.cfg.CitizenClaim + " missing"}
	}
	citizenID, ok := raw.(string)
	if !ok || !ValidCitizenID(citizenID) {
		return Identity{}, "", &TokenError{Kind: ErrNoCitizenID, Reason: "claim " + v.cfg.CitizenClaim + " is not a 10-digit citizen id"}
	}
	name, _ := claims["name"].(string)
	return Identity{CitizenID: citizenID, Name: name, Expiry: tok.Expiry}, tok.Nonce, nil
}

// classify turns a go-oidc error into a TokenError with a fixed reason. go-oidc's messages carry
// the token's issuer, audience and expiry; they are kept as the cause but not in the message.
func classify(err error) *TokenError {
	var expired *oidc.TokenExpiredError
	msg := err.Error()
	switch {
	case errors.As(err, &expired):
		return &TokenError{Kind: ErrTokenExpired, cause: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "fetching keys"):
		return &TokenError{Kind: ErrIssuerUnavailable, Reason: "could not fetch the issuer's signing keys", cause: err}
	case strings.Contains(msg, "malformed jwt"):
		return &TokenError{Kind: ErrInvalidToken, Reason: "malformed token or unsupported signing algorithm", cause: err}
	case strings.Contains(msg, "verify signature"), strings.Contains(msg, "not signed"), strings.Contains(msg, "multiple signatures"):
		return &TokenError{Kind: ErrInvalidToken, Reason: "signature not valid for the issuer's keys", cause: err}
	case strings.Contains(msg, "different provider"):
		return &TokenError{Kind: ErrInvalidToken, Reason: "issued by another issuer", cause: err}
	case strings.Contains(msg, "expected audience"):
		return &TokenError{Kind: ErrInvalidToken, Reason: "issued for another client", cause: err}
	case strings.Contains(msg, "nbf"):
		return &TokenError{Kind: ErrInvalidToken, Reason: "not valid yet", cause: err}
	}
	return &TokenError{Kind: ErrInvalidToken, Reason: "verification failed", cause: err}
}
