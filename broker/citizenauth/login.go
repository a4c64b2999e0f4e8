package citizenauth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Cookie names. The session cookie holds an opaque random session id; the ID token stays in the
// SessionStore on the server, so signing out ends the session for every copy of the cookie.
const (
	SessionCookie = "aperture_session"
	SigninCookie  = "aperture_signin"
)

// DefaultSigninTTL is how long a started sign-in may take to come back to the callback.
const DefaultSigninTTL = 10 * time.Minute

// Session is a signed-in citizen, from a re-verified ID token.
type Session struct {
	Token     string // the raw ID token, to call the citizen API with as a bearer token
	CitizenID string
	Name      string
	Expiry    time.Time
}

// LoginOption configures a Login.
type LoginOption func(*loginOptions)

type loginOptions struct {
	key         []byte
	signinTTL   time.Duration
	logger      *slog.Logger
	errorPage   func(w http.ResponseWriter, r *http.Request, status int, problem Problem, message string)
	afterLogout string
}

// WithSigninKey sets the AES key (16, 24 or 32 bytes) that seals the sign-in cookie. Without it
// the sign-in cookie is sealed with the SessionStore's sealer (the broker's sealing key), which every
// replica shares, so a sign-in started on one replica completes on another.
func WithSigninKey(key []byte) LoginOption {
	return func(o *loginOptions) { o.key = append([]byte(nil), key...) }
}

// WithSigninTTL sets how long a started sign-in stays valid (default DefaultSigninTTL).
func WithSigninTTL(d time.Duration) LoginOption {
	return func(o *loginOptions) { o.signinTTL = d }
}

// WithLogger sets the logger (default slog.Default()). Log lines never carry tokens or citizen ids.
func WithLogger(l *slog.Logger) LoginOption {
	return func(o *loginOptions) { o.logger = l }
}

// WithErrorHandler renders refused or failed sign-ins (default: plain text via http.Error): problem
// says what the citizen can do next, message is a fixed English sentence for the default page; neither
// contains request input.
func WithErrorHandler(fn func(w http.ResponseWriter, r *http.Request, status int, problem Problem, message string)) LoginOption {
	return func(o *loginOptions) { o.errorPage = fn }
}

// WithAfterLogout sets the local path POST /logout redirects to (default "/").
func WithAfterLogout(path string) LoginOption {
	return func(o *loginOptions) { o.afterLogout = path }
}

// Login is the portal's sign-in with the OAuth 2.0 authorization code flow, PKCE (S256), state
// and nonce. It is safe for concurrent use.
type Login struct {
	v            *Verifier
	sessions     *SessionStore
	oauth        oauth2.Config
	issuer       string
	sealer       cookieSealer
	secure       bool
	callbackPath string
	signinTTL    time.Duration
	log          *slog.Logger
	errorPage    func(w http.ResponseWriter, r *http.Request, status int, problem Problem, message string)
	afterLogout  string
}

// pending is a sign-in between GET /login and the callback, sealed in the sign-in cookie.
type pending struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Expires  int64  `json:"e"`
}

// NewLogin makes the portal's sign-in for cfg, which must name the same issuer and client as the
// Verifier and have a RedirectURL. Sessions are kept in store, shared by every portal replica.
func NewLogin(cfg Config, v *Verifier, store *SessionStore, opts ...LoginOption) (*Login, error) {
	if v == nil {
		return nil, errors.New("citizenauth: NewLogin needs a Verifier")
	}
	if store == nil {
		return nil, errors.New("citizenauth: NewLogin needs a SessionStore: sessions are kept server-side")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.RedirectURL == "" {
		return nil, errors.New("citizenauth: redirect_url is required for the portal's sign-in")
	}
	if cfg.Issuer != v.cfg.Issuer || cfg.ClientID != v.cfg.ClientID {
		return nil, errors.New("citizenauth: the sign-in and the verifier must use the same issuer and client_id")
	}
	redirect, _ := url.Parse(cfg.RedirectURL) // validated
	if strings.ContainsAny(redirect.Path, "{} \t") {
		return nil, errors.New("citizenauth: redirect_url path must not contain braces or spaces")
	}
	o := loginOptions{signinTTL: DefaultSigninTTL, afterLogout: "/"}
	for _, opt := range opts {
		opt(&o)
	}
	if o.signinTTL <= 0 || o.signinTTL > time.Hour {
		return nil, errors.New("citizenauth: sign-in TTL must be between 0 and 1h")
	}
	if _, ok := localPath(o.afterLogout); !ok {
		return nil, errors.New("citizenauth: after-logout path must be a local path starting with /")
	}
	var s cookieSealer = keySealer{store.sealer}
	if o.key != nil {
		var err error
		if s, err = newSealer(o.key); err != nil {
			return nil, err
		}
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.errorPage == nil {
		o.errorPage = func(w http.ResponseWriter, _ *http.Request, status int, _ Problem, message string) {
			http.Error(w, message, status)
		}
	}
	endpoint := v.provider.Endpoint()
	if cfg.ClientSecret == "" {
		// A public client identifies itself with client_id in the body (RFC 6749 §2.3.1).
		endpoint.AuthStyle = oauth2.AuthStyleInParams
	}
	return &Login{
		v:        v,
		sessions: store,
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     endpoint,
			RedirectURL:  cfg.RedirectURL,
			Scopes:       cfg.Scopes,
		},
		issuer:       cfg.Issuer,
		sealer:       s,
		secure:       redirect.Scheme == "https",
		callbackPath: redirect.EscapedPath(),
		signinTTL:    o.signinTTL,
		log:          o.logger.With("component", "citizenauth"),
		errorPage:    o.errorPage,
		afterLogout:  o.afterLogout,
	}, nil
}

// Routes registers GET /login (?return=/local/path), GET <RedirectURL path> (normally
// /auth/callback) and POST /logout. POST /logout also refuses cross-origin browser requests.
func (l *Login) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /login", l.login)
	mux.HandleFunc("GET "+l.callbackPath, l.callback)
	mux.Handle("POST /logout", http.NewCrossOriginProtection().Handler(http.HandlerFunc(l.logout)))
}

// CallbackPath is the path the callback is registered under (the RedirectURL's path).
func (l *Login) CallbackPath() string { return l.callbackPath }

// LoginURL is the local URL that starts a sign-in returning to returnPath afterwards; a
// returnPath that is not a local path is replaced by "/".
func (l *Login) LoginURL(returnPath string) string {
	p, ok := localPath(returnPath)
	if !ok {
		p = "/"
	}
	return "/login?return=" + url.QueryEscape(p)
}

// Session returns the signed-in citizen. It looks the session cookie's id up in the SessionStore
// and re-verifies the ID token kept there, so a session that was signed out of, or whose token
// expired or was not issued by the configured issuer for this client, is no session. A store that
// cannot be read means signed out (fail closed), with a log line.
func (l *Login) Session(r *http.Request) (Session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return Session{}, false
	}
	token, ok, err := l.sessions.get(r.Context(), c.Value)
	if err != nil {
		l.log.Error("session store unavailable; request treated as signed out", "err", err)
		return Session{}, false
	}
	if !ok {
		return Session{}, false
	}
	id, err := l.v.Verify(r.Context(), token)
	if err != nil {
		if !errors.Is(err, ErrTokenExpired) {
			l.log.Warn("session token refused", "reason", err.Error())
		}
		return Session{}, false
	}
	return Session{Token: token, CitizenID: id.CitizenID, Name: id.Name, Expiry: id.Expiry}, true
}

func (l *Login) login(w http.ResponseWriter, r *http.Request) {
	ret, ok := localPath(r.URL.Query().Get("return"))
	if !ok {
		l.fail(w, r, http.StatusBadRequest, ProblemBadReturn, "The return address must be a page on this site.", "return path is not a local path")
		return
	}
	p := pending{
		State:    rand.Text(),
		Nonce:    rand.Text(),
		Verifier: oauth2.GenerateVerifier(),
		Return:   ret,
		Expires:  l.v.now().Add(l.signinTTL).Unix(),
	}
	b, err := json.Marshal(p)
	if err != nil {
		l.fail(w, r, http.StatusInternalServerError, ProblemUnavailable, "Sign-in could not be started.", "encode pending sign-in")
		return
	}
	sealed, err := l.sealer.seal(SigninCookie, b)
	if err != nil {
		l.fail(w, r, http.StatusServiceUnavailable, ProblemUnavailable, "Sign-in could not be started.", "seal pending sign-in", "err", err.Error())
		return
	}
	http.SetCookie(w, l.cookie(SigninCookie, sealed, int(l.signinTTL/time.Second)))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, l.oauth.AuthCodeURL(p.State, oidc.Nonce(p.Nonce), oauth2.S256ChallengeOption(p.Verifier)), http.StatusFound)
}

func (l *Login) callback(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	c, err := r.Cookie(SigninCookie)
	// The pending sign-in is single-use whatever happens next.
	http.SetCookie(w, l.cookie(SigninCookie, "", -1))
	if err != nil {
		l.fail(w, r, http.StatusBadRequest, ProblemExpired, "Your sign-in was not found or has expired. Please sign in again.", "no sign-in cookie")
		return
	}
	var p pending
	plain, err := l.sealer.open(SigninCookie, c.Value)
	if err == nil {
		err = json.Unmarshal(plain, &p)
	}
	if err != nil {
		l.fail(w, r, http.StatusBadRequest, ProblemExpired, "Your sign-in was not found or has expired. Please sign in again.", "sign-in cookie does not open")
		return
	}
	if l.v.now().Unix() > p.Expires {
		l.fail(w, r, http.StatusBadRequest, ProblemExpired, "Your sign-in took too long. Please sign in again.", "sign-in cookie expired")
		return
	}
	q := r.URL.Query()
	if q.Get("error") != "" {
		l.fail(w, r, http.StatusBadRequest, ProblemCancelled, "The sign-in was cancelled or refused by the identity provider.", "identity provider returned an error")
		return
	}
	if p.State == "" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(p.State)) != 1 {
		l.fail(w, r, http.StatusBadRequest, ProblemRetry, "This sign-in does not match the one started in this browser. Please sign in again.", "state mismatch")
		return
	}
	// RFC 9207: an authorization response naming another issuer is a mix-up attack.
	if iss := q.Get("iss"); iss != "" && iss != l.issuer {
		l.fail(w, r, http.StatusBadRequest, ProblemRetry, "The sign-in came back from an unexpected identity provider.", "issuer mismatch in authorization response")
		return
	}
	code := q.Get("code")
	if code == "" {
		l.fail(w, r, http.StatusBadRequest, ProblemRetry, "The sign-in response is incomplete. Please sign in again.", "no code")
		return
	}
	ctx := oidc.ClientContext(r.Context(), l.v.client)
	tok, err := l.oauth.Exchange(ctx, code, oauth2.VerifierOption(p.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			l.fail(w, r, http.StatusBadRequest, ProblemRetry, "The sign-in could not be completed. Please sign in again.",
				"code exchange refused", "oauth_error", safeErrorCode(re.ErrorCode))
			return
		}
		l.fail(w, r, http.StatusBadGateway, ProblemUnavailable, "The identity provider could not be reached. Please try again later.", "code exchange failed")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		l.fail(w, r, http.StatusBadGateway, ProblemUnavailable, "The identity provider did not return an ID token.", "no id_token in token response")
		return
	}
	id, nonce, err := l.v.verify(ctx, raw)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrIssuerUnavailable) {
			status = http.StatusBadGateway
		}
		l.fail(w, r, status, ProblemRetry, "The sign-in could not be verified. Please sign in again.", err.Error())
		return
	}
	if subtle.ConstantTimeCompare([]byte(nonce), []byte(p.Nonce)) != 1 {
		l.fail(w, r, http.StatusBadRequest, ProblemRetry, "The sign-in could not be verified. Please sign in again.", "nonce mismatch")
		return
	}
	if id.Expiry.Sub(l.v.now()) < time.Second {
		l.fail(w, r, http.StatusBadRequest, ProblemExpired, "The sign-in expired. Please sign in again.", "id token expires now")
		return
	}
	sid, ends, err := l.sessions.create(r.Context(), raw, id.Expiry)
	if err != nil {
		l.fail(w, r, http.StatusServiceUnavailable, ProblemUnavailable, "The sign-in could not be completed. Please try again later.", "session not stored", "err", err.Error())
		return
	}
	maxAge := int((ends.Sub(l.v.now()) + time.Second - 1) / time.Second)
	http.SetCookie(w, l.cookie(SessionCookie, sid, maxAge))
	ret, ok := localPath(p.Return)
	if !ok {
		ret = "/"
	}
	l.log.Info("citizen signed in")
	redirectLocal(w, ret)
}

// logout ends the session in the store before it deletes the cookies, so a copy of the cookie (another
// tab, a stolen value) is dead too. If the store cannot be written the cookie is kept and the citizen
// told to try again: clearing it would look like a sign-out that did not happen.
func (l *Login) logout(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		if err := l.sessions.end(r.Context(), c.Value); err != nil {
			l.log.Error("sign-out failed: session not ended", "err", err)
			l.errorPage(w, r, http.StatusServiceUnavailable, ProblemSignOut, "You could not be signed out. Please try again.")
			return
		}
	}
	http.SetCookie(w, l.cookie(SessionCookie, "", -1))
	http.SetCookie(w, l.cookie(SigninCookie, "", -1))
	redirectLocal(w, l.afterLogout)
}

// cookie makes one of the package's cookies; maxAge < 0 deletes it.
func (l *Login) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   l.secure,
		SameSite: http.SameSiteLaxMode,
	}
}

func (l *Login) fail(w http.ResponseWriter, r *http.Request, status int, problem Problem, message, reason string, attrs ...any) {
	l.log.Warn("sign-in refused", append([]any{"reason", reason, "status", status, "problem", string(problem)}, attrs...)...)
	l.errorPage(w, r, status, problem, message)
}

// Problem is what went wrong with a sign-in, for the page that tells the citizen what to do next.
type Problem string

const (
	// ProblemCancelled: the citizen (or the identity provider) cancelled the sign-in.
	ProblemCancelled Problem = "cancelled"
	// ProblemExpired: the sign-in took too long or its cookie is gone; start again.
	ProblemExpired Problem = "expired"
	// ProblemRetry: the sign-in did not check out (another tab, an incomplete answer); start again.
	ProblemRetry Problem = "retry"
	// ProblemUnavailable: the identity provider or the session store failed; try again later.
	ProblemUnavailable Problem = "unavailable"
	// ProblemBadReturn: the page to return to is not on this site.
	ProblemBadReturn Problem = "bad-return"
	// ProblemSignOut: the sign-out could not be recorded, so the citizen is still signed in.
	ProblemSignOut Problem = "sign-out"
)

// redirectLocal answers 303 See Other to a path already checked by localPath. It sets Location
// as is, because http.Redirect rewrites relative targets and cleans paths.
func redirectLocal(w http.ResponseWriter, path string) {
	w.Header().Set("Location", path)
	w.WriteHeader(http.StatusSeeOther)
}

// localPath accepts "" (meaning "/") or a path on this site: it starts with a single "/", has no
// scheme, host, backslash or control character. "//evil.example", "/\evil.example" and
// "https://evil" are all refused, because browsers treat them as other sites.
func localPath(p string) (string, bool) {
	if p == "" {
		return "/", true
	}
	if len(p) > 2048 || p[0] != '/' || strings.HasPrefix(p, "//") {
		return "", false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' || c == ' ' {
			return "", false
		}
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "", false
	}
	return p, true
}

// safeErrorCode passes through an OAuth error code only if it is a plain token, since the
// identity provider's response is not trusted for what ends up in logs.
func safeErrorCode(code string) string {
	if code == "" || len(code) > 64 {
		return "unknown"
	}
	for _, c := range code {
		if (c < 'a' || c > 'z') && c != '_' {
			return "unknown"
		}
	}
	return code
}
