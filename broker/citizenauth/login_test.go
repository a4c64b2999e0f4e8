package citizenauth_test

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/citizenauth"

	"github.com/aperture-gov/aperture/broker/keys/keystest"
)

// portal is an env with the sign-in routes and a page that shows the session.
type portal struct {
	*env
	login *citizenauth.Login
	logs  *syncBuffer
}

// syncBuffer collects log output written by server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newPortal(t *testing.T) *portal {
	t.Helper()
	e := newEnv(t)
	cfg := e.config()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	e.sessions = e.sessionStore(t, e.sealer, logger)
	l, err := citizenauth.NewLogin(cfg, e.verifier(t, cfg), e.sessions, citizenauth.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	l.Routes(e.mux)
	whoami := func(w http.ResponseWriter, r *http.Request) {
		s, ok := l.Session(r)
		if !ok {
			http.Error(w, "signed out", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "citizen=%s name=%s path=%s", s.CitizenID, s.Name, r.URL.RequestURI())
	}
	e.mux.HandleFunc("GET /whoami", whoami)
	e.mux.HandleFunc("GET /cases/", whoami)
	e.mux.HandleFunc("GET /{$}", whoami)
	return &portal{env: e, login: l, logs: logs}
}

// browser is a cookie-keeping client; follow says whether it follows redirects.
func browser(t *testing.T, follow bool) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

var (
	formAction  = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// pick submits the development login page for citizen, as a browser would.
func pick(t *testing.T, c *http.Client, page, citizen string) *http.Response {
	t.Helper()
	if !strings.Contains(page, "DEVELOPMENT LOGIN — not for real citizens") {
		t.Fatalf("login page has no development banner:\n%s", page)
	}
	m := formAction.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form on the login page:\n%s", page)
	}
	form := url.Values{"citizen": {citizen}, "action": {"signin"}}
	for _, h := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(h[1], html.UnescapeString(h[2]))
	}
	resp, err := c.PostForm(html.UnescapeString(m[1]), form)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// startAndPick runs a sign-in up to the issuer's redirect to the callback and returns that URL.
func (p *portal) startAndPick(t *testing.T, c *http.Client, citizen string) string {
	t.Helper()
	resp, _ := get(t, c, p.base+"/login?return=/whoami")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET /login: %s", resp.Status)
	}
	authz := resp.Header.Get("Location")
	if !strings.HasPrefix(authz, p.iss.IssuerURL()+"/authorize?") {
		t.Fatalf("GET /login redirected to %s", authz)
	}
	q, _ := url.Parse(authz)
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if q.Query().Get(k) == "" {
			t.Errorf("authorization request has no %s", k)
		}
	}
	if q.Query().Get("code_challenge_method") != "S256" {
		t.Errorf("code_challenge_method = %q", q.Query().Get("code_challenge_method"))
	}
	resp, page := get(t, c, authz)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET authorize: %s: %s", resp.Status, page)
	}
	resp = pick(t, c, page, citizen)
	resp.Body.Close()
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(cb, p.base+"/auth/callback?") {
		t.Fatalf("issuer answered %s → %q", resp.Status, cb)
	}
	return cb
}

func cookie(c *http.Client, base, name string) *http.Cookie {
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

func setCookie(c *http.Client, base string, ck *http.Cookie) {
	u, _ := url.Parse(base)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/"}})
}

// sessionOf asks Login.Session directly with the browser's cookies.
func (p *portal) sessionOf(c *http.Client) (citizenauth.Session, bool) {
	r := httptest.NewRequest(http.MethodGet, p.base+"/", nil)
	u, _ := url.Parse(p.base)
	for _, ck := range c.Jar.Cookies(u) {
		r.AddCookie(ck)
	}
	return p.login.Session(r)
}

func TestLoginEndToEnd(t *testing.T) {
	p := newPortal(t)
	c := browser(t, true)

	resp, page := get(t, c, p.base+"/login?return="+url.QueryEscape("/cases/42?tab=consent"))
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/dev-oidc/authorize" {
		t.Fatalf("GET /login ended at %s with %s", resp.Request.URL, resp.Status)
	}
	resp = pick(t, c, page, demo[1].ID)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after sign-in: %s %s", resp.Status, body)
	}
	if got, want := string(body), "citizen="+demo[1].ID+" name="+demo[1].Name+" path=/cases/42?tab=consent"; got != want {
		t.Fatalf("landed on %q, want %q", got, want)
	}

	s, ok := p.sessionOf(c)
	if !ok || s.CitizenID != demo[1].ID || s.Name != demo[1].Name || s.Token == "" {
		t.Fatalf("Session() = %+v, %v", s, ok)
	}
	if d := s.Expiry.Sub(p.clock.Now()); d != time.Hour {
		t.Errorf("session expiry in %v, want 1h", d)
	}
	if cookie(c, p.base, citizenauth.SigninCookie) != nil {
		t.Error("sign-in cookie survived the callback")
	}
	// The session token is what the citizen API accepts.
	if id, err := p.verifier(t, p.config()).Authenticate(t.Context(), s.Token); err != nil || id != demo[1].ID {
		t.Errorf("Authenticate(session token) = %q, %v", id, err)
	}

	if strings.Contains(p.logs.String(), demo[1].ID) || strings.Contains(p.logs.String(), s.Token[:20]) {
		t.Errorf("logs carry the citizen id or token:\n%s", p.logs)
	}
}

func TestLoginCookies(t *testing.T) {
	p := newPortal(t)
	c := browser(t, false)
	resp, _ := get(t, c, p.base+"/login")
	signin := findSetCookie(t, resp, citizenauth.SigninCookie)
	if !signin.HttpOnly || signin.SameSite != http.SameSiteLaxMode || signin.Path != "/" || signin.Secure || signin.MaxAge != 600 {
		t.Errorf("sign-in cookie %+v", signin)
	}
	if strings.Contains(signin.Value, "/whoami") || len(signin.Value) < 60 {
		t.Errorf("sign-in cookie does not look sealed: %q", signin.Value)
	}

	cb := p.startAndPick(t, c, demo[0].ID)
	resp, _ = get(t, c, cb)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/whoami" {
		t.Fatalf("callback: %s → %q", resp.Status, resp.Header.Get("Location"))
	}
	sess := findSetCookie(t, resp, citizenauth.SessionCookie)
	if !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Path != "/" || sess.Secure || sess.MaxAge != 3600 {
		t.Errorf("session cookie %+v", sess)
	}

	// An https redirect URL makes both cookies Secure.
	cfg := p.config()
	cfg.RedirectURL = "https://portal.example/auth/callback"
	l, err := citizenauth.NewLogin(cfg, p.verifier(t, p.config()), p.sessions)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	l.Routes(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://portal.example/login", nil))
	if ck := findSetCookie(t, rec.Result(), citizenauth.SigninCookie); !ck.Secure {
		t.Errorf("sign-in cookie not Secure behind https: %+v", ck)
	}
}

func findSetCookie(t *testing.T, resp *http.Response, name string) *http.Cookie {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if ck.Name == name {
			return ck
		}
	}
	t.Fatalf("no Set-Cookie %s in %v", name, resp.Header.Values("Set-Cookie"))
	return nil
}

func TestLoginRefusesOpenRedirects(t *testing.T) {
	p := newPortal(t)
	for _, ret := range []string{
		"//evil.example",
		"//evil.example/path",
		"https://evil",
		"http://evil.example/",
		`/\evil.example`,
		`\\evil.example`,
		"/\t/evil.example",
		"/%2F%2Fevil.example",
		"javascript:alert(1)",
		"evil.example",
		"///evil.example",
	} {
		t.Run(ret, func(t *testing.T) {
			c := browser(t, false)
			resp, _ := get(t, c, p.base+"/login?return="+url.QueryEscape(ret))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("GET /login?return=%q: %s → %q", ret, resp.Status, resp.Header.Get("Location"))
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("refused request set cookies: %v", resp.Cookies())
			}
		})
	}
	t.Run("no return goes home", func(t *testing.T) {
		c := browser(t, false)
		resp, _ := get(t, c, p.base+"/login")
		_, page := get(t, c, resp.Header.Get("Location"))
		resp = pick(t, c, page, demo[0].ID)
		resp.Body.Close()
		resp, _ = get(t, c, resp.Header.Get("Location"))
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Fatalf("callback redirected to %q, want /", loc)
		}
	})
}

func TestCallbackRefusals(t *testing.T) {
	p := newPortal(t)

	type attempt struct {
		c  *http.Client
		cb string
	}
	for _, tc := range []struct {
		name   string
		reason string // the logged reason: each case must be refused by the check it targets
		setup  func(t *testing.T) attempt
	}{
		{"state mismatch", "state mismatch", func(t *testing.T) attempt {
			c := browser(t, false)
			u, _ := url.Parse(p.startAndPick(t, c, demo[0].ID))
			q := u.Query()
			q.Set("state", "forged")
			u.RawQuery = q.Encode()
			return attempt{c, u.String()}
		}},
		{"no state", "state mismatch", func(t *testing.T) attempt {
			c := browser(t, false)
			u, _ := url.Parse(p.startAndPick(t, c, demo[0].ID))
			q := u.Query()
			q.Del("state")
			u.RawQuery = q.Encode()
			return attempt{c, u.String()}
		}},
		{"missing sign-in cookie", "no sign-in cookie", func(t *testing.T) attempt {
			// The code reaches a browser that never started a sign-in (login CSRF).
			cb := p.startAndPick(t, browser(t, false), demo[0].ID)
			return attempt{browser(t, false), cb}
		}},
		{"tampered sign-in cookie", "sign-in cookie does not open", func(t *testing.T) attempt {
			c := browser(t, false)
			cb := p.startAndPick(t, c, demo[0].ID)
			ck := cookie(c, p.base, citizenauth.SigninCookie)
			b := []byte(ck.Value)
			b[len(b)/2] ^= 0x01
			if b[len(b)/2] == '.' || b[len(b)/2] == '=' {
				b[len(b)/2] = 'A'
			}
			ck.Value = string(b)
			setCookie(c, p.base, ck)
			return attempt{c, cb}
		}},
		{"sign-in cookie from another deployment", "sign-in cookie does not open", func(t *testing.T) attempt {
			// Same issuer, other Login sealing with another broker's key.
			o := keystest.Sealer(t)
			if err := o.Add(2, bytes.Repeat([]byte{3}, 32)); err != nil {
				t.Fatal(err)
			}
			if err := o.SetCurrent(2); err != nil {
				t.Fatal(err)
			}
			other, err := citizenauth.NewLogin(p.config(), p.verifier(t, p.config()), p.sessionStore(t, o, nil))
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			other.Routes(mux)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.base+"/login", nil))
			c := browser(t, false)
			cb := p.startAndPick(t, c, demo[0].ID)
			setCookie(c, p.base, findSetCookie(t, rec.Result(), citizenauth.SigninCookie))
			return attempt{c, cb}
		}},
		{"replayed code", "code exchange refused", func(t *testing.T) attempt {
			c := browser(t, false)
			cb := p.startAndPick(t, c, demo[0].ID)
			signin := cookie(c, p.base, citizenauth.SigninCookie)
			if resp, _ := get(t, c, cb); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("first callback: %s", resp.Status)
			}
			// An attacker holding both the callback URL and the sign-in cookie tries again.
			victim := browser(t, false)
			setCookie(victim, p.base, signin)
			return attempt{victim, cb}
		}},
		{"PKCE mismatch (code injected into another sign-in)", "code exchange refused", func(t *testing.T) attempt {
			attacker, victim := browser(t, false), browser(t, false)
			stolen, _ := url.Parse(p.startAndPick(t, attacker, demo[1].ID))
			own, _ := url.Parse(p.startAndPick(t, victim, demo[0].ID))
			// The victim's state (so the state check passes) with the attacker's code: only PKCE
			// can tell.
			q := own.Query()
			q.Set("code", stolen.Query().Get("code"))
			own.RawQuery = q.Encode()
			return attempt{victim, own.String()}
		}},
		{"expired sign-in", "sign-in cookie expired", func(t *testing.T) attempt {
			c := browser(t, false)
			cb := p.startAndPick(t, c, demo[0].ID)
			p.clock.Add(11 * time.Minute)
			t.Cleanup(func() { p.clock.Add(-11 * time.Minute) })
			return attempt{c, cb}
		}},
		{"cancelled at the issuer", "identity provider returned an error", func(t *testing.T) attempt {
			c := browser(t, false)
			resp, _ := get(t, c, p.base+"/login")
			authz, _ := url.Parse(resp.Header.Get("Location"))
			form := authz.Query()
			form.Set("action", "cancel")
			resp, err := c.PostForm(p.iss.IssuerURL()+"/authorize", form)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return attempt{c, resp.Header.Get("Location")}
		}},
		{"issuer mix-up", "issuer mismatch in authorization response", func(t *testing.T) attempt {
			c := browser(t, false)
			u, _ := url.Parse(p.startAndPick(t, c, demo[0].ID))
			q := u.Query()
			q.Set("iss", "https://other-idp.example")
			u.RawQuery = q.Encode()
			return attempt{c, u.String()}
		}},
		{"no code", "no code", func(t *testing.T) attempt {
			c := browser(t, false)
			u, _ := url.Parse(p.startAndPick(t, c, demo[0].ID))
			q := u.Query()
			q.Del("code")
			u.RawQuery = q.Encode()
			return attempt{c, u.String()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.setup(t)
			resp, body := get(t, a.c, a.cb)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("callback: %s %s", resp.Status, body)
			}
			if ck := findSetCookieOrNil(resp, citizenauth.SessionCookie); ck != nil {
				t.Errorf("refused callback set a session cookie")
			}
			if _, ok := p.sessionOf(a.c); ok {
				t.Errorf("refused callback left a session")
			}
			if got := lastLine(p.logs.String()); !strings.Contains(got, `reason="`+tc.reason+`"`) {
				t.Errorf("refused for another reason than %q: %s", tc.reason, got)
			}
		})
	}
	if strings.Contains(p.logs.String(), demo[0].ID) || strings.Contains(p.logs.String(), demo[1].ID) {
		t.Errorf("logs carry a citizen id:\n%s", p.logs)
	}
}

func findSetCookieOrNil(resp *http.Response, name string) *http.Cookie {
	for _, ck := range resp.Cookies() {
		if ck.Name == name && ck.MaxAge >= 0 {
			return ck
		}
	}
	return nil
}

func TestSessionEndsWithTokenAndLogout(t *testing.T) {
	p := newPortal(t)
	signIn := func(t *testing.T) *http.Client {
		c := browser(t, false)
		resp, _ := get(t, c, p.startAndPick(t, c, demo[0].ID))
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("callback: %s", resp.Status)
		}
		if _, ok := p.sessionOf(c); !ok {
			t.Fatal("no session after sign-in")
		}
		return c
	}

	t.Run("expired token ends the session", func(t *testing.T) {
		c := signIn(t)
		p.clock.Add(time.Hour + time.Second)
		defer p.clock.Add(-time.Hour - time.Second)
		if _, ok := p.sessionOf(c); ok {
			t.Fatal("session outlived its token")
		}
		if resp, _ := get(t, c, p.base+"/whoami"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/whoami after expiry: %s", resp.Status)
		}
	})

	t.Run("forged session cookie", func(t *testing.T) {
		c := browser(t, false)
		other, err := p.iss.MintClaims(map[string]any{"sub": demo[0].ID, "aud": "another-client"})
		if err != nil {
			t.Fatal(err)
		}
		setCookie(c, p.base, &http.Cookie{Name: citizenauth.SessionCookie, Value: other})
		if _, ok := p.sessionOf(c); ok {
			t.Fatal("a token for another client made a session")
		}
	})

	t.Run("logout clears the cookies", func(t *testing.T) {
		c := signIn(t)
		resp, err := c.Post(p.base+"/logout", "application/x-www-form-urlencoded", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("POST /logout: %s → %q", resp.Status, resp.Header.Get("Location"))
		}
		for _, name := range []string{citizenauth.SessionCookie, citizenauth.SigninCookie} {
			ck := findSetCookie(t, resp, name)
			if ck.MaxAge >= 0 || ck.Value != "" || ck.Path != "/" {
				t.Errorf("logout did not delete %s: %+v", name, ck)
			}
		}
		if _, ok := p.sessionOf(c); ok {
			t.Fatal("session survived logout")
		}
	})

	t.Run("logout is POST only and same-origin", func(t *testing.T) {
		c := signIn(t)
		resp, _ := get(t, c, p.base+"/logout")
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /logout: %s", resp.Status)
		}
		req, _ := http.NewRequest(http.MethodPost, p.base+"/logout", nil)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site POST /logout: %s", resp.Status)
		}
		if _, ok := p.sessionOf(c); !ok {
			t.Error("refused logout ended the session")
		}
	})
}

func TestNewLoginRefusesBadSetup(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(t, e.config())
	for _, tc := range []struct {
		name string
		cfg  func() citizenauth.Config
		v    *citizenauth.Verifier
		opts []citizenauth.LoginOption
		want string
	}{
		{"no verifier", e.config, nil, nil, "Verifier"},
		{"no redirect", func() citizenauth.Config { c := e.config(); c.RedirectURL = ""; return c }, v, nil, "redirect_url"},
		{"other client", func() citizenauth.Config { c := e.config(); c.ClientID = "x"; return c }, v, nil, "same issuer"},
		{"short key", e.config, v, []citizenauth.LoginOption{citizenauth.WithSigninKey([]byte("short"))}, "key"},
		{"bad after-logout", e.config, v, []citizenauth.LoginOption{citizenauth.WithAfterLogout("//evil.example")}, "local path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := citizenauth.NewLogin(tc.cfg(), tc.v, e.sessions, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewLogin() = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := citizenauth.NewLogin(e.config(), v, e.sessions, citizenauth.WithSigninKey(bytes.Repeat([]byte{7}, 32))); err != nil {
		t.Fatalf("32-byte key refused: %v", err)
	}
}

func TestSharedSigninKey(t *testing.T) {
	// Two portal replicas with one configured key: a sign-in started on one completes on the other.
	p := newPortal(t)
	key := bytes.Repeat([]byte{42}, 32)
	cfg := p.config()
	a, err := citizenauth.NewLogin(cfg, p.verifier(t, cfg), p.sessions, citizenauth.WithSigninKey(key))
	if err != nil {
		t.Fatal(err)
	}
	b, err := citizenauth.NewLogin(cfg, p.verifier(t, cfg), p.sessions, citizenauth.WithSigninKey(key))
	if err != nil {
		t.Fatal(err)
	}
	muxA, muxB := http.NewServeMux(), http.NewServeMux()
	a.Routes(muxA)
	b.Routes(muxB)

	rec := httptest.NewRecorder()
	muxA.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.base+"/login?return=/whoami", nil))
	signin := findSetCookie(t, rec.Result(), citizenauth.SigninCookie)
	c := browser(t, false)
	setCookie(c, p.base, signin)
	resp, page := get(t, c, rec.Header().Get("Location"))
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
	resp = pick(t, c, page, demo[0].ID)
	resp.Body.Close()

	req := httptest.NewRequest(http.MethodGet, resp.Header.Get("Location"), nil)
	req.AddCookie(signin)
	rec = httptest.NewRecorder()
	muxB.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/whoami" {
		t.Fatalf("callback on replica B: %d %s", rec.Code, rec.Body)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
