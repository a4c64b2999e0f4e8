package devissuer_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/aperture-gov/aperture/broker/citizenauth/devissuer"
)

var demo = []devissuer.Citizen{
	{ID: "0101901234", Name: "Anna Jensen", Note: "moving house"},
	{ID: "0202855678", Name: "Bo Nielsen"},
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	base  string
	iss   *devissuer.Issuer
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	base := "http://" + srv.Listener.Addr().String()
	clk := &clock{t: time.Now()}
	iss, err := devissuer.New(devissuer.Options{Issuer: base + "/dev-oidc", ClientID: "portal", Citizens: demo, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(iss.MountPath(), iss.Handler())
	srv.Start()
	t.Cleanup(srv.Close)
	return &env{base: base, iss: iss, clock: clk}
}

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func TestNewRefusesBadOptions(t *testing.T) {
	good := devissuer.Options{Issuer: "http://127.0.0.1:8080/dev-oidc", ClientID: "portal", Citizens: demo}
	for _, tc := range []struct {
		name string
		edit func(*devissuer.Options)
		want string
	}{
		{"no issuer", func(o *devissuer.Options) { o.Issuer = "" }, "issuer"},
		{"relative issuer", func(o *devissuer.Options) { o.Issuer = "/dev-oidc" }, "issuer"},
		{"issuer with query", func(o *devissuer.Options) { o.Issuer = "http://127.0.0.1/x?a=b" }, "issuer"},
		{"no client", func(o *devissuer.Options) { o.ClientID = "" }, "client"},
		{"no citizens", func(o *devissuer.Options) { o.Citizens = nil }, "citizen"},
		{"short id", func(o *devissuer.Options) { o.Citizens = []devissuer.Citizen{{ID: "123", Name: "X"}} }, "10 digits"},
		{"no name", func(o *devissuer.Options) { o.Citizens = []devissuer.Citizen{{ID: "0101901234"}} }, "name"},
		{"duplicate", func(o *devissuer.Options) { o.Citizens = append(demo, demo[0]) }, "duplicate"},
		{"negative ttl", func(o *devissuer.Options) { o.TokenTTL = -time.Second }, "TTL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			_, err := devissuer.New(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New() error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := devissuer.New(good); err != nil {
		t.Fatalf("good options refused: %v", err)
	}
}

func TestDiscoveryAndMount(t *testing.T) {
	e := newEnv(t)
	if got := e.iss.MountPath(); got != "/dev-oidc/" {
		t.Fatalf("MountPath() = %q", got)
	}
	resp, err := http.Get(e.base + "/dev-oidc/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"issuer":                 e.base + "/dev-oidc",
		"authorization_endpoint": e.base + "/dev-oidc/authorize",
		"token_endpoint":         e.base + "/dev-oidc/token",
		"jwks_uri":               e.base + "/dev-oidc/jwks",
	} {
		if doc[k] != want {
			t.Errorf("%s = %v, want %s", k, doc[k], want)
		}
	}
	// Outside the prefix nothing is served.
	resp2, err := http.Get(e.base + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotFound {
		t.Errorf("discovery outside the prefix: %s", resp2.Status)
	}
}

func challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

const verifier = "dBjftJeZ4CVP-mJ92K9pbkAaD0sZVXv4yIoYtn8oD1cQuAI2A"

func (e *env) authParams() url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {"portal"},
		"redirect_uri":          {e.base + "/auth/callback"},
		"scope":                 {"openid profile"},
		"state":                 {"st4te"},
		"nonce":                 {"n0nce"},
		"code_challenge":        {challenge(verifier)},
		"code_challenge_method": {"S256"},
	}
}

func TestAuthorizePage(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.base + "/dev-oidc/authorize?" + e.authParams().Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authorize: %s: %s", resp.Status, page)
	}
	for _, want := range []string{
		"DEVELOPMENT LOGIN — not for real citizens",
		`<html lang="en">`,
		`<legend>`,
		`<label for="citizen-0">`, `<label for="citizen-1">`,
		"Anna Jensen", "0202855678", "moving house",
		`type="submit"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestAuthorizeRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		edit func(url.Values)
		want string
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "other") }, "client_id"},
		{"redirect to another host", func(v url.Values) { v.Set("redirect_uri", "http://evil.example/cb") }, "same host"},
		{"relative redirect", func(v url.Values) { v.Set("redirect_uri", "/cb") }, "redirect_uri"},
		{"no PKCE", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "PKCE"},
		{"plain PKCE", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "PKCE"},
		{"no openid scope", func(v url.Values) { v.Set("scope", "profile") }, "openid"},
		{"token flow", func(v url.Values) { v.Set("response_type", "token") }, "response_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := e.authParams()
			tc.edit(v)
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				var resp *http.Response
				var err error
				if method == http.MethodGet {
					resp, err = noFollow.Get(e.base + "/dev-oidc/authorize?" + v.Encode())
				} else {
					v.Set("citizen", demo[0].ID)
					resp, err = noFollow.PostForm(e.base+"/dev-oidc/authorize", v)
				}
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
					t.Fatalf("%s: %s, Location %q", method, resp.Status, resp.Header.Get("Location"))
				}
				if !strings.Contains(html.UnescapeString(string(body)), tc.want) || !strings.Contains(string(body), devissuer.Banner) {
					t.Errorf("%s: error page lacks %q or the banner:\n%s", method, tc.want, body)
				}
			}
		})
	}
}

// authorize posts the picker form for citizen and returns the code from the redirect.
func (e *env) authorize(t *testing.T, citizen string) string {
	t.Helper()
	v := e.authParams()
	v.Set("citizen", citizen)
	v.Set("action", "signin")
	resp, err := noFollow.PostForm(e.base+"/dev-oidc/authorize", v)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("authorize POST: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != e.base+"/auth/callback" {
		t.Fatalf("redirected to %s", got)
	}
	if loc.Query().Get("state") != "st4te" || loc.Query().Get("iss") != e.iss.IssuerURL() {
		t.Fatalf("redirect query %v", loc.Query())
	}
	return loc.Query().Get("code")
}

type tokenResponse struct {
	IDToken     string `json:"id_token"`
	AccessToken string `json:"access_token"`
	Error       string `json:"error"`
}

func (e *env) redeem(t *testing.T, form url.Values) (int, tokenResponse) {
	t.Helper()
	resp, err := http.PostForm(e.base+"/dev-oidc/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, tr
}

func (e *env) tokenForm(code string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"client_id":     {"portal"},
		"code":          {code},
		"redirect_uri":  {e.base + "/auth/callback"},
		"code_verifier": {verifier},
	}
}

func TestTokenEndpoint(t *testing.T) {
	e := newEnv(t)

	t.Run("code flow issues a signed ID token", func(t *testing.T) {
		status, tr := e.redeem(t, e.tokenForm(e.authorize(t, demo[0].ID)))
		if status != http.StatusOK || tr.IDToken == "" || tr.AccessToken == "" {
			t.Fatalf("token: %d %+v", status, tr)
		}
		claims := verifyWithJWKS(t, e, tr.IDToken)
		for k, want := range map[string]any{
			"iss": e.iss.IssuerURL(), "sub": demo[0].ID, "aud": "portal", "name": demo[0].Name, "nonce": "n0nce",
		} {
			if claims[k] != want {
				t.Errorf("claim %s = %v, want %v", k, claims[k], want)
			}
		}
		iat, exp := claims["iat"].(float64), claims["exp"].(float64)
		if exp-iat != 3600 {
			t.Errorf("exp - iat = %v, want 3600", exp-iat)
		}
	})

	t.Run("code is single-use", func(t *testing.T) {
		code := e.authorize(t, demo[1].ID)
		if status, _ := e.redeem(t, e.tokenForm(code)); status != http.StatusOK {
			t.Fatalf("first redemption: %d", status)
		}
		if status, tr := e.redeem(t, e.tokenForm(code)); status != http.StatusBadRequest || tr.Error != "invalid_grant" {
			t.Fatalf("replay: %d %+v", status, tr)
		}
	})

	for _, tc := range []struct {
		name       string
		edit       func(url.Values)
		status     int
		error      string
		afterClock time.Duration
	}{
		{"PKCE mismatch", func(v url.Values) { v.Set("code_verifier", strings.Repeat("x", 43)) }, 400, "invalid_grant", 0},
		{"no verifier", func(v url.Values) { v.Del("code_verifier") }, 400, "invalid_grant", 0},
		{"other redirect_uri", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1/other") }, 400, "invalid_grant", 0},
		{"unknown client", func(v url.Values) { v.Set("client_id", "other") }, 401, "invalid_client", 0},
		{"wrong grant", func(v url.Values) { v.Set("grant_type", "password") }, 400, "unsupported_grant_type", 0},
		{"unknown code", func(v url.Values) { v.Set("code", "nope") }, 400, "invalid_grant", 0},
		{"expired code", func(url.Values) {}, 400, "invalid_grant", 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := e.tokenForm(e.authorize(t, demo[0].ID))
			tc.edit(form)
			e.clock.Add(tc.afterClock)
			status, tr := e.redeem(t, form)
			if status != tc.status || tr.Error != tc.error || tr.IDToken != "" {
				t.Fatalf("got %d %+v, want %d %s", status, tr, tc.status, tc.error)
			}
		})
	}

	t.Run("a failed redemption spends the code", func(t *testing.T) {
		form := e.tokenForm(e.authorize(t, demo[0].ID))
		good := form.Get("code_verifier")
		form.Set("code_verifier", strings.Repeat("y", 43))
		e.redeem(t, form)
		form.Set("code_verifier", good)
		if status, _ := e.redeem(t, form); status != http.StatusBadRequest {
			t.Fatalf("code still redeemable after a failed attempt: %d", status)
		}
	})

	t.Run("cancel returns access_denied", func(t *testing.T) {
		v := e.authParams()
		v.Set("action", "cancel")
		resp, err := noFollow.PostForm(e.base+"/dev-oidc/authorize", v)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if loc.Query().Get("error") != "access_denied" || loc.Query().Get("code") != "" {
			t.Fatalf("cancel redirected to %s", loc)
		}
	})
}

func TestMint(t *testing.T) {
	e := newEnv(t)
	exp := e.clock.Now().Add(30 * time.Minute).Truncate(time.Second)
	tok, err := e.iss.Mint(demo[1].ID, exp)
	if err != nil {
		t.Fatal(err)
	}
	claims := verifyWithJWKS(t, e, tok)
	if claims["sub"] != demo[1].ID || claims["name"] != demo[1].Name || int64(claims["exp"].(float64)) != exp.Unix() {
		t.Fatalf("claims %v", claims)
	}
	if _, ok := claims["nonce"]; ok {
		t.Error("minted token has a nonce")
	}
	if _, err := e.iss.Mint("12345", exp); err == nil {
		t.Error("Mint accepted a non-10-digit id")
	}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

func TestPickerFormRoundTrips(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.base + "/dev-oidc/authorize?" + e.authParams().Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(body), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	want := e.authParams()
	for k := range want {
		if form.Get(k) != want.Get(k) {
			t.Errorf("hidden %s = %q, want %q", k, form.Get(k), want.Get(k))
		}
	}
}

func verifyWithJWKS(t *testing.T, e *env, token string) map[string]any {
	t.Helper()
	resp, err := http.Get(e.base + "/dev-oidc/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in JWKS", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}
