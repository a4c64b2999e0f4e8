package citizenauth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/citizenauth"
)

func TestConfigValidate(t *testing.T) {
	good := citizenauth.Config{
		Issuer:      "https://login.example/realms/citizens",
		ClientID:    "portal",
		RedirectURL: "https://portal.example/auth/callback",
	}
	for _, tc := range []struct {
		name string
		edit func(*citizenauth.Config)
		want string // "" = valid
	}{
		{"good", func(*citizenauth.Config) {}, ""},
		{"loopback http issuer with the flag", func(c *citizenauth.Config) {
			c.Issuer, c.InsecureLoopbackIssuer = "http://127.0.0.1:8080/dev-oidc", true
		}, ""},
		{"localhost http issuer with the flag", func(c *citizenauth.Config) {
			c.Issuer, c.InsecureLoopbackIssuer = "http://localhost:8080/dev-oidc", true
		}, ""},
		{"ipv6 loopback http issuer with the flag", func(c *citizenauth.Config) {
			c.Issuer, c.InsecureLoopbackIssuer = "http://[::1]:8080/dev-oidc", true
		}, ""},
		{"loopback http issuer without the flag", func(c *citizenauth.Config) { c.Issuer = "http://127.0.0.1:8080/dev-oidc" }, citizenauth.InsecureLoopbackFlag},
		{"localhost http issuer without the flag", func(c *citizenauth.Config) { c.Issuer = "http://localhost:8080/dev-oidc" }, citizenauth.InsecureLoopbackFlag},
		{"http issuer on another host, even with the flag", func(c *citizenauth.Config) {
			c.Issuer, c.InsecureLoopbackIssuer = "http://login.example", true
		}, "must use https"},
		{"http issuer under .localhost", func(c *citizenauth.Config) {
			c.Issuer, c.InsecureLoopbackIssuer = "http://idp.localhost:8080", true
		}, "must use https"},
		{"https loopback issuer needs no flag", func(c *citizenauth.Config) { c.Issuer = "https://127.0.0.1:8443/realms/x" }, ""},
		{"no redirect (verifier only)", func(c *citizenauth.Config) { c.RedirectURL = "" }, ""},
		{"scopes with openid", func(c *citizenauth.Config) { c.Scopes = []string{"openid", "profile"} }, ""},
		{"skew", func(c *citizenauth.Config) { c.ClockSkew = 30 * time.Second }, ""},
		{"no issuer", func(c *citizenauth.Config) { c.Issuer = "" }, "issuer is required"},
		{"relative issuer", func(c *citizenauth.Config) { c.Issuer = "login.example" }, "issuer"},
		{"plain http issuer", func(c *citizenauth.Config) { c.Issuer = "http://login.example" }, "https"},
		{"issuer with query", func(c *citizenauth.Config) { c.Issuer = "https://login.example/?x=1" }, "query"},
		{"no client", func(c *citizenauth.Config) { c.ClientID = " " }, "client_id"},
		{"claim with spaces", func(c *citizenauth.Config) { c.CitizenClaim = " cpr" }, "citizen_claim"},
		{"relative redirect", func(c *citizenauth.Config) { c.RedirectURL = "/auth/callback" }, "redirect_url"},
		{"http redirect", func(c *citizenauth.Config) { c.RedirectURL = "http://portal.example/auth/callback" }, "https"},
		{"redirect without path", func(c *citizenauth.Config) { c.RedirectURL = "https://portal.example" }, "callback path"},
		{"scopes without openid", func(c *citizenauth.Config) { c.Scopes = []string{"profile"} }, "openid"},
		{"bad scope", func(c *citizenauth.Config) { c.Scopes = []string{"openid", "a b"} }, "scope"},
		{"negative skew", func(c *citizenauth.Config) { c.ClockSkew = -time.Second }, "clock_skew"},
		{"huge skew", func(c *citizenauth.Config) { c.ClockSkew = time.Hour }, "clock_skew"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
