package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/corrections"
	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// plainReleaseStep is the first journey whose first step releases fields without consent, covert
// access or an optional switch: a case can release it straight after opening.
func plainReleaseStep(t *testing.T, b *policy.Bundle) (*policy.Journey, *policy.Rule) {
	t.Helper()
	for _, j := range b.Journeys() {
		st := j.Steps[0]
		if st.Consent != nil || st.Covert != nil || j.OptionalAt(st) != nil {
			continue
		}
		for _, r := range st.Rules {
			if len(r.Fields) > 0 {
				return j, r
			}
		}
	}
	t.Skip("no journey's first step releases fields without consent")
	return nil, nil
}

// correctionsAPI is the citizen's correction API, as the citizen.
func (ts *testStack) correctionsAPI(citizen string) (citizenv1.CitizenCorrectionServiceClient, context.Context) {
	ts.t.Helper()
	_, ctx := ts.citizenAPI(citizen)
	return citizenv1.NewCitizenCorrectionServiceClient(ts.Portal.conn), ctx
}

// TestCorrectionEndToEnd: an agency's case releases a field → the citizen flags it as wrong in the
// citizen API (real gRPC over TLS, OpenID token) with a proposed value → the request is logged, the
// citizen sees the case that used the field, the agency gets a correction event on NATS that names the
// case and field but not the value → the authority's staff list it (with `aperture authority
// corrections`) and reject it with a reason → the citizen sees the outcome, the agency is told, the
// decision is logged. BOLA: another citizen sees nothing, an agency and the auditor may not call the
// authority API, another authority neither sees nor decides the request. The journey, rule, field and
// authorities come from the policies and registry.
func TestCorrectionEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen, o.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	})
	b := ts.Broker.Bundle()
	j, rule := plainReleaseStep(t, b)
	agency := j.Steps[0].Agency
	citizen := ts.citizenFor(j.ID)
	var other string
	for _, f := range ts.Population.Featured() {
		if f.ID != citizen {
			other = f.ID
			break
		}
	}
	field := rule.Fields[0]
	var otherAuthority string
	for _, a := range b.Registry.Authorities {
		if a.ID != rule.Authority {
			otherAuthority = a.ID
			break
		}
	}

	// The agency's system listens on its own event subject, with its own certificate.
	pki := filepath.Join(ts.dataDir, "pki")
	if _, err := ts.CA.Source(mtls.KindAgency, agency); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ts.nats.ClientURL(), nats.ClientCert(filepath.Join(pki, "agency-"+agency+".crt"), filepath.Join(pki, "agency-"+agency+".key")),
		nats.RootCAs(filepath.Join(pki, "ca.crt")), nats.NoReconnect())
	if err != nil {
		t.Fatalf("agency %s connects to NATS: %v", agency, err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("aperture.events.agency." + agency + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := ts.open(agency, j.ID, citizen)
	if _, err := ts.agency(agency).Release(cw("cw-1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset}); err != nil {
		t.Fatalf("release %s.%s: %v", rule.Authority, rule.Dataset, err)
	}

	const proposed = "Proposed-Value-7f3a"
	api, ctx := ts.correctionsAPI(citizen)
	// A field the dataset does not have, and a dataset the authority does not hold, are refused.
	_, err = api.RequestCorrection(ctx, &citizenv1.RequestCorrectionRequest{Authority: rule.Authority, Dataset: rule.Dataset, Field: "no_such_field", Reason: "wrong"})
	wantCode(t, err, codes.InvalidArgument, "no field")
	_, err = api.RequestCorrection(ctx, &citizenv1.RequestCorrectionRequest{Authority: otherAuthority, Dataset: rule.Dataset + "x", Field: field, Reason: "wrong"})
	wantCode(t, err, codes.NotFound, "no dataset")

	resp, err := api.RequestCorrection(ctx, &citizenv1.RequestCorrectionRequest{
		Authority: rule.Authority, Dataset: rule.Dataset, Field: field, Reason: "This changed last spring.", ProposedValue: proposed,
	})
	if err != nil {
		t.Fatalf("request correction of %s.%s %s: %v", rule.Authority, rule.Dataset, field, err)
	}
	cor := resp.GetCorrection()
	if cor.GetState() != citizenv1.CorrectionState_CORRECTION_STATE_OPEN || cor.GetField().GetEn() == "" || cor.GetField().GetEn() == field {
		t.Fatalf("filed: %v, want open with the field's label", cor)
	}
	if len(cor.GetCases()) != 1 || cor.GetCases()[0].GetCaseId() != c.GetId() || cor.GetCases()[0].GetAgency().GetId() != agency {
		t.Fatalf("cases that used the field: %v, want case %s at %s", cor.GetCases(), c.GetId(), agency)
	}
	waitCorrectionEvent(t, sub, corrections.EventRequested, c.GetId(), proposed)

	// Logged in the citizen's access log, without the value.
	requested := findCorrectionRecord(t, ts.accessRecords(citizen), auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED, cor.GetId())
	if requested.GetAuthority() != rule.Authority || len(requested.GetFields()) != 1 || requested.GetFields()[0] != field {
		t.Fatalf("request record: %v", requested)
	}

	// BOLA: another citizen sees nothing; agencies and the auditor may not use the authority API;
	// another authority neither sees nor decides it.
	oapi, octx := ts.correctionsAPI(other)
	if got, err := oapi.ListCorrections(octx, &citizenv1.ListCorrectionsRequest{}); err != nil || len(got.GetCorrections()) != 0 {
		t.Fatalf("another citizen lists %v, %v", got, err)
	}
	for _, who := range [][2]string{{mtls.KindAgency, agency}, {mtls.KindAuditor, "dpo"}} {
		_, err := brokerv1.NewCorrectionServiceClient(ts.conn(who[0], who[1])).ListCorrectionRequests(cw("cw-1"), &brokerv1.ListCorrectionRequestsRequest{})
		wantCode(t, err, codes.PermissionDenied, "may not call")
		_, err = brokerv1.NewCorrectionServiceClient(ts.conn(who[0], who[1])).DecideCorrectionRequest(cw("cw-1"), &brokerv1.DecideCorrectionRequestRequest{
			RequestId: cor.GetId(), Reason: "x", DecidedBy: "x"})
		wantCode(t, err, codes.PermissionDenied, "may not call")
	}
	if otherAuthority != "" {
		q := kit.NewCorrections(ts.conn(mtls.KindAuthority, otherAuthority))
		if got, err := q.List(context.Background()); err != nil || len(got) != 0 {
			t.Fatalf("authority %s lists %v, %v", otherAuthority, got, err)
		}
		_, err := q.Decide(context.Background(), cor.GetId(), true, "not ours", "x")
		wantCode(t, err, codes.NotFound, "no correction request")
	}

	// The authority's staff list it with the CLI and see the citizen, the reason and the value.
	aperture := func(wantExit int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--data", ts.dataDir, "--broker", ts.Broker.Addr(), "--as", rule.Authority)
		if code := run(context.Background(), args, &out, &errOut); code != wantExit {
			t.Fatalf("aperture %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	out := aperture(0, "authority", "corrections", "list", "--open")
	for _, want := range []string{cor.GetId(), citizen, field, proposed, "This changed last spring."} {
		if !strings.Contains(out, want) {
			t.Fatalf("corrections list lacks %q:\n%s", want, out)
		}
	}
	aperture(2, "authority", "corrections", "reject", cor.GetId())
	out = aperture(0, "authority", "corrections", "reject", cor.GetId(), "--reason", "Our record matches the registration.", "--by", "staff-1")
	if !strings.Contains(out, "rejected") {
		t.Fatalf("reject printed:\n%s", out)
	}
	out = aperture(1, "authority", "corrections", "accept", cor.GetId(), "--reason", "again")
	if !strings.Contains(out, "FailedPrecondition") {
		t.Fatalf("second decision printed:\n%s", out)
	}
	if out = aperture(0, "authority", "corrections", "list", "--open"); !strings.Contains(out, "no correction requests") {
		t.Fatalf("open queue after deciding:\n%s", out)
	}
	waitCorrectionEvent(t, sub, corrections.EventDecided, c.GetId(), proposed)

	// The citizen sees the outcome and the reason; the decision is logged.
	list, err := api.ListCorrections(ctx, &citizenv1.ListCorrectionsRequest{})
	if err != nil || len(list.GetCorrections()) != 1 {
		t.Fatalf("list: %v, %v", list, err)
	}
	got := list.GetCorrections()[0]
	if got.GetState() != citizenv1.CorrectionState_CORRECTION_STATE_REJECTED || got.GetDecisionReason() != "Our record matches the registration." ||
		got.GetDecidedAt() == nil || got.GetProposedValue() != proposed {
		t.Fatalf("citizen sees %v", got)
	}
	decided := findCorrectionRecord(t, ts.accessRecords(citizen), auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED, cor.GetId())
	if decided.GetCorrection().GetOutcome() != auditv1.CorrectionOutcome_CORRECTION_OUTCOME_REJECTED || decided.GetAgency() != rule.Authority {
		t.Fatalf("decision record: %v", decided)
	}
	// Asked again, the authority's own system accepts it with the kit, in a few lines.
	again, err := api.RequestCorrection(ctx, &citizenv1.RequestCorrectionRequest{Authority: rule.Authority, Dataset: rule.Dataset, Field: field, Reason: "Still wrong: see the deed."})
	if err != nil {
		t.Fatal(err)
	}
	q := kit.NewCorrections(ts.conn(mtls.KindAuthority, rule.Authority))
	n, err := q.Work(context.Background(), "rules-engine", func(r *brokerv1.CorrectionRequest) (bool, bool, string, error) {
		return true, r.GetId() != again.GetCorrection().GetId(), "Corrected from the deed.", nil
	})
	if err != nil || n != 1 {
		t.Fatalf("kit Work decided %d, %v; want 1", n, err)
	}
	list, err = api.ListCorrections(ctx, &citizenv1.ListCorrectionsRequest{})
	if err != nil || len(list.GetCorrections()) != 2 || list.GetCorrections()[0].GetState() != citizenv1.CorrectionState_CORRECTION_STATE_ACCEPTED ||
		list.GetCorrections()[1].GetState() != citizenv1.CorrectionState_CORRECTION_STATE_REJECTED {
		t.Fatalf("after the second request: %v, %v", list, err)
	}
	accepted := findCorrectionRecord(t, ts.accessRecords(citizen), auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED, again.GetCorrection().GetId())
	if accepted.GetCorrection().GetOutcome() != auditv1.CorrectionOutcome_CORRECTION_OUTCOME_ACCEPTED {
		t.Fatalf("second decision record: %v", accepted)
	}

	// Counted by authority and outcome.
	for outcome, want := range map[string]float64{"requested": 2, "rejected": 1, "accepted": 1} {
		if n, ok := scrape(t, ts.Metrics.Addr(), "aperture_correction_requests_total", `outcome="`+outcome+`"`, `authority="`+rule.Authority+`"`); !ok || n != want {
			t.Errorf("aperture_correction_requests_total{outcome=%q} = %v (found %v), want %v", outcome, n, ok, want)
		}
	}

	// The value is nowhere in the log's records.
	for _, r := range ts.accessRecords(citizen) {
		if b, _ := proto.Marshal(r); bytes.Contains(b, []byte(proposed)) {
			t.Fatalf("an access record holds the proposed value: %v", r)
		}
	}
}

func findCorrectionRecord(t *testing.T, recs []*auditv1.AccessRecord, kind auditv1.AccessKind, id string) *auditv1.AccessRecord {
	t.Helper()
	for _, r := range recs {
		if r.GetKind() == kind && r.GetCorrection().GetRequestId() == id {
			return r
		}
	}
	t.Fatalf("no %s record for %s", kind, id)
	return nil
}

// waitCorrectionEvent reads the agency's events until the correction event typ for caseID; the event
// must not carry the proposed value.
func waitCorrectionEvent(t *testing.T, sub *nats.Subscription, typ, caseID, proposed string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no %s event for case %s: %v", typ, caseID, err)
		}
		if !strings.HasSuffix(msg.Subject, "."+typ) {
			continue
		}
		if bytes.Contains(msg.Data, []byte(proposed)) {
			t.Fatalf("%s event carries the proposed value", typ)
		}
		var ev brokerv1.CorrectionEvent
		if err := proto.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetCaseId() == caseID && ev.GetType() == typ {
			return
		}
	}
}
