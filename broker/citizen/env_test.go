package citizen_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/server"
	"github.com/aperture-gov/aperture/policies"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// The test citizens. Anna and Bo exist at every authority; Cai exists nowhere. Dan is Bo's child, in
// Bo's custody in the registry's custody register, and comes of age danComesOfAge after the tests start.
const (
	anna = "0101901234"
	bo   = "0202905678"
	cai  = "0303909999"
	dan  = "1212125555"

	danComesOfAge = 10 * 24 * time.Hour

	tokAnna    = "token-anna-8f3a"
	tokBo      = "token-bo-2c71"
	tokCai     = "token-cai-77d0"
	tokDan     = "token-dan-41be"
	tokExpired = "token-expired-0000"
)

// trustDomain is the one the policy registry's identities use.
const trustDomain = "aperture.local"

// tokens is a test Authenticator: fixed tokens for fixed citizens. It is a test double of our own
// interface (the OIDC verifier is tested in broker/citizenauth).
type tokens map[string]string

func (t tokens) Authenticate(_ context.Context, raw string) (string, error) {
	if raw == tokExpired {
		return "", errors.New("token expired for " + anna) // an error that quotes a citizen id must not leak
	}
	id, ok := t[raw]
	if !ok {
		return "", errors.New("unknown token " + raw)
	}
	return id, nil
}

// clock is the broker's injected clock: real time plus an offset the test moves.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// logBuffer collects the broker's log lines, to check that no secret ever reaches them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is a whole broker over real sockets: the catalog's authorities built with the kit (test data, real mTLS),
// the broker from broker.New with its embedded NATS server, the agency API over mTLS and the citizen
// API over TLS with bearer tokens.
type env struct {
	t       testing.TB
	b       *broker.Broker
	ca      *mtls.DevCA
	pn      *keys.Local
	clock   *clock
	logs    *logBuffer
	stop    func() error
	secrets []string

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	cconn  *grpc.ClientConn
	broker map[string]brokerv1.BrokerServiceClient
}

// fixtures are the records the tests read, by "authority.dataset", as protojson with %[1]s for the
// citizen id, %[2]s for their given name and %[3]s for last month. Every other dataset of every
// authority answers its empty record for Anna and Bo.
var fixtures = map[string]string{
	"population.person": `{"citizenId": "%[1]s", "name": {"givenNames": "%[2]s", "familyName": "Testesen"},
		"address": {"street": "Testvej", "houseNumber": "1", "postalCode": "2100", "city": "København Ø", "municipalityCode": "0101"}}`,
	"tax.income": `{"citizenId": "%[1]s", "months": [{"periodStart": "%[3]s", "grossDkk": "31000"}]}`,
}

// authorities are those of services/catalog — every one the registry can name, including one an
// architect has just added — with the catalog's schemas and a small fixed population: Anna and Bo have
// a record everywhere (the fixture, or an empty record with their id), Cai nowhere.
func authorities(t testing.TB) []*kit.Authority {
	people := map[string]string{anna: "Anna", bo: "Bo", dan: "Dan"}
	month := time.Now().UTC().AddDate(0, -1, 0).Format(time.RFC3339)
	reg, err := policy.LoadRegistry(policyFiles(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []*kit.Authority
	for _, a := range catalog.Examples(nil) { // the catalog's own lookups are replaced, never called
		ta := &kit.Authority{ID: a.ID, DisplayName: a.DisplayName + " (test)"}
		for _, ds := range a.Datasets {
			fixture, key := fixtures[a.ID+"."+ds.Name], a.ID+"."+ds.Name
			ds.Lookup = func(_ context.Context, id string) (proto.Message, error) {
				given, ok := people[id]
				if !ok {
					return nil, kit.ErrNotFound
				}
				rec := ds.Message.ProtoReflect().New()
				if fixture != "" {
					if err := protojson.Unmarshal([]byte(fmt.Sprintf(fixture, id, given, month)), rec.Interface()); err != nil {
						t.Errorf("fixture %s: %v", key, err)
						return nil, err
					}
				} else if f := rec.Descriptor().Fields().ByName("citizen_id"); f != nil && f.Kind() == protoreflect.StringKind {
					rec.Set(f, protoreflect.ValueOfString(id))
				}
				if pc := reg.ParentalCustody; pc != nil && id == bo && pc.Authority == a.ID && pc.Dataset == ds.Name {
					addChild(t, rec, pc, dan, people[dan], time.Now().Add(danComesOfAge).AddDate(-pc.AgeOfMajority, 0, 0))
				}
				return rec.Interface(), nil
			}
			ta.Datasets = append(ta.Datasets, ds)
		}
		out = append(out, ta)
	}
	return out
}

// addChild lists a child in the custody field of a parent's record, by the field names the registry's
// custody register is read by.
func addChild(t testing.TB, rec protoreflect.Message, pc *policy.ParentalCustody, id, given string, birth time.Time) {
	f := rec.Descriptor().Fields().ByName(protoreflect.Name(pc.Field))
	if f == nil {
		t.Fatalf("no custody field %q", pc.Field)
	}
	list := rec.Mutable(f).List()
	ch := list.NewElement().Message()
	cf := ch.Descriptor().Fields()
	ch.Set(cf.ByName(policy.CustodyChildID), protoreflect.ValueOfString(id))
	ch.Set(cf.ByName(policy.CustodyGivenNames), protoreflect.ValueOfString(given))
	bd := ch.Mutable(cf.ByName(policy.CustodyBirthDate)).Message()
	bd.Set(bd.Descriptor().Fields().ByName("seconds"), protoreflect.ValueOfInt64(birth.Unix()))
	list.Append(protoreflect.ValueOfMessage(ch))
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	ca, err := mtls.OpenDevCA(filepath.Join(dir, "pki"), trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	pn, err := keys.OpenLocal(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	for _, a := range authorities(t) {
		srv := kittest.StartWithCA(t, ca, a, kit.WithLogger(slog.New(slog.DiscardHandler)))
		addrs[a.ID] = srv.Addr
	}
	certs, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ca: ca, pn: pn, clock: &clock{}, logs: &logBuffer{}, conns: map[string]*grpc.ClientConn{}, broker: map[string]brokerv1.BrokerServiceClient{}}
	e.secrets = []string{anna, bo, cai, dan, tokAnna, tokBo, tokCai, tokDan, tokExpired}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.b, err = broker.New(ctx, broker.Config{
		DataDir: dir, Listen: "127.0.0.1:0", CitizenListen: "127.0.0.1:0", AuthorityAddresses: addrs,
		StartTimeout: 30 * time.Second,
		// These tests are about what citizens see, not about failing fast (the access log's breaker
		// and the cluster fault test are): under -race and parallel tests one durable write can take
		// longer than the production 250 ms, which would open the breaker mid-test.
		AppendTimeout: 10 * time.Second,
	}, broker.Deps{
		Policies: policyFiles(), Certs: certs, Pseudonyms: pn, Sealer: sealer(t, dir),
		Citizens: tokens{tokAnna: anna, tokBo: bo, tokCai: cai, tokDan: dan},
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      e.clock.Now,
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.b.Run(runCtx) }()
	var once sync.Once
	var runErr error
	e.stop = func() error {
		once.Do(func() { stop(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		e.mu.Lock()
		for _, c := range e.conns {
			c.Close()
		}
		if e.cconn != nil {
			e.cconn.Close()
		}
		e.mu.Unlock()
		if err := e.stop(); err != nil {
			t.Errorf("broker run: %v", err)
		}
		logs := e.logs.String()
		for _, s := range e.secrets {
			if strings.Contains(logs, s) {
				t.Errorf("the broker logged a secret %q:\n%s", s, logs)
			}
		}
	})
	return e
}

func policyFiles() fs.FS { return policies.Files() }

// citizen returns the citizen API client (one TLS connection, server-authenticated only).
func (e *env) citizen() citizenv1.CitizenServiceClient {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cconn == nil {
		creds := credentials.NewTLS(&tls.Config{RootCAs: e.ca.Roots(), MinVersion: tls.VersionTLS12})
		cc, err := grpc.NewClient(e.b.CitizenAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			e.t.Fatal(err)
		}
		e.cconn = cc
	}
	return citizenv1.NewCitizenServiceClient(e.cconn)
}

// agency returns the agency API client of agency (mTLS with the agency's certificate).
func (e *env) agency(name string) brokerv1.BrokerServiceClient {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.broker[name]; ok {
		return c
	}
	src, err := e.ca.Source(mtls.KindAgency, name)
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.b.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, mtls.ID(trustDomain, mtls.KindBroker, "")))))
	if err != nil {
		e.t.Fatal(err)
	}
	e.conns[name] = cc
	e.broker[name] = brokerv1.NewBrokerServiceClient(cc)
	return e.broker[name]
}

// as is a call context carrying a citizen's bearer token.
func as(token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_ = cancel // released when the deadline passes; tests are short
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// cw is a call context naming a caseworker.
func cw(id string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_ = cancel
	return metadata.AppendToOutgoingContext(ctx, server.CaseworkerHeader, id)
}

func (e *env) open(agency, journey, citizen string) *brokerv1.Case {
	e.t.Helper()
	resp, err := e.agency(agency).OpenCase(cw("cw-1"), &brokerv1.OpenCaseRequest{Journey: journey, CitizenId: citizen})
	if err != nil {
		e.t.Fatalf("open %s: %v", journey, err)
	}
	return resp.GetCase()
}

func (e *env) release(agency, caseID, authority, dataset string) *brokerv1.ReleaseResponse {
	e.t.Helper()
	resp, err := e.agency(agency).Release(cw("cw-7"), &brokerv1.ReleaseRequest{CaseId: caseID, Authority: authority, Dataset: dataset})
	if err != nil {
		e.t.Fatalf("release %s.%s: %v", authority, dataset, err)
	}
	return resp
}

func (e *env) complete(agency, caseID, step string) {
	e.t.Helper()
	if _, err := e.agency(agency).CompleteStep(cw("cw-7"), &brokerv1.CompleteStepRequest{CaseId: caseID, Step: step}); err != nil {
		e.t.Fatalf("complete %s: %v", step, err)
	}
}

// accesses lists all of a citizen's accesses through the citizen API.
func (e *env) accesses(token string, req *citizenv1.ListAccessesRequest) []*citizenv1.Access {
	e.t.Helper()
	var out []*citizenv1.Access
	for i := 0; ; i++ {
		resp, err := e.citizen().ListAccesses(as(token), req)
		if err != nil {
			e.t.Fatalf("ListAccesses: %v", err)
		}
		out = append(out, resp.GetAccesses()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		if i > 10_000 {
			e.t.Fatal("ListAccesses does not end")
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func wantCode(t testing.TB, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	for _, c := range contains {
		if !strings.Contains(status.Convert(err).Message(), c) {
			t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), c)
		}
	}
}

// sealer is the local sealing key of the data directory.
func sealer(t testing.TB, dir string) keys.Sealer {
	t.Helper()
	p, err := keys.OpenLocalProvider(filepath.Join(dir, "keys"), "")
	if err != nil {
		t.Fatal(err)
	}
	return p.Sealer()
}

// isRegisterCheck reports whether a is the broker's check with the registry's citizen register before
// a case was opened (release.CheckRegistered): a case read of the register's dataset. A read of the case
// itself names no authority.
func (e *env) isRegisterCheck(a *citizenv1.Access) bool {
	reg := e.b.Bundle().Registry.CitizenRegister
	return reg != nil && a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ &&
		a.GetAuthority().GetId() == reg.Authority && a.GetDataset() == reg.Dataset
}

// splitChecks separates a citizen's accesses into the register checks (isRegisterCheck) and the rest,
// each in the order given.
func (e *env) splitChecks(as []*citizenv1.Access) (rest, checks []*citizenv1.Access) {
	for _, a := range as {
		if e.isRegisterCheck(a) {
			checks = append(checks, a)
		} else {
			rest = append(rest, a)
		}
	}
	return rest, checks
}

// wantChecks fails the test unless checks are the register checks of opening exactly the cases
// caseIDs: one each, passed and releasing no field, when the registry names a citizen register; none
// when it does not.
func (e *env) wantChecks(checks []*citizenv1.Access, caseIDs ...string) {
	e.t.Helper()
	if e.b.Bundle().Registry.CitizenRegister == nil {
		caseIDs = nil
	}
	var got []string
	for _, c := range checks {
		got = append(got, c.GetCaseId())
		if c.GetDecision() != auditv1.Decision_DECISION_RELEASED || len(c.GetFields()) != 0 || len(c.GetFacts()) != 0 {
			e.t.Errorf("register check %v: want one that passed and released nothing", c)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(caseIDs))) {
		e.t.Fatalf("register checks of cases %v, want one for each of %v", got, caseIDs)
	}
}
