package citizenauth_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/citizenauth/devissuer"
)

func TestVerify(t *testing.T) {
	e := newEnv(t)
	// Another issuer with the same URL and client but its own key: its tokens look right in every
	// claim and must still be refused.
	other, err := devissuer.New(devissuer.Options{Issuer: e.iss.IssuerURL(), ClientID: "portal", Citizens: demo, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	mint := func(id string, exp time.Time) string {
		tok, err := e.iss.Mint(id, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	claims := func(c map[string]any) string {
		tok, err := e.iss.MintClaims(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tamper := func(tok string) string {
		parts := strings.Split(tok, ".")
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		sig[len(sig)/2] ^= 0x01
		parts[2] = base64.RawURLEncoding.EncodeToString(sig)
		return strings.Join(parts, ".")
	}
	// Anna's header and signature around Bo's claims.
	swapPayload := func(tok string) string {
		parts := strings.Split(tok, ".")
		parts[1] = strings.Split(claims(map[string]any{"sub": demo[1].ID}), ".")[1]
		return strings.Join(parts, ".")
	}
	otherToken, err := other.Mint(demo[0].ID, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		strings.Split(mint(demo[0].ID, now.Add(time.Hour)), ".")[1] + "."

	for _, tc := range []struct {
		name    string
		claim   string // citizen_claim; "" = default sub
		token   string
		want    string // citizen id, or "" for an error
		wantErr error
	}{
		{name: "valid", token: mint(demo[0].ID, now.Add(time.Hour)), want: demo[0].ID},
		{name: "valid, id not a demo citizen", token: mint("1234567890", now.Add(time.Hour)), want: "1234567890"},
		{name: "expired", token: mint(demo[0].ID, now.Add(-time.Second)), wantErr: citizenauth.ErrTokenExpired},
		{name: "wrong audience", token: claims(map[string]any{"sub": demo[0].ID, "aud": "someone-else"}), wantErr: citizenauth.ErrInvalidToken},
		{name: "no audience", token: claims(map[string]any{"sub": demo[0].ID, "aud": nil}), wantErr: citizenauth.ErrInvalidToken},
		{name: "wrong issuer", token: claims(map[string]any{"sub": demo[0].ID, "iss": "http://127.0.0.1:1/evil"}), wantErr: citizenauth.ErrInvalidToken},
		{name: "tampered signature", token: tamper(mint(demo[0].ID, now.Add(time.Hour))), wantErr: citizenauth.ErrInvalidToken},
		{name: "tampered payload", token: swapPayload(mint(demo[0].ID, now.Add(time.Hour))), wantErr: citizenauth.ErrInvalidToken},
		{name: "another issuer's key", token: otherToken, wantErr: citizenauth.ErrInvalidToken},
		{name: "alg none", token: unsigned, wantErr: citizenauth.ErrInvalidToken},
		{name: "not a JWT", token: "hello", wantErr: citizenauth.ErrInvalidToken},
		{name: "empty", token: "", wantErr: citizenauth.ErrInvalidToken},
		{name: "huge", token: strings.Repeat("a", 20000), wantErr: citizenauth.ErrInvalidToken},
		{name: "missing sub", token: claims(map[string]any{}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "9 digits", token: claims(map[string]any{"sub": "123456789"}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "11 digits", token: claims(map[string]any{"sub": "12345678901"}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "letters", token: claims(map[string]any{"sub": "01019012a4"}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "dash", token: claims(map[string]any{"sub": "010190-1234"}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "non-ASCII digits", token: claims(map[string]any{"sub": "٠١٠١٩٠١٢٣٤"}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "trailing newline", token: claims(map[string]any{"sub": "0101901234\n"}), wantErr: citizenauth.ErrNoCitizenID},
		{name: "custom claim", claim: "citizen_id", token: claims(map[string]any{"sub": "pairwise-abc", "citizen_id": demo[1].ID}), want: demo[1].ID},
		{name: "custom claim missing", claim: "citizen_id", token: mint(demo[0].ID, now.Add(time.Hour)), wantErr: citizenauth.ErrNoCitizenID},
		{name: "custom claim as number", claim: "citizen_id", token: claims(map[string]any{"sub": "x", "citizen_id": 1234567890}), wantErr: citizenauth.ErrNoCitizenID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.CitizenClaim = tc.claim
			v := e.verifier(t, cfg)
			got, err := v.Authenticate(context.Background(), tc.token)
			if tc.wantErr == nil {
				if err != nil || got != tc.want {
					t.Fatalf("Authenticate() = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Authenticate() = %q, want error %v", got, tc.wantErr)
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, citizenauth.ErrInvalidToken) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
			if got != "" {
				t.Errorf("citizen id %q returned with an error", got)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, secret := range []string{demo[0].ID, demo[1].ID, "1234567890", "123456789"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q echoes a citizen id", msg)
				}
			}
			if tc.token != "" && len(tc.token) > 8 && strings.Contains(msg, tc.token[len(tc.token)/2:]) {
				t.Errorf("error %q echoes the token", msg)
			}
		})
	}
}

func TestVerifyIdentityAndClock(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(t, e.config())
	exp := e.clock.Now().Add(10 * time.Minute)
	tok, err := e.iss.Mint(demo[0].ID, exp)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.CitizenID != demo[0].ID || id.Name != demo[0].Name || !id.Expiry.Equal(exp) {
		t.Fatalf("Verify() = %+v", id)
	}
	// "Bearer " prefix, as in an Authorization header.
	if got, err := v.Authenticate(context.Background(), "Bearer "+tok); err != nil || got != demo[0].ID {
		t.Fatalf("Authenticate(Bearer …) = %q, %v", got, err)
	}

	e.clock.Add(11 * time.Minute)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, citizenauth.ErrTokenExpired) {
		t.Fatalf("after expiry: %v", err)
	}

	cfg := e.config()
	cfg.ClockSkew = 2 * time.Minute
	skewed := e.verifier(t, cfg)
	if _, err := skewed.Verify(context.Background(), tok); err != nil {
		t.Fatalf("1 minute past expiry with 2 minutes skew: %v", err)
	}
	e.clock.Add(2 * time.Minute)
	if _, err := skewed.Verify(context.Background(), tok); !errors.Is(err, citizenauth.ErrTokenExpired) {
		t.Fatalf("3 minutes past expiry with 2 minutes skew: %v", err)
	}
}

func TestNewVerifierDiscoveryErrors(t *testing.T) {
	e := newEnv(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	for _, tc := range []struct {
		name   string
		issuer string
		want   string
	}{
		{"unreachable", deadURL + "/dev-oidc", "discovery"},
		{"no discovery document", e.base + "/nothing-here", "discovery"},
		{"issuer spelled differently", e.iss.IssuerURL() + "/", "announces itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.Issuer = tc.issuer
			_, err := citizenauth.NewVerifier(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewVerifier() error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestVerifierCAFile(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	base := "https://" + srv.Listener.Addr().String()
	iss, err := devissuer.New(devissuer.Options{Issuer: base + "/dev-oidc", ClientID: "portal", Citizens: demo})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(iss.MountPath(), iss.Handler())
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := srv.TLS.Certificates[0]
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := citizenauth.Config{Issuer: iss.IssuerURL(), ClientID: "portal"}

	if _, err := citizenauth.NewVerifier(context.Background(), cfg); err == nil {
		t.Fatal("an issuer with an unknown CA was trusted without ca_file")
	}

	cfg.CAFile = caFile
	v, err := citizenauth.NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := iss.Mint(demo[0].ID, time.Now().Add(time.Hour))
	if got, err := v.Authenticate(context.Background(), tok); err != nil || got != demo[0].ID {
		t.Fatalf("Authenticate over TLS = %q, %v", got, err)
	}

	// WithHTTPClient takes precedence.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}}}
	cfg.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := citizenauth.NewVerifier(context.Background(), cfg, citizenauth.WithHTTPClient(client)); err != nil {
		t.Fatalf("WithHTTPClient: %v", err)
	}
	if _, err := citizenauth.NewVerifier(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("missing ca_file: %v", err)
	}
}

func TestIssuerKeysUnavailable(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(t, e.config())
	tok, _ := e.iss.Mint(demo[0].ID, e.clock.Now().Add(time.Hour))
	e.srv.Close() // keys never fetched: the first Verify needs them
	_, err := v.Verify(context.Background(), tok)
	if !errors.Is(err, citizenauth.ErrIssuerUnavailable) || errors.Is(err, citizenauth.ErrInvalidToken) {
		t.Fatalf("Verify with the issuer down: %v", err)
	}
}
