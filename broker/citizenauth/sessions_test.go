package citizenauth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
)

// signIn runs a whole sign-in for citizen in a fresh browser and returns it.
func (p *portal) signIn(t *testing.T, citizen string) *http.Client {
	t.Helper()
	c := browser(t, false)
	resp, _ := get(t, c, p.startAndPick(t, c, citizen))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %s", resp.Status)
	}
	if _, ok := p.sessionOf(c); !ok {
		t.Fatal("no session after sign-in")
	}
	return c
}

// storeKey is where the session store keeps the record of a session cookie value.
func storeKey(cookieValue string) string {
	h := sha256.Sum256([]byte(cookieValue))
	return "s." + hex.EncodeToString(h[:])
}

func (p *portal) bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := p.js.KeyValue(context.Background(), citizenauth.SessionBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestLogoutEndsCopiedCookie: signing out ends the session on the server, so a copy of the session
// cookie taken before (another device, a stolen value) is refused afterwards over real HTTP.
func TestLogoutEndsCopiedCookie(t *testing.T) {
	p := newPortal(t)
	victim := p.signIn(t, demo[0].ID)
	copied := browser(t, false)
	setCookie(copied, p.base, cookie(victim, p.base, citizenauth.SessionCookie))
	if resp, body := get(t, copied, p.base+"/whoami"); resp.StatusCode != http.StatusOK || !strings.Contains(body, demo[0].ID) {
		t.Fatalf("copied cookie before logout: %s %s", resp.Status, body)
	}

	resp, err := victim.Post(p.base+"/logout", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /logout: %s", resp.Status)
	}

	for name, c := range map[string]*http.Client{"signed-out browser": victim, "copied cookie": copied} {
		if resp, body := get(t, c, p.base+"/whoami"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s after logout: %s %s", name, resp.Status, body)
		}
	}
	if _, ok := p.sessionOf(copied); ok {
		t.Fatal("the copied cookie still has a session after logout")
	}
	// The record itself is gone, not just marked: the sealed token does not stay in the bucket.
	ck := cookie(copied, p.base, citizenauth.SessionCookie)
	if _, err := p.bucket(t).Get(context.Background(), storeKey(ck.Value)); err == nil {
		t.Error("the session record survived logout")
	}
}

// TestSessionCookieIsOpaque: the cookie carries a random id, not the ID token; the bucket holds the
// token sealed under the hash of that id, so neither the cookie value nor the token nor the citizen
// id can be read from NATS.
func TestSessionCookieIsOpaque(t *testing.T) {
	p := newPortal(t)
	c := p.signIn(t, demo[1].ID)
	s, _ := p.sessionOf(c)
	ck := cookie(c, p.base, citizenauth.SessionCookie)
	if ck.Value == s.Token || strings.Count(ck.Value, ".") > 0 || len(ck.Value) > 40 {
		t.Fatalf("session cookie looks like a token: %q", ck.Value)
	}
	kv := p.bucket(t)
	keysList, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for k := range keysList.Keys() {
		n++
		if strings.Contains(k, ck.Value) {
			t.Errorf("bucket key %q contains the session id", k)
		}
		e, err := kv.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{s.Token, s.Token[:40], demo[1].ID, ck.Value} {
			if strings.Contains(string(e.Value()), secret) {
				t.Errorf("bucket value carries a secret in clear (%d bytes of it)", len(secret))
			}
		}
	}
	if n != 1 {
		t.Fatalf("bucket holds %d sessions, want 1", n)
	}
}

// TestSessionRecordForgery: someone who can write the session bucket cannot make a session: a record
// that does not open under the broker's sealing key, bound to its key, counts as signed out and is
// reported (error log line and counter).
func TestSessionRecordForgery(t *testing.T) {
	p := newPortal(t)
	ctx := context.Background()
	other := keystest.Sealer(t)
	if err := other.Add(2, []byte(strings.Repeat("k", keys.KeySize))); err != nil {
		t.Fatal(err)
	}
	if err := other.SetCurrent(2); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		forge func(t *testing.T, kv jetstream.KeyValue, key string, value []byte, token string) []byte
	}{
		{"altered record", func(t *testing.T, _ jetstream.KeyValue, _ string, v []byte, _ string) []byte {
			v = append([]byte(nil), v...)
			v[len(v)-1] ^= 1
			return v
		}},
		{"record moved from another session", func(t *testing.T, kv jetstream.KeyValue, _ string, _ []byte, _ string) []byte {
			// A valid record of another citizen's session, copied under this session's key.
			other := p.signIn(t, demo[1].ID)
			e, err := kv.Get(ctx, storeKey(cookie(other, p.base, citizenauth.SessionCookie).Value))
			if err != nil {
				t.Fatal(err)
			}
			return e.Value()
		}},
		{"record sealed with another key", func(t *testing.T, _ jetstream.KeyValue, key string, _ []byte, token string) []byte {
			b, err := other.Seal([]byte(`{"t":"`+token+`","c":0,"e":99999999999}`), []byte("aperture/portal-session\x00"+key))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"plain record", func(t *testing.T, _ jetstream.KeyValue, _ string, _ []byte, token string) []byte {
			return []byte(`{"t":"` + token + `","c":0,"e":99999999999}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.signIn(t, demo[0].ID)
			s, _ := p.sessionOf(c)
			key := storeKey(cookie(c, p.base, citizenauth.SessionCookie).Value)
			kv := p.bucket(t)
			e, err := kv.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			before := p.sessions.Stats().Unauthentic
			if _, err := kv.Put(ctx, key, tc.forge(t, kv, key, e.Value(), s.Token)); err != nil {
				t.Fatal(err)
			}
			if resp, body := get(t, c, p.base+"/whoami"); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("forged record made a session: %s %s", resp.Status, body)
			}
			if got := p.sessions.Stats().Unauthentic; got != before+1 {
				t.Errorf("Unauthentic = %d, want %d", got, before+1)
			}
			if line := lastLine(p.logs.String()); !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "does not authenticate") {
				t.Errorf("no error-level report: %s", line)
			}
		})
	}
	if logs := p.logs.String(); strings.Contains(logs, demo[0].ID) || strings.Contains(logs, demo[1].ID) {
		t.Errorf("logs carry a citizen id:\n%s", logs)
	}
}

// TestSessionsSharedByReplicas: two portal replicas with their own Login and store on one NATS and the
// same sealing key share sign-ins and sessions: started on one, completed on the other; signed in on
// one, signed in on the other; signed out on the other, signed out on both.
func TestSessionsSharedByReplicas(t *testing.T) {
	p := newPortal(t)
	cfg := p.config()
	b, err := citizenauth.NewLogin(cfg, p.verifier(t, cfg), p.sessionStore(t, p.sealer, nil))
	if err != nil {
		t.Fatal(err)
	}
	muxB := http.NewServeMux()
	b.Routes(muxB)
	onB := func(c *http.Client) *http.Request {
		r := httptest.NewRequest(http.MethodPost, p.base+"/logout", nil)
		for _, ck := range c.Jar.Cookies(r.URL) {
			r.AddCookie(ck)
		}
		return r
	}

	// A sign-in started on B completes on A: the sign-in cookie is sealed with the shared key.
	c := browser(t, false)
	rec := httptest.NewRecorder()
	muxB.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.base+"/login?return=/whoami", nil))
	setCookie(c, p.base, findSetCookie(t, rec.Result(), citizenauth.SigninCookie))
	resp, page := get(t, c, rec.Header().Get("Location"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authorize: %s", resp.Status)
	}
	resp = pick(t, c, page, demo[0].ID)
	resp.Body.Close()
	if resp, _ := get(t, c, resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback on replica A for a sign-in started on B: %s", resp.Status)
	}
	if s, ok := b.Session(onB(c)); !ok || s.CitizenID != demo[0].ID {
		t.Fatalf("replica B does not see the session: %+v %v", s, ok)
	}
	rec = httptest.NewRecorder()
	muxB.ServeHTTP(rec, onB(c))
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("logout on replica B: %d %s", rec.Code, rec.Body)
	}
	if resp, _ := get(t, c, p.base+"/whoami"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replica A still serves the session signed out on B: %s", resp.Status)
	}
}

// TestSessionStoreRefusesBadSetup: no store, no sign-in.
func TestSessionStoreRefusesBadSetup(t *testing.T) {
	e := newEnv(t)
	if _, err := citizenauth.NewLogin(e.config(), e.verifier(t, e.config()), nil); err == nil || !strings.Contains(err.Error(), "SessionStore") {
		t.Fatalf("NewLogin without a store: %v", err)
	}
	if _, err := citizenauth.OpenSessionStore(context.Background(), e.js, nil, citizenauth.SessionStoreOptions{}); err == nil {
		t.Fatal("OpenSessionStore without a sealer succeeded")
	}
}
