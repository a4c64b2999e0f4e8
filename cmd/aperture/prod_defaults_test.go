package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/citizenauth/devissuer"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/server"
	"github.com/aperture-gov/aperture/policies"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestServingCommandsNeedTLSMaterial: neither `aperture broker` nor `aperture authority` makes up a
// development CA on its own. Without certificate flags they refuse, naming the flags, and create
// nothing in the data directory; a plain-http OpenID Connect issuer is refused unless it is on
// loopback and --oidc-insecure-loopback is given.
func TestServingCommandsNeedTLSMaterial(t *testing.T) {
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	authority := reg.Authorities[0].ID
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"broker without certificates", []string{"broker"},
			[]string{"no TLS certificate", "--cert", "--key", "--ca", "--certs vault", "--vault-addr", "--certs dev"}},
		{"broker with only --cert", []string{"broker", "--cert", "broker.crt"},
			[]string{"needs all of --cert, --key and --ca"}},
		{"broker --certs files without files", []string{"broker", "--certs", "files"},
			[]string{"needs all of --cert, --key and --ca"}},
		{"authority without certificates", []string{"authority", authority, "--listen", "127.0.0.1:0"},
			[]string{"no TLS certificate", "--cert", "--key", "--ca", "--certs dev"}},
		{"http issuer", []string{"broker", "--certs", "dev", "--oidc-issuer", "http://login.example", "--oidc-client-id", "portal"},
			[]string{"must use https"}},
		{"http issuer elsewhere, even with the development flag", []string{"broker", "--certs", "dev", "--oidc-insecure-loopback",
			"--oidc-issuer", "http://login.example", "--oidc-client-id", "portal"}, []string{"must use https"}},
		{"loopback http issuer without the development flag", []string{"broker", "--certs", "dev",
			"--oidc-issuer", "http://127.0.0.1:1/dev-oidc", "--oidc-client-id", "portal"}, []string{citizenauth.InsecureLoopbackFlag}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			data := filepath.Join(t.TempDir(), "data")
			var out, errOut bytes.Buffer
			args := append(append([]string{}, tt.args...), "--data", data)
			if code := run(ctx, args, &out, &errOut); code != 2 {
				t.Fatalf("exit %d, want 2 (usage); stdout %s stderr %s", code, out.String(), errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr does not name %q:\n%s", w, errOut.String())
				}
			}
			if _, err := os.Stat(data); err == nil {
				t.Errorf("a refused command created %s", data)
			}
		})
	}
}

// TestBrokerWithDevCertsAndLogout runs `aperture broker --certs dev` with a loopback development
// issuer (--oidc-insecure-loopback) and the portal, against authorities running elsewhere, signs a
// citizen in over HTTP, copies the session cookie, signs out, and checks the copy is refused.
func TestBrokerWithDevCertsAndLogout(t *testing.T) {
	// The authorities (and the development CA that issued their certificates) come from a test stack.
	ts := newTestStack(t)
	data := filepath.Join(t.TempDir(), "broker")
	if err := os.CopyFS(filepath.Join(data, "pki"), os.DirFS(filepath.Join(ts.dataDir, "pki"))); err != nil {
		t.Fatal(err)
	}
	policyDir := filepath.Join(t.TempDir(), "policies")
	if err := os.CopyFS(policyDir, policies.Files()); err != nil {
		t.Fatal(err)
	}
	regFile := filepath.Join(policyDir, "registry.yaml")
	regText, err := os.ReadFile(regFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ts.Registry.Authorities {
		regText = bytes.ReplaceAll(regText, []byte("address: "+a.Address+"\n"), []byte("address: "+ts.AuthorityAddrs[a.ID]+"\n"))
	}
	if err := os.WriteFile(regFile, regText, 0o644); err != nil {
		t.Fatal(err)
	}

	// A development issuer on loopback, as an operator trying the broker out would run one.
	citizen := ts.Population.Featured()[0]
	mux := http.NewServeMux()
	idp := httptest.NewUnstartedServer(mux)
	iss, err := devissuer.New(devissuer.Options{Issuer: "http://" + idp.Listener.Addr().String() + "/dev-oidc", ClientID: "portal",
		Citizens: []devissuer.Citizen{{ID: citizen.ID, Name: citizen.Name}}})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(iss.MountPath(), iss.Handler())
	idp.Start()
	t.Cleanup(idp.Close)

	portalAddr := freeAddr(t)
	portalURL := "http://" + portalAddr
	ctx, stop := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"broker", "--certs", "dev", "--data", data, "--policies", policyDir,
			"--listen", "127.0.0.1:0", "--citizen-listen", "127.0.0.1:0", "--start-timeout", "30s",
			"--oidc-issuer", iss.IssuerURL(), "--oidc-insecure-loopback", "--oidc-client-id", "portal",
			"--portal-listen", portalAddr, "--portal-url", portalURL}, out, errOut)
	}()
	t.Cleanup(func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("broker exited %d:\n%s", code, errOut.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "citizen portal on") {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("broker exited %d before serving:\n%s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker did not start:\nstdout %s\nstderr %s", out.String(), errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, w := range []string{"development CA", citizenauth.InsecureLoopbackFlag} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("the broker does not warn about %q:\n%s", w, errOut.String())
		}
	}

	// Sign in through the real portal and issuer.
	c := cookieBrowser(t)
	resp, page := httpGet(t, c, portalURL+"/login?return=/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), iss.IssuerURL()) {
		t.Fatalf("GET /login ended at %s: %s", resp.Request.URL, resp.Status)
	}
	resp = submitDevLogin(t, c, page, citizen.ID)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Host != portalAddr || !strings.Contains(string(body), citizen.Name) {
		t.Fatalf("after sign-in: %s at %s", resp.Status, resp.Request.URL)
	}
	u, _ := url.Parse(portalURL)
	var session *http.Cookie
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == citizenauth.SessionCookie {
			session = ck
		}
	}
	if session == nil || strings.Count(session.Value, ".") == 2 {
		t.Fatalf("session cookie is missing or a JWT: %+v", session)
	}

	copied := cookieBrowser(t)
	copied.Jar.SetCookies(u, []*http.Cookie{{Name: session.Name, Value: session.Value, Path: "/"}})
	signedIn := func(c *http.Client) bool {
		resp, body := httpGet(t, c, portalURL+"/")
		return resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/" && strings.Contains(body, citizen.Name)
	}
	if !signedIn(copied) {
		t.Fatal("the copied cookie does not work before logout")
	}
	resp, err = c.Post(portalURL+"/logout", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if signedIn(c) || signedIn(copied) {
		t.Fatal("the session survived logout")
	}
	if resp, _ := httpGet(t, copied, portalURL+"/"); !strings.HasPrefix(resp.Request.URL.String(), iss.IssuerURL()) {
		t.Errorf("the copied cookie after logout is not sent to sign in: ended at %s", resp.Request.URL)
	}
	if strings.Contains(errOut.String(), citizen.ID) {
		t.Error("the broker logged the citizen id")
	}
}

// TestLoggedRequestFieldsAreBounded: a 100 KB field path sent through the real gRPC API does not
// become a 100 KB log line or a 100 KB error message; the log still says what happened.
func TestLoggedRequestFieldsAreBounded(t *testing.T) {
	logs := &syncBuffer{}
	ts := newTestStack(t, func(o *stackOptions) {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	j := ts.Broker.Bundle().Journeys()[0]
	step := j.Steps[0]
	if len(step.Rules) == 0 {
		t.Fatalf("step %s of %s releases nothing", step.ID, j.ID)
	}
	rule := step.Rules[0]
	c := ts.open(step.Agency, j.ID, ts.Population.Featured()[0].ID)

	// A 100 KB path is refused by validation (paths are at most 256 characters), with a bounded message.
	huge := strings.Repeat("a", 100<<10)
	_, err := ts.agency(step.Agency).Release(cw("cw-1"), &brokerv1.ReleaseRequest{
		CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset, Fields: []string{huge},
	})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("release with a 100 KB field path: %v", err)
	}
	if n := len(st.Message()); n > server.MaxStatusText+64 {
		t.Errorf("the error message is %d bytes", n)
	}
	// The longest valid paths reach the decision and are refused there; the reason quoting them is cut
	// in the log line.
	long := make([]string, 64)
	for i := range long {
		long[i] = fmt.Sprintf("%s%03d", strings.Repeat("z", 253), i)
	}
	_, err = ts.agency(step.Agency).Release(cw("cw-1"), &brokerv1.ReleaseRequest{
		CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset, Fields: long,
	})
	if code := status.Code(err); code != codes.PermissionDenied && code != codes.InvalidArgument {
		t.Fatalf("release with 64 unknown 256-character paths: %v", err)
	}

	const maxLine = 2 << 10
	var refused string
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(line) > maxLine {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
		if strings.Contains(line, `msg="request refused"`) {
			refused = line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading logs: %v", err)
	}
	if refused == "" || !strings.Contains(refused, "bytes cut") {
		t.Fatalf("no bounded refusal line in the log:\n%.4000s", logs.String())
	}
}

// syncBuffer collects output (logs) written by other goroutines.
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

// freeAddr returns a loopback address nothing listens on, for a server whose public URL must be
// known before it starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func cookieBrowser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

func httpGet(t *testing.T, c *http.Client, u string) (*http.Response, string) {
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
	devLoginAction = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	devLoginHidden = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// submitDevLogin submits the development issuer's login page for citizen, as a browser would.
func submitDevLogin(t *testing.T, c *http.Client, page, citizen string) *http.Response {
	t.Helper()
	m := devLoginAction.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no form on the login page:\n%s", page)
	}
	form := url.Values{"citizen": {citizen}, "action": {"signin"}}
	for _, h := range devLoginHidden.FindAllStringSubmatch(page, -1) {
		form.Set(h[1], html.UnescapeString(h[2]))
	}
	resp, err := c.PostForm(html.UnescapeString(m[1]), form)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
