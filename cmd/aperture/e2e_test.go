package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/server"
	"github.com/aperture-gov/aperture/policies"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// testStack is the whole system in-process, the way `aperture dev` runs it, but on free ports and with a
// NATS server the test controls.
type testStack struct {
	*stack
	t        *testing.T
	dataDir  string
	nats     *natsembed.Server
	natsDir  string
	natsPort int
	conns    sync.Map // agency → *grpc.ClientConn
}

type testOption func(*stackOptions)

func newTestStack(t *testing.T, opts ...testOption) *testStack {
	t.Helper()
	dir := t.TempDir()
	ts := &testStack{t: t, dataDir: dir, natsDir: filepath.Join(dir, "nats")}
	ts.startNATS(-1)
	nc, err := ts.nats.Connect(append(broker.NATSOptions("e2e"), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	// AppendTimeout: these tests are not about failing fast (the fault and full-disk tests are); on a
	// loaded machine one durable write can take longer than the production 250 ms.
	o := stackOptions{DataDir: dir, Listen: "127.0.0.1:0", Citizens: 1000, Policies: policies.Files(), RandomPorts: true, NATS: nc, Logger: logger,
		AppendTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := startStack(ctx, o)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	ts.stack = st
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("stack run: %v", err)
		}
		ts.conns.Range(func(_, v any) bool { v.(*grpc.ClientConn).Close(); return true })
		nc.Close()
		ts.nats.Shutdown()
	})
	return ts
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startNATS starts the test's NATS server as the broker would embed it: the broker's nkey in the
// data directory (so a restarted server takes the broker's connection back, and `aperture audit
// verify` finds it), TLS with the stack's development CA, and the registry's agencies admitted by
// their certificates.
func (ts *testStack) startNATS(port int) {
	ts.t.Helper()
	key, err := natsembed.LoadOrCreateKey(filepath.Join(ts.natsDir, broker.EmbeddedNATSKeyFile))
	if err != nil {
		ts.t.Fatal(err)
	}
	ca, err := mtls.OpenDevCA(filepath.Join(ts.dataDir, "pki"), trustDomain)
	if err != nil {
		ts.t.Fatal(err)
	}
	certs, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		ts.t.Fatal(err)
	}
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		ts.t.Fatal(err)
	}
	var agencies []natsembed.Agency
	for _, a := range reg.Agencies {
		agencies = append(agencies, natsembed.Agency{ID: a.ID, Identity: a.Identity})
	}
	srv, err := natsembed.Start(natsembed.Options{Dir: ts.natsDir, Port: port, ServerName: "e2e", BrokerKey: key, TLS: certs, Agencies: agencies})
	if err != nil {
		ts.t.Fatalf("start NATS: %v", err)
	}
	ts.nats = srv
	_, p, _ := net.SplitHostPort(srv.ClientURL()[strings.Index(srv.ClientURL(), "://")+3:])
	ts.natsPort, _ = strconv.Atoi(p)
}

// conn returns a client connection to the broker with the certificate of kind/name.
func (ts *testStack) conn(kind, name string) *grpc.ClientConn {
	ts.t.Helper()
	key := kind + "/" + name
	if c, ok := ts.conns.Load(key); ok {
		return c.(*grpc.ClientConn)
	}
	src, err := ts.CA.Source(kind, name)
	if err != nil {
		ts.t.Fatal(err)
	}
	cc, err := grpc.NewClient(ts.Broker.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, mtls.ID(trustDomain, "broker", "")))))
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.conns.Store(key, cc)
	return cc
}

func (ts *testStack) agency(name string) brokerv1.BrokerServiceClient {
	return brokerv1.NewBrokerServiceClient(ts.conn("agency", name))
}

func (ts *testStack) auditor() auditv1.AuditServiceClient {
	return auditv1.NewAuditServiceClient(ts.conn("auditor", "dpo"))
}

func cw(id string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), server.CaseworkerHeader, id)
}

func (ts *testStack) open(agency, journey, citizen string) *brokerv1.Case {
	ts.t.Helper()
	resp, err := ts.agency(agency).OpenCase(cw("cw-1"), &brokerv1.OpenCaseRequest{Journey: journey, CitizenId: citizen})
	if err != nil {
		ts.t.Fatalf("open %s for %s as %s: %v", journey, citizen, agency, err)
	}
	return resp.GetCase()
}

func (ts *testStack) grantConsent(citizen, journey, step string) {
	ts.t.Helper()
	pn := ts.Pseudonyms.Pseudonym(citizen)
	if _, err := ts.Broker.Consent.Grant(context.Background(), pn.Value, journey, step, time.Now(), 24*time.Hour); err != nil {
		ts.t.Fatal(err)
	}
}

// accessRecords lists the citizen's access records as the auditor. Each listing is itself logged (an
// auditor read); those records are left out here, so that a test counts the accesses it caused.
func (ts *testStack) accessRecords(citizen string) []*auditv1.AccessRecord {
	ts.t.Helper()
	var out []*auditv1.AccessRecord
	token := ""
	for {
		resp, err := ts.auditor().ListAccessRecords(context.Background(), &auditv1.ListAccessRecordsRequest{CitizenId: citizen, PageSize: 1000, PageToken: token})
		if err != nil {
			ts.t.Fatalf("list access records: %v", err)
		}
		// Every listed record comes with its leaf: the same record, as its exact log bytes.
		if len(resp.GetLeaves()) != len(resp.GetRecords()) {
			ts.t.Fatalf("list access records: %d records with %d leaves", len(resp.GetRecords()), len(resp.GetLeaves()))
		}
		for i, lf := range resp.GetLeaves() {
			var rec auditv1.AccessRecord
			if err := proto.Unmarshal(lf.GetLeaf(), &rec); err != nil || !proto.Equal(&rec, resp.GetRecords()[i]) {
				ts.t.Fatalf("list access records: leaf %d is not record %s (%v)", lf.GetLeafIndex(), resp.GetRecords()[i].GetId(), err)
			}
		}
		for _, r := range resp.GetRecords() {
			if r.GetKind() != auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ {
				out = append(out, r)
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out
		}
	}
}

func wantCode(t *testing.T, err error, code codes.Code, contains ...string) {
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

// wantReason checks the google.rpc.ErrorInfo of a refusal: the reason agency systems branch on, in the
// broker's domain, with the metadata given (key, value pairs).
func wantReason(t *testing.T, err error, reason string, kv ...string) {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok {
			continue
		}
		if info.GetReason() != reason || info.GetDomain() != refusal.ErrorInfoDomain {
			t.Fatalf("ErrorInfo %s/%s, want %s/%s", info.GetDomain(), info.GetReason(), refusal.ErrorInfoDomain, reason)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if got := info.GetMetadata()[kv[i]]; got != kv[i+1] {
				t.Fatalf("ErrorInfo metadata %s = %q, want %q (all: %v)", kv[i], got, kv[i+1], info.GetMetadata())
			}
		}
		return
	}
	t.Fatalf("%v carries no ErrorInfo, want reason %s", err, reason)
}

// citizenFor picks a featured citizen whose story suits the journey.
func (ts *testStack) citizenFor(journey string) string {
	f := ts.Population.Featured()
	if journey == "sickness-benefit" {
		return f[0].ID
	}
	return f[1].ID
}

// decode unpacks a released record with the schema the authority described.
func decode(t *testing.T, md protoreflect.MessageDescriptor, r *brokerv1.ReleaseResponse) *dynamicpb.Message {
	t.Helper()
	if got := r.GetRecord().MessageName(); got != md.FullName() {
		t.Fatalf("record type %s, want %s", got, md.FullName())
	}
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(r.GetRecord().GetValue(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestJourneysEndToEnd walks every journey through the broker over mTLS: at each step the acting agency
// releases everything the step allows (and gets exactly that), then completes the step; at the end the
// case is closed and refuses further releases; every release is in the citizen's access log.
func TestJourneysEndToEnd(t *testing.T) {
	ts := newTestStack(t)
	for _, j := range ts.Broker.Bundle().Journeys() {
		t.Run(j.ID, func(t *testing.T) {
			citizen := ts.citizenFor(j.ID)
			c := ts.open(j.Steps[0].Agency, j.ID, citizen)
			if c.GetCurrentStep() != j.Steps[0].ID || c.GetState() != brokerv1.CaseState_CASE_STATE_OPEN {
				t.Fatalf("new case at %q (%v), want %q open", c.GetCurrentStep(), c.GetState(), j.Steps[0].ID)
			}
			var accessIDs []string
			nonEmpty := 0
			for i, step := range j.Steps {
				if step.Consent != nil {
					ts.grantConsent(citizen, j.ID, step.ID)
				}
				client := ts.agency(step.Agency)
				for _, rule := range step.Rules {
					resp, err := client.Release(cw("cw-7"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
					if err != nil {
						t.Fatalf("step %s: release %s.%s: %v", step.ID, rule.Authority, rule.Dataset, err)
					}
					if !slices.Equal(resp.GetFields(), rule.Fields) {
						t.Errorf("step %s: released fields %v, want %v", step.ID, resp.GetFields(), rule.Fields)
					}
					m := decode(t, rule.Message, resp)
					if extra := fieldmask.Extra(m, rule.Fields); len(extra) > 0 {
						t.Errorf("step %s: record carries fields outside the step: %v", step.ID, extra)
					}
					nonEmpty += proto.Size(m) + len(resp.GetDerived())
					if len(resp.GetDerived()) != len(rule.Derived) {
						t.Errorf("step %s: %d derived facts, want %d", step.ID, len(resp.GetDerived()), len(rule.Derived))
					}
					if resp.GetStep() != step.ID || resp.GetLegalBasis() != step.LegalBasis {
						t.Errorf("step %s: response names step %q, law %q", step.ID, resp.GetStep(), resp.GetLegalBasis())
					}
					accessIDs = append(accessIDs, resp.GetAccessId())
				}
				done, err := client.CompleteStep(cw("cw-7"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: step.ID})
				if err != nil {
					t.Fatalf("complete %s: %v", step.ID, err)
				}
				if i+1 < len(j.Steps) && done.GetCase().GetCurrentStep() != j.Steps[i+1].ID {
					t.Fatalf("after %s the case is at %q, want %q", step.ID, done.GetCase().GetCurrentStep(), j.Steps[i+1].ID)
				}
			}
			if nonEmpty == 0 {
				t.Fatal("the whole journey released nothing but empty records; the demo data does not fit it")
			}
			last := j.Steps[len(j.Steps)-1]
			got, err := ts.agency(last.Agency).GetCase(cw("cw-7"), &brokerv1.GetCaseRequest{CaseId: c.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if got.GetCase().GetState() != brokerv1.CaseState_CASE_STATE_CLOSED {
				t.Fatalf("after the last step the case is %v, want closed", got.GetCase().GetState())
			}
			rule := last.Rules[0]
			_, err = ts.agency(last.Agency).Release(cw("cw-7"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
			wantCode(t, err, codes.FailedPrecondition, "closed")
			wantReason(t, err, "CASE_CLOSED", "case", c.GetId())

			logged := map[string]*auditv1.AccessRecord{}
			for _, r := range ts.accessRecords(citizen) {
				logged[r.GetId()] = r
			}
			for _, id := range accessIDs {
				r, ok := logged[id]
				if !ok {
					t.Fatalf("release %s is not in the citizen's access log", id)
				}
				if r.GetDecision() != auditv1.Decision_DECISION_RELEASED || r.GetCaseId() != c.GetId() || r.GetCaseworker() != "cw-7" {
					t.Errorf("access record %s: %v", id, r)
				}
			}
		})
	}
}

// TestMinimalDisclosureExhaustive asks, at every step of every journey, for every leaf field of every
// authority dataset that the step does not allow — one field at a time — and expects each to be refused
// by name, with nothing released. The list comes from the policies and the authorities' descriptors.
func TestMinimalDisclosureExhaustive(t *testing.T) {
	ts := newTestStack(t)
	bundle := ts.Broker.Bundle()
	reg := bundle.Registry
	total := 0
	opened := map[string][]string{} // case ids by citizen
	for _, j := range bundle.Journeys() {
		citizen := ts.citizenFor(j.ID)
		c := ts.open(j.Steps[0].Agency, j.ID, citizen)
		opened[citizen] = append(opened[citizen], c.GetId())
		for _, step := range j.Steps {
			if step.Consent != nil {
				ts.grantConsent(citizen, j.ID, step.ID)
			}
			client := ts.agency(step.Agency)
			for _, a := range reg.Authorities {
				for _, ds := range a.Datasets {
					md, err := ts.Broker.Descriptors().Dataset(a.ID, ds)
					if err != nil {
						t.Fatal(err)
					}
					var allowed []string
					if rule, ok := step.Rule(a.ID, ds); ok {
						allowed = rule.Fields
					}
					for _, leaf := range fieldmask.Leaves(md) {
						if fieldmask.Covers(allowed, leaf) {
							continue
						}
						total++
						_, err := client.Release(cw("cw-9"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: a.ID, Dataset: ds, Fields: []string{leaf}})
						if status.Code(err) != codes.PermissionDenied {
							t.Fatalf("%s/%s: %s.%s field %q: got %v, want PermissionDenied", j.ID, step.ID, a.ID, ds, leaf, err)
						}
						msg := status.Convert(err).Message()
						if !strings.Contains(msg, leaf) {
							t.Fatalf("refusal %q does not name the field %q", msg, leaf)
						}
					}
				}
			}
			if _, err := client.CompleteStep(cw("cw-9"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: step.ID}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if total < 100 {
		t.Fatalf("only %d disallowed leaf fields checked; the generator is broken", total)
	}
	t.Logf("%d disallowed field requests refused", total)
	// Refusals are logged too, and nothing was released; besides them, each citizen's records hold only
	// the register checks made before their cases were opened, and the records that completing a step
	// past a covert one showed the citizen its hidden refusals (no data).
	for id, cases := range opened {
		rest, checks := ts.splitChecks(ts.accessRecords(id))
		for _, r := range rest {
			if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED && len(r.GetFields())+len(r.GetDerived()) == 0 && r.GetCovertReveal().GetAccesses() > 0 {
				continue
			}
			if r.GetDecision() != auditv1.Decision_DECISION_REFUSED || r.GetCode() != "PermissionDenied" {
				t.Fatalf("unexpected access record %v", r)
			}
		}
		ts.wantChecks(t, checks, cases...)
	}
}

// TestRefusals covers the other ways a release is refused, each with its code, and checks that a
// mixed request (one allowed field, one not) releases nothing rather than the allowed part.
func TestRefusals(t *testing.T) {
	ts := newTestStack(t)
	j, _ := ts.Broker.Bundle().Journey("sickness-benefit")
	citizen := ts.citizenFor(j.ID)
	first := j.Steps[0]
	rule := first.Rules[0]
	c := ts.open(first.Agency, j.ID, citizen)
	// An agency of a later step: it takes part, but not now. (An agency with no step at all is told the
	// case does not exist: reads_e2e_test.go.)
	other := otherAgency(ts.Registry, first.Agency)
	if i := slices.IndexFunc(j.Steps, func(s *policy.Step) bool { return s.Agency != first.Agency }); i >= 0 {
		other = j.Steps[i].Agency
	}

	t.Run("wrong agency", func(t *testing.T) {
		_, err := ts.agency(other).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
		wantCode(t, err, codes.PermissionDenied)
		wantReason(t, err, "STEP_NOT_CURRENT", "step", first.ID, "agency", first.Agency)
	})
	t.Run("mixed request is refused whole", func(t *testing.T) {
		md := rule.Message
		var disallowed string
		for _, leaf := range fieldmask.Leaves(md) {
			if !fieldmask.Covers(rule.Fields, leaf) {
				disallowed = leaf
				break
			}
		}
		_, err := ts.agency(first.Agency).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset, Fields: []string{rule.Fields[0], disallowed}})
		wantCode(t, err, codes.PermissionDenied, disallowed)
		wantReason(t, err, "FIELD_NOT_RELEASED", "field", disallowed, "step", first.ID, "dataset", rule.Authority+"."+rule.Dataset)
		if !slices.ContainsFunc(ts.accessRecords(citizen), func(r *auditv1.AccessRecord) bool {
			return r.GetRefusalReason() == auditv1.RefusalReason_REFUSAL_REASON_FIELD_NOT_RELEASED && r.GetRefusalSubject() == disallowed
		}) {
			t.Fatalf("no access record of the refusal says FIELD_NOT_RELEASED about %q", disallowed)
		}
	})
	t.Run("dataset not in step", func(t *testing.T) {
		_, err := ts.agency(first.Agency).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "health", Dataset: "patient"})
		wantCode(t, err, codes.PermissionDenied, "health.patient")
		wantReason(t, err, "DATASET_NOT_RELEASED", "dataset", "health.patient")
	})
	t.Run("malformed path changes nothing", func(t *testing.T) {
		before := len(ts.accessRecords(citizen))
		for _, tc := range []struct{ field, reason string }{
			{"Address", "INVALID_REQUEST"}, {"address..city", "INVALID_REQUEST"}, // not a path at all
			{"no_such_field", "INVALID_FIELD_PATH"}, {"address.no_such", "INVALID_FIELD_PATH"}, // no such field
		} {
			_, err := ts.agency(first.Agency).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset, Fields: []string{tc.field}})
			wantCode(t, err, codes.InvalidArgument)
			if tc.reason == "INVALID_FIELD_PATH" {
				wantReason(t, err, tc.reason, "field", tc.field)
			} else {
				wantReason(t, err, tc.reason)
			}
		}
		if after := len(ts.accessRecords(citizen)); after != before {
			t.Fatalf("invalid requests wrote %d access records", after-before)
		}
	})
	t.Run("malformed ids", func(t *testing.T) {
		_, err := ts.agency(first.Agency).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: "case_x", Authority: rule.Authority, Dataset: rule.Dataset})
		wantCode(t, err, codes.InvalidArgument)
		_, err = ts.agency(first.Agency).OpenCase(cw("x1"), &brokerv1.OpenCaseRequest{Journey: j.ID, CitizenId: "12345"})
		wantCode(t, err, codes.InvalidArgument)
		_, err = ts.agency(first.Agency).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: "case_00000000000000000000000000", Authority: rule.Authority, Dataset: rule.Dataset})
		wantCode(t, err, codes.NotFound)
		wantReason(t, err, "CASE_NOT_FOUND")
	})
	t.Run("no caseworker", func(t *testing.T) {
		_, err := ts.agency(first.Agency).GetCase(context.Background(), &brokerv1.GetCaseRequest{CaseId: c.GetId()})
		wantCode(t, err, codes.InvalidArgument, server.CaseworkerHeader)
	})
	t.Run("only the first step's agency opens", func(t *testing.T) {
		_, err := ts.agency(other).OpenCase(cw("x1"), &brokerv1.OpenCaseRequest{Journey: j.ID, CitizenId: citizen})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("step not current", func(t *testing.T) {
		_, err := ts.agency(first.Agency).CompleteStep(cw("x1"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: j.Steps[1].ID})
		wantCode(t, err, codes.FailedPrecondition, "not current")
		wantReason(t, err, "STEP_NOT_CURRENT", "step", first.ID)
	})
	t.Run("auditor API refuses agencies", func(t *testing.T) {
		_, err := auditv1.NewAuditServiceClient(ts.conn("agency", first.Agency)).ListAccessRecords(cw("x1"), &auditv1.ListAccessRecordsRequest{CitizenId: citizen})
		wantCode(t, err, codes.PermissionDenied)
	})

	// Walk to the consent step: without consent refused, with consent released, revoked refused again,
	// expired refused.
	consentIdx := slices.IndexFunc(j.Steps, func(s *policy.Step) bool { return s.Consent != nil })
	if consentIdx < 0 {
		t.Fatal("sickness-benefit has no consent step")
	}
	for _, s := range j.Steps[:consentIdx] {
		if _, err := ts.agency(s.Agency).CompleteStep(cw("x1"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: s.ID}); err != nil {
			t.Fatal(err)
		}
	}
	cs := j.Steps[consentIdx]
	crule := cs.Rules[0]
	release := func() error {
		_, err := ts.agency(cs.Agency).Release(cw("x1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: crule.Authority, Dataset: crule.Dataset})
		return err
	}
	wantCode(t, release(), codes.FailedPrecondition, "consent")
	pn := ts.Pseudonyms.Pseudonym(citizen)
	ctx := context.Background()
	if _, err := ts.Broker.Consent.Grant(ctx, pn.Value, j.ID, cs.ID, time.Now().Add(-48*time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	wantCode(t, release(), codes.FailedPrecondition, "expired")
	ts.grantConsent(citizen, j.ID, cs.ID)
	if err := release(); err != nil {
		t.Fatalf("release with consent: %v", err)
	}
	if _, err := ts.Broker.Consent.Revoke(ctx, pn.Value, j.ID, cs.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantCode(t, release(), codes.FailedPrecondition, "revoked")

	// Close early: nothing more is released.
	if _, err := ts.agency(first.Agency).CloseCase(cw("x1"), &brokerv1.CloseCaseRequest{CaseId: c.GetId(), Reason: "withdrawn by the citizen"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, release(), codes.FailedPrecondition, "closed")

	// Every refusal above that concerned the case is in the log, with its reason.
	refusals := 0
	for _, r := range ts.accessRecords(citizen) {
		if r.GetDecision() == auditv1.Decision_DECISION_REFUSED {
			refusals++
			if r.GetReason() == "" || r.GetCode() == "" {
				t.Errorf("refusal without reason: %v", r)
			}
			if strings.Contains(r.GetReason(), citizen) {
				t.Errorf("refusal reason contains the citizen id: %q", r.GetReason())
			}
		}
	}
	if refusals < 7 {
		t.Fatalf("%d refusals logged, want at least 7", refusals)
	}
}

func otherAgency(reg *policy.Registry, not string) string {
	for _, a := range reg.Agencies {
		if a.ID != not {
			return a.ID
		}
	}
	return ""
}

// TestFailClosedWhenLogUnavailable stops the NATS server under load: every release that returned data
// must be in the log after restart, and while NATS is down releases fail with Unavailable.
func TestFailClosedWhenLogUnavailable(t *testing.T) {
	ts := newTestStack(t)
	j, _ := ts.Broker.Bundle().Journey("sickness-benefit")
	citizen := ts.citizenFor(j.ID)
	first := j.Steps[0]
	rule := first.Rules[0]
	c := ts.open(first.Agency, j.ID, citizen)
	client := ts.agency(first.Agency)
	req := &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset}

	var (
		mu       sync.Mutex
		released []string
		wg       sync.WaitGroup
		stop     = make(chan struct{})
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(cw("load"), 10*time.Second)
				resp, err := client.Release(ctx, req)
				cancel()
				if err == nil {
					if resp.GetRecord() == nil {
						t.Error("release without record")
					}
					mu.Lock()
					released = append(released, resp.GetAccessId())
					mu.Unlock()
				} else if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
					t.Errorf("release while NATS stops: %v (want Unavailable)", err)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	ts.nats.Shutdown()
	// With the server down, a release must fail Unavailable and carry no record.
	ctx, cancel := context.WithTimeout(cw("down"), 15*time.Second)
	resp, err := client.Release(ctx, req)
	cancel()
	if resp != nil {
		t.Fatalf("release returned data while the log was down: %v", resp)
	}
	wantCode(t, err, codes.Unavailable)
	close(stop)
	wg.Wait()

	ts.startNATS(ts.natsPort)
	// The broker reconnects; then every release a caller received is in the log.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := client.Release(cw("after"), req)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker did not recover after NATS restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(released) == 0 {
		t.Fatal("no release succeeded before NATS stopped; the test proves nothing")
	}
	// The log itself (ACCESS, read in order) holds every record whose release a caller received.
	inLog := map[string]bool{}
	err = ts.Broker.AccessLog().Records(context.Background(), 1, func(_ uint64, _ int, leaf []byte) error {
		var r auditv1.AccessRecord
		if err := proto.Unmarshal(leaf, &r); err != nil {
			return err
		}
		if r.GetDecision() == auditv1.Decision_DECISION_RELEASED {
			inLog[r.GetId()] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range released {
		if !inLog[id] {
			t.Fatalf("access %s was released but is not in the log", id)
		}
	}
	// The citizen's view (the per-citizen index, repaired in the background after the outage) catches up.
	deadline = time.Now().Add(20 * time.Second)
	for {
		listed := map[string]bool{}
		for _, r := range ts.accessRecords(citizen) {
			listed[r.GetId()] = true
		}
		missing := 0
		for _, id := range released {
			if !listed[id] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d released accesses never appeared in the citizen's index", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d releases before the stop, all in the log", len(released))

	// The server is up but the ACCESS stream is gone (an operator's mistake): still nothing is released.
	js, err := jetstream.New(ts.stack.Broker.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "ACCESS"); err != nil {
		t.Fatal(err)
	}
	resp, err = client.Release(cw("no-stream"), req)
	if resp != nil {
		t.Fatalf("release returned data without an ACCESS stream: %v", resp)
	}
	wantCode(t, err, codes.Unavailable)
}

// TestOverSharingAuthorityIsStripped puts a proxy in front of the population authority that asks for
// more than the broker's mask and passes it on. The caller never sees the extra fields, and the access
// record names them as a violation.
func TestOverSharingAuthorityIsStripped(t *testing.T) {
	var proxyAddr string
	ts := newTestStack(t, func(o *stackOptions) {
		o.Rewire = func(id, addr string) string {
			if id != "population" {
				return addr
			}
			proxyAddr = startOverSharingProxy(t, o.DataDir, addr)
			return proxyAddr
		}
	})
	j, _ := ts.Broker.Bundle().Journey("sickness-benefit")
	first := j.Steps[0]
	rule, ok := first.Rule("population", "person")
	if !ok {
		t.Fatal("first step of sickness-benefit must release population.person")
	}
	citizen := ts.citizenFor(j.ID)
	c := ts.open(first.Agency, j.ID, citizen)
	resp, err := ts.agency(first.Agency).Release(cw("cw-3"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "population", Dataset: "person"})
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, rule.Message, resp)
	if extra := fieldmask.Extra(m, rule.Fields); len(extra) > 0 {
		t.Fatalf("over-shared fields reached the caller: %v", extra)
	}
	var rec *auditv1.AccessRecord
	for _, r := range ts.accessRecords(citizen) {
		if r.GetId() == resp.GetAccessId() {
			rec = r
		}
	}
	if rec == nil || len(rec.GetViolations()) == 0 {
		t.Fatalf("access record does not name the violation: %v", rec)
	}
	for _, v := range rec.GetViolations() {
		if fieldmask.Covers(rule.Fields, v) {
			t.Errorf("violation %q is an allowed field", v)
		}
	}
	t.Logf("violations logged: %v", rec.GetViolations())
}

// startOverSharingProxy serves AuthorityService with the population authority's identity, forwarding to
// the real one but widening every field mask to the whole record.
func startOverSharingProxy(t *testing.T, dataDir, upstream string) string {
	return startPopulationProxy(t, dataDir, upstream, func(up authorityv1.AuthorityServiceClient) authorityv1.AuthorityServiceServer {
		return &overSharer{up: up}
	})
}

// startPopulationProxy serves AuthorityService with the population authority's identity (dev CA in
// dataDir), with the server serve makes around a client of the real authority at upstream.
func startPopulationProxy(t *testing.T, dataDir, upstream string, serve func(up authorityv1.AuthorityServiceClient) authorityv1.AuthorityServiceServer) string {
	ca, err := mtls.OpenDevCA(filepath.Join(dataDir, "pki"), trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	asBroker, err := ca.Source("broker", "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(asBroker, mtls.ID(trustDomain, "authority", "population")))))
	if err != nil {
		t.Fatal(err)
	}
	asPopulation, err := ca.Source("authority", "population")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtls.ServerConfig(asPopulation))))
	authorityv1.RegisterAuthorityServiceServer(srv, serve(authorityv1.NewAuthorityServiceClient(cc)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Stop(); cc.Close() })
	return lis.Addr().String()
}

type overSharer struct {
	authorityv1.UnimplementedAuthorityServiceServer
	up authorityv1.AuthorityServiceClient
}

func (o *overSharer) Describe(ctx context.Context, req *authorityv1.DescribeRequest) (*authorityv1.DescribeResponse, error) {
	return o.up.Describe(ctx, req)
}

func (o *overSharer) Fetch(ctx context.Context, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, error) {
	wide := proto.Clone(req).(*authorityv1.FetchRequest)
	wide.FieldMask.Paths = append(wide.FieldMask.Paths, "civil_status", "household", "birth_date")
	return o.up.Fetch(ctx, wide)
}

var _ = fmt.Sprint
