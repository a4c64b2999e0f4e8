package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/citizenauth"
	"github.com/aperture-gov/aperture/broker/portal"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

const citizenUsage = `usage: aperture citizen COMMAND --citizen CPR [--data DIR] [--lang en|da]

Acts as a citizen of the development stack: signs in through its development login (only the demo
citizens ` + "`aperture dev`" + ` lists) and calls the citizen API.

  switches list                          what you can switch off, what the law requires, your switches
  switches off JOURNEY [--step STEP]     switch off a journey's optional steps, or one optional step
  switches off --all                     switch off the optional steps of every journey
  switches on JOURNEY [--step STEP] | --all
                                         switch on again
  consents list                          the consents you gave, and whether they still hold
  log [--limit N]                        who accessed your data, when and why, newest first`

// citizenFlags are the flags of `aperture citizen`: who signs in, and where the development stack runs.
type citizenFlags struct {
	citizen, data, portal, api, brokerID, ca, lang string
	step                                           string
	all, utc, json                                 bool
	limit                                          int
	timeout                                        time.Duration
}

func (c *citizenFlags) register(fs *flag.FlagSet) {
	addConfigFlag(fs)
	fs.StringVar(&c.citizen, "citizen", "", "your CPR number (10 digits): one of the development stack's demo citizens")
	fs.StringVar(&c.data, "data", ".aperture", "data directory of `aperture dev`, for its CA certificate")
	fs.StringVar(&c.portal, "portal", "127.0.0.1:8080", "address of the portal, which serves the development login")
	fs.StringVar(&c.api, "citizen-api", "127.0.0.1:7444", "address of the citizen API")
	fs.StringVar(&c.brokerID, "broker-id", mtls.ID(trustDomain, "broker", ""), "SPIFFE id the citizen API's certificate must carry")
	fs.StringVar(&c.ca, "ca", "", "CA certificate file to verify the citizen API (default DATA/pki/ca.crt)")
	fs.StringVar(&c.lang, "lang", "en", "language of the output: en or da")
	fs.StringVar(&c.step, "step", "", "switches off|on: only this optional step of the journey")
	fs.BoolVar(&c.all, "all", false, "switches off|on: the switch for all journeys")
	fs.IntVar(&c.limit, "limit", 50, "log: at most this many accesses, newest first")
	fs.BoolVar(&c.utc, "utc", false, "print times in UTC (default: local time)")
	fs.BoolVar(&c.json, "json", false, "print the citizen API's answer as JSON for machines")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "time limit for sign-in and the call")
}

// citizenCall is one parsed `aperture citizen` command line.
type citizenCall struct {
	what    string // "switches list", "switches off", "switches on", "consents list", "log"
	journey string
}

func runCitizen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("citizen", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(stderr, citizenUsage); fs.PrintDefaults() }
	var cf citizenFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	call, err := cf.parse(pos)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	token, err := devSignIn(ctx, "http://"+cf.portal, cf.citizen)
	if err != nil {
		return err
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	cli := citizenCLI{api: citizenv1.NewCitizenServiceClient(cc), out: stdout, flags: cf}
	loc := time.Local
	if cf.utc {
		loc = time.UTC
	}
	cli.words = portal.NewWords(cf.lang, loc, time.Now(), nil)
	switch call.what {
	case "switches list":
		return cli.listSwitches(ctx)
	case "switches off", "switches on":
		return cli.setSwitch(ctx, call.journey, call.what == "switches off")
	case "consents list":
		return cli.listConsents(ctx)
	}
	return cli.log(ctx, loc)
}

// parse checks the command line before anything is signed in or called: a mistake is a usage error.
func (c *citizenFlags) parse(pos []string) (citizenCall, error) {
	bad := func(format string, args ...any) (citizenCall, error) {
		return citizenCall{}, usagef(format+"\n%s", append(args, citizenUsage)...)
	}
	if !citizenauth.ValidCitizenID(c.citizen) {
		return bad("--citizen must be a CPR number of 10 digits")
	}
	if c.lang != "en" && c.lang != "da" {
		return bad("--lang must be en or da")
	}
	if c.limit < 1 || c.limit > 500 {
		return bad("--limit must be between 1 and 500")
	}
	if len(pos) == 0 {
		return bad("missing command")
	}
	switchFlags := c.step != "" || c.all
	switch {
	case len(pos) == 1 && pos[0] == "log" && !switchFlags:
		return citizenCall{what: "log"}, nil
	case len(pos) == 2 && pos[0] == "consents" && pos[1] == "list" && !switchFlags:
		return citizenCall{what: "consents list"}, nil
	case len(pos) == 2 && pos[0] == "switches" && pos[1] == "list" && !switchFlags:
		return citizenCall{what: "switches list"}, nil
	case len(pos) >= 2 && pos[0] == "switches" && (pos[1] == "off" || pos[1] == "on"):
		call := citizenCall{what: "switches " + pos[1]}
		switch {
		case c.all && (len(pos) > 2 || c.step != ""):
			return bad("switches %s: --all takes no journey and no --step", pos[1])
		case c.all:
			return call, nil
		case len(pos) != 3:
			return bad("switches %s: name one journey, or --all", pos[1])
		}
		call.journey = pos[2]
		return call, nil
	}
	return bad("unknown command %q", strings.Join(pos, " "))
}

// dial connects to the citizen API: server TLS only (a citizen has no certificate; the ID token says
// who calls), verified against the development CA and the broker's SPIFFE id.
func (c *citizenFlags) dial() (*grpc.ClientConn, error) {
	ca := c.ca
	if ca == "" {
		ca = filepath.Join(c.data, "pki", "ca.crt")
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("read the CA certificate (is `aperture dev` running with --data %s?): %w", c.data, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no CA certificate", ca)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The broker is known by its SPIFFE id, not a host name: the chain and the id are checked here.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyBroker(cs.PeerCertificates, roots, c.brokerID)
		},
	}
	cc, err := grpc.NewClient(c.api, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("connect to the citizen API at %s: %w", c.api, err)
	}
	return cc, nil
}

func verifyBroker(certs []*x509.Certificate, roots *x509.CertPool, want string) error {
	if len(certs) == 0 {
		return errors.New("the citizen API presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("verify the citizen API's certificate: %w", err)
	}
	got, err := mtls.IDFromCert(certs[0])
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("the citizen API's certificate names %s, want %s", got, want)
	}
	return nil
}

// devSignIn signs the citizen in at the development stack's OpenID provider as the portal's browser
// would (authorization code with PKCE), without a browser: it posts the picker's form, reads the code
// from the redirect, and redeems it for the ID token the citizen API takes. Only a demo citizen can
// sign in. The CPR number stays out of every error.
func devSignIn(ctx context.Context, portalBase, citizen string) (string, error) {
	issuer, redirect := portalBase+"/dev-oidc", portalBase+"/auth/callback"
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	verifier := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	state := rand.Text()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	res, err := postForm(ctx, hc, issuer+"/authorize", url.Values{
		"response_type": {"code"}, "client_id": {devClientID}, "redirect_uri": {redirect}, "scope": {"openid profile"},
		"state": {state}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}, "citizen": {citizen}, "action": {"signin"},
	})
	if err != nil {
		return "", fmt.Errorf("sign in at the development login %s (is `aperture dev` running?): %w", issuer, err)
	}
	res.Body.Close()
	if res.StatusCode == http.StatusBadRequest {
		return "", errors.New("sign-in refused: that CPR number is not one of the development stack's demo citizens (`aperture dev` lists them)")
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusSeeOther || err != nil || loc.Query().Get("code") == "" || loc.Query().Get("state") != state {
		return "", fmt.Errorf("sign in at the development login %s: unexpected answer %s", issuer, res.Status)
	}
	res, err = postForm(ctx, hc, issuer+"/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {redirect},
		"code_verifier": {verifier}, "client_id": {devClientID},
	})
	if err != nil {
		return "", fmt.Errorf("redeem the sign-in code: %w", err)
	}
	defer res.Body.Close()
	var tok struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&tok); err != nil || res.StatusCode != http.StatusOK || tok.IDToken == "" {
		return "", fmt.Errorf("redeem the sign-in code: %s %s", res.Status, tok.Error)
	}
	return tok.IDToken, nil
}

func postForm(ctx context.Context, hc *http.Client, target string, form url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return hc.Do(req)
}

// citizenCLI prints the citizen API's answers in the portal's words.
type citizenCLI struct {
	api   citizenv1.CitizenServiceClient
	out   io.Writer
	words *portal.Words
	flags citizenFlags
}

// hints are the CLI's own sentences (the rest is the portal's): how to type a switch command.
var hints = map[string][2]string{
	"off": {"To switch it off: %s", "Slå det fra: %s"},
	"on":  {"To switch it on again: %s", "Slå det til igen: %s"},
}

// hint tells the citizen the command that flips a switch (journey "": the one for all journeys): the
// journey's and step's ids are what the command takes, so this is the one place they are shown.
func (c *citizenCLI) hint(sw *citizenv1.Switch, journey, step string) string {
	verb := "off"
	if sw.GetOff() && !sw.GetUnverified() {
		verb = "on"
	}
	cmd := "aperture citizen switches " + verb + " " + journey
	if journey == "" {
		cmd += "--all"
	}
	if step != "" {
		cmd += " --step " + step
	}
	h := hints[verb]
	if c.flags.lang == "da" {
		return fmt.Sprintf(h[1], cmd)
	}
	return fmt.Sprintf(h[0], cmd)
}

// upperFirst capitalises a line that starts with a word the portal writes mid-sentence ("step 2: …").
func upperFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

func (c *citizenCLI) line(indent int, s string) {
	fmt.Fprintf(c.out, "%s%s\n", strings.Repeat("  ", indent), s)
}

// state words a switch: on, switched off since a date, or unverified.
func (c *citizenCLI) state(sw *citizenv1.Switch) string {
	w := c.words
	s := w.T("switches.state.on")
	switch {
	case sw.GetUnverified():
		return w.T("switches.state.unverified")
	case sw.GetOff():
		s = w.T("switches.state.off")
	}
	if sw.GetChangedAt() != nil {
		s += " " + w.T("switches.since", w.Day(sw.GetChangedAt().AsTime()))
	}
	return s
}

func (c *citizenCLI) listSwitches(ctx context.Context) error {
	res, err := c.api.ListSwitches(ctx, &citizenv1.ListSwitchesRequest{})
	if err != nil {
		return refused(err)
	}
	if c.flags.json {
		return printJSON(c.out, res)
	}
	w := c.words
	c.line(0, w.T("switches.title"))
	c.line(0, "")
	c.line(0, w.T("switches.all.h")+": "+c.state(res.GetAll()))
	c.line(1, w.T("switches.all.p"))
	c.line(1, c.hint(res.GetAll(), "", ""))
	for _, sj := range res.GetJourneys() {
		c.line(0, "")
		switchable := false
		for _, st := range sj.GetSteps() {
			switchable = switchable || st.GetOptional()
		}
		if !switchable {
			c.line(0, w.Text(sj.GetJourney().GetTitle()))
			c.line(1, w.T("switches.none"))
			continue
		}
		id := sj.GetJourney().GetId()
		c.line(0, w.Text(sj.GetJourney().GetTitle())+": "+c.state(sj.GetSwitch()))
		if why := w.Text(sj.GetOptionalWhy()); why != "" {
			c.line(1, why)
		}
		c.line(1, c.hint(sj.GetSwitch(), id, ""))
		for _, st := range sj.GetSteps() {
			c.line(1, upperFirst(w.Step(st.GetStep()))+" ("+w.Party(st.GetAgency())+")")
			if !st.GetOptional() {
				c.line(2, w.T("switches.mandatory", st.GetLegalBasis()))
				continue
			}
			c.line(2, w.T("switches.optional")+" "+w.Text(st.GetOptionalWhy()))
			c.line(2, w.T("switches.choice", c.state(st.GetSwitch())))
			c.line(2, c.hint(st.GetSwitch(), id, st.GetStep().GetId()))
		}
	}
	return nil
}

func (c *citizenCLI) setSwitch(ctx context.Context, journey string, off bool) error {
	res, err := c.api.SetSwitch(ctx, &citizenv1.SetSwitchRequest{Journey: journey, Step: c.flags.step, Off: off})
	if err != nil {
		return refused(err)
	}
	if c.flags.json {
		return printJSON(c.out, res)
	}
	w := c.words
	if off {
		c.line(0, w.T("flash.switched_off"))
	} else {
		c.line(0, w.T("flash.switched_on"))
	}
	sw := res.GetSwitch()
	what := w.T("switches.all.h")
	if sw.GetJourney() != nil {
		what = w.Text(sw.GetJourney().GetTitle())
	}
	if sw.GetStep() != nil {
		what += ", " + w.Step(sw.GetStep())
	}
	c.line(1, what+": "+c.state(sw))
	return nil
}

func (c *citizenCLI) listConsents(ctx context.Context) error {
	res, err := c.api.ListConsents(ctx, &citizenv1.ListConsentsRequest{})
	if err != nil {
		return refused(err)
	}
	if c.flags.json {
		return printJSON(c.out, res)
	}
	w := c.words
	c.line(0, w.T("consents.mine"))
	if len(res.GetConsents()) == 0 {
		c.line(1, w.T("consents.empty"))
		return nil
	}
	day := func(t *timestamppb.Timestamp) string { return w.Day(t.AsTime()) }
	for _, cn := range res.GetConsents() {
		state, until := w.T("consent.state.valid"), w.T("consent.until")+": "+day(cn.GetExpiresAt())
		switch {
		case cn.GetRevokedAt() != nil:
			state, until = w.T("consent.state.revoked"), w.T("consent.revoked")+": "+day(cn.GetRevokedAt())
		case !cn.GetValid():
			state, until = w.T("consent.state.expired"), w.T("consent.expired")+": "+day(cn.GetExpiresAt())
		}
		c.line(0, "")
		c.line(0, w.Text(cn.GetJourney().GetTitle())+", "+w.Step(cn.GetStep())+": "+state)
		c.line(1, w.T("consent.who")+": "+w.Party(cn.GetAgency()))
		c.line(1, w.T("consent.granted")+": "+day(cn.GetGrantedAt()))
		c.line(1, until)
	}
	return nil
}

// log prints the citizen's accesses as the portal's timeline words them: labels from the authorities
// (ListDatasets), refusals in the citizen's words, dates in the language.
func (c *citizenCLI) log(ctx context.Context, loc *time.Location) error {
	labels, err := c.api.ListDatasets(ctx, &citizenv1.ListDatasetsRequest{})
	if err != nil {
		return refused(err)
	}
	c.words = portal.NewWords(c.flags.lang, loc, time.Now(), labels)
	res, err := c.api.ListAccesses(ctx, &citizenv1.ListAccessesRequest{PageSize: int32(c.flags.limit)})
	if err != nil {
		return refused(err)
	}
	if c.flags.json {
		return printJSON(c.out, res)
	}
	w := c.words
	c.line(0, w.T("timeline.title"))
	if len(res.GetAccesses()) == 0 {
		c.line(1, w.T("timeline.empty"))
		return nil
	}
	for _, a := range res.GetAccesses() {
		c.line(0, "")
		for i, l := range w.Access(a) {
			c.line(min(i, 1), l)
		}
	}
	return nil
}
