package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/report"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// citizenAPI is the citizen API over the portal's own TLS connection, as the citizen with the ID token
// the development OpenID provider mints for them.
func (ts *testStack) citizenAPI(citizen string) (citizenv1.CitizenServiceClient, context.Context) {
	ts.t.Helper()
	tok, err := ts.Portal.issuer.Mint(citizen, time.Now().Add(time.Hour))
	if err != nil {
		ts.t.Fatal(err)
	}
	return citizenv1.NewCitizenServiceClient(ts.Portal.conn), metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// advance completes the steps of case c before step index to, each by its agency.
func (ts *testStack) advance(j *policy.Journey, c *brokerv1.Case, to int) {
	ts.t.Helper()
	for _, st := range j.Steps[:to] {
		if _, err := ts.agency(st.Agency).CompleteStep(cw("cw-1"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: st.ID}); err != nil {
			ts.t.Fatalf("complete %s: %v", st.ID, err)
		}
	}
}

// optionalStep is the first journey (by id) with an optional step, and that step's index.
func optionalStep(t *testing.T, b *policy.Bundle) (*policy.Journey, int) {
	t.Helper()
	for _, j := range b.Journeys() {
		for i, st := range j.Steps {
			if j.OptionalAt(st) != nil && st.Consent == nil && len(st.Rules) > 0 {
				return j, i
			}
		}
	}
	t.Skip("no journey has an optional step without consent")
	return nil, 0
}

// TestSwitchOffEndToEnd: a citizen switches the optional steps of a journey off in the citizen API
// (real gRPC over TLS with an OpenID token); the broker refuses releases at those steps with
// SWITCHED_OFF and logs the refusal; another citizen's case is untouched; the data path shows the
// switch; switching on releases again; the global switch works the same; a switch record that does not
// authenticate refuses (SWITCH_UNVERIFIED) until the citizen sets it again; a journey with nothing
// optional cannot be switched off and its steps say which law requires them.
func TestSwitchOffEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	j, idx := optionalStep(t, ts.Broker.Bundle())
	step := j.Steps[idx]
	rule := step.Rules[0]
	featured := ts.Population.Featured()
	alice, bob := featured[0].ID, featured[1].ID
	ca, cb := ts.open(j.Steps[0].Agency, j.ID, alice), ts.open(j.Steps[0].Agency, j.ID, bob)
	ts.advance(j, ca, idx)
	ts.advance(j, cb, idx)
	release := func(c *brokerv1.Case) error {
		_, err := ts.agency(step.Agency).Release(cw("cw-5"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
		return err
	}
	if err := release(ca); err != nil {
		t.Fatalf("before any switch, the optional step releases: %v", err)
	}
	api, actx := ts.citizenAPI(alice)
	_, bctx := ts.citizenAPI(bob)
	set := func(ctx context.Context, journey string, off bool) *citizenv1.Switch {
		t.Helper()
		resp, err := api.SetSwitch(ctx, &citizenv1.SetSwitchRequest{Journey: journey, Off: off})
		if err != nil {
			t.Fatalf("set switch %q off=%v: %v", journey, off, err)
		}
		return resp.GetSwitch()
	}

	// Off for this journey: refused with the reason, logged; Bob's case releases.
	if sw := set(actx, j.ID, true); !sw.GetOff() || sw.GetJourney().GetId() != j.ID || sw.GetChangedAt() == nil {
		t.Fatalf("switch as stored: %v", sw)
	}
	err := release(ca)
	wantCode(t, err, codes.FailedPrecondition, "switched it off")
	wantReason(t, err, "SWITCHED_OFF", "journey", j.ID, "step", step.ID, "scope", "journey")
	if err := release(cb); err != nil {
		t.Fatalf("Alice's switch stopped a release for Bob: %v", err)
	}
	recs := ts.accessRecords(alice)
	if last := recs[0]; last.GetRefusalReason() != auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF || last.GetStep() != step.ID {
		t.Fatalf("newest access record of Alice: %v, want the SWITCHED_OFF refusal at %s", last, step.ID)
	}

	// The data path and the switch page show it, to Alice only.
	path := func(ctx context.Context) *citizenv1.DataPathStep {
		resp, err := api.GetDataPath(ctx, &citizenv1.GetDataPathRequest{Journey: j.ID})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSteps()[idx]
	}
	if p := path(actx); !p.GetOptional() || !p.GetSwitchedOff() || p.GetOptionalWhy().GetEn() == "" {
		t.Errorf("Alice's data path step: %v, want optional and switched off with why", p)
	}
	if p := path(bctx); !p.GetOptional() || p.GetSwitchedOff() {
		t.Errorf("Bob's data path step: %v, want optional and not switched off", p)
	}
	list, err := api.ListSwitches(bctx, &citizenv1.ListSwitchesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sj := range list.GetJourneys() {
		if sj.GetSwitch().GetOff() {
			t.Errorf("Bob's switches show %s off: another citizen's switch leaked", sj.GetJourney().GetId())
		}
	}

	// On again: releases.
	set(actx, j.ID, false)
	if err := release(ca); err != nil {
		t.Fatalf("switched on again: %v", err)
	}
	// The switch for all journeys.
	set(actx, "", true)
	err = release(ca)
	wantReason(t, err, "SWITCHED_OFF", "scope", "all")
	set(actx, "", false)
	if err := release(ca); err != nil {
		t.Fatalf("all switched on again: %v", err)
	}

	// A forged switch record (written to the bucket by anyone but the broker) refuses: fail closed.
	js, err := jetstream.New(ts.Broker.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), switchoff.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), ts.Pseudonyms.Pseudonym(alice).Value+"."+j.ID, []byte(`{"off":false}`)); err != nil {
		t.Fatal(err)
	}
	err = release(ca)
	wantCode(t, err, codes.FailedPrecondition, "cannot be verified")
	wantReason(t, err, "SWITCH_UNVERIFIED", "journey", j.ID, "step", step.ID)
	if p := path(actx); !p.GetSwitchedOff() {
		t.Errorf("an unverifiable switch shows as on in the data path: %v", p)
	}
	list, err = api.ListSwitches(actx, &citizenv1.ListSwitchesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.GetJourneys(), func(sj *citizenv1.SwitchableJourney) bool { return sj.GetJourney().GetId() == j.ID })
	if !list.GetJourneys()[i].GetSwitch().GetUnverified() {
		t.Errorf("ListSwitches does not report the unverifiable switch: %v", list.GetJourneys()[i].GetSwitch())
	}
	set(actx, j.ID, false) // the citizen's own choice again repairs it
	if err := release(ca); err != nil {
		t.Fatalf("after setting the switch again: %v", err)
	}

	// A journey with nothing optional: every step says the law that requires it; it cannot be switched off.
	for _, sj := range list.GetJourneys() {
		pj, _ := ts.Broker.Bundle().Journey(sj.GetJourney().GetId())
		for k, st := range sj.GetSteps() {
			if st.GetOptional() != (pj.OptionalAt(pj.Steps[k]) != nil) || st.GetLegalBasis() != pj.Steps[k].LegalBasis {
				t.Errorf("%s step %s: optional %v, law %q", pj.ID, st.GetStep().GetId(), st.GetOptional(), st.GetLegalBasis())
			}
		}
		if !pj.HasOptional() {
			_, err := api.SetSwitch(actx, &citizenv1.SetSwitchRequest{Journey: pj.ID, Off: true})
			wantCode(t, err, codes.FailedPrecondition, "required by law")
		}
	}
	// Without a token nothing is read or switched.
	_, err = api.SetSwitch(context.Background(), &citizenv1.SetSwitchRequest{Journey: j.ID, Off: true})
	wantCode(t, err, codes.Unauthenticated)
}

// breakGlassJourney is the first journey (by id) with a break-glass rule, and the rule.
// waitMetric waits until the metric's value is want (the backlog is read on an interval).
func waitMetric(t *testing.T, addr, metric string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok := scrape(t, addr, metric)
		if ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v (present %v), want %v", metric, v, ok, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func breakGlassJourney(t *testing.T, b *policy.Bundle) (*policy.Journey, *policy.BreakGlass) {
	t.Helper()
	for _, j := range b.Journeys() {
		if len(j.BreakGlass) > 0 {
			return j, j.BreakGlass[0]
		}
	}
	t.Skip("no journey has a break-glass rule")
	return nil, nil
}

// TestBreakGlassEndToEnd: an agency a journey's break-glass rule names releases, outside the case's
// current step, exactly what the rule names, with a reason code and a justification; the release is
// flagged in the access log and the citizen sees it at once with the justification; it waits in the
// auditors' review queue until an auditor closes it (the closure is logged too, once); the caseworker's
// limit is enforced (RESOURCE_EXHAUSTED, BREAK_GLASS_RATE_LIMITED) while another caseworker is not
// affected; agencies outside the rule, reason codes and fields outside it, and journeys without a rule
// get nothing.
func TestBreakGlassEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0"
		o.MetricsListen, o.ReviewBacklogInterval = "127.0.0.1:0", 50*time.Millisecond
	})
	b := ts.Broker.Bundle()
	j, bg := breakGlassJourney(t, b)
	rule := bg.Rules[0]
	citizen := ts.citizenFor(j.ID)
	c := ts.open(j.Steps[0].Agency, j.ID, citizen)
	if j.Steps[0].Agency == bg.Agency {
		t.Skip("the break-glass agency acts at the first step; the test needs a case at another agency's step")
	}
	justification := "The newborn was taken to intensive care and the parents left before we could reach them."
	req := func(mut ...func(*brokerv1.BreakGlassReleaseRequest)) *brokerv1.BreakGlassReleaseRequest {
		r := &brokerv1.BreakGlassReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset,
			ReasonCode: bg.Reasons[0].Code, Justification: justification}
		for _, m := range mut {
			m(r)
		}
		return r
	}
	agency := ts.agency(bg.Agency)

	// An ordinary release outside the step is still refused: break-glass is a separate, explicit call.
	_, err := agency.Release(cw("doc-1"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: rule.Authority, Dataset: rule.Dataset})
	wantCode(t, err, codes.PermissionDenied)

	// Outside the rule: a reason code it does not list, a field it does not name, no caseworker.
	_, err = agency.BreakGlassRelease(cw("doc-1"), req(func(r *brokerv1.BreakGlassReleaseRequest) { r.ReasonCode = "curious" }))
	wantCode(t, err, codes.PermissionDenied, "reason code")
	wantReason(t, err, "BREAK_GLASS_NOT_ALLOWED", "journey", j.ID, "reason_code", "curious")
	md := rule.Message
	var outside string
	for i := range md.Fields().Len() {
		if f := string(md.Fields().Get(i).Name()); !slices.ContainsFunc(rule.Fields, func(p string) bool { return p == f || len(p) > len(f) && p[:len(f)+1] == f+"." }) {
			outside = f
			break
		}
	}
	if outside != "" {
		_, err = agency.BreakGlassRelease(cw("doc-1"), req(func(r *brokerv1.BreakGlassReleaseRequest) { r.Fields = []string{outside} }))
		wantCode(t, err, codes.PermissionDenied, outside)
		wantReason(t, err, "BREAK_GLASS_NOT_ALLOWED", "field", outside)
	}
	_, err = agency.BreakGlassRelease(context.Background(), req())
	wantCode(t, err, codes.InvalidArgument, "caseworker")
	_, err = agency.BreakGlassRelease(cw("doc-1"), req(func(r *brokerv1.BreakGlassReleaseRequest) { r.Justification = "urgent" }))
	wantCode(t, err, codes.InvalidArgument)

	// BOLA: every other agency gets nothing — NotFound when it takes no part in the journey,
	// BREAK_GLASS_NOT_ALLOWED when it does but the rule does not name it.
	for _, a := range b.Registry.Agencies {
		if a.ID == bg.Agency {
			continue
		}
		_, err := ts.agency(a.ID).BreakGlassRelease(cw("x-1"), req())
		if slices.ContainsFunc(j.Steps, func(s *policy.Step) bool { return s.Agency == a.ID }) {
			wantCode(t, err, codes.PermissionDenied)
			wantReason(t, err, "BREAK_GLASS_NOT_ALLOWED", "agency", a.ID)
		} else {
			wantCode(t, err, codes.NotFound)
		}
	}
	// An auditor's certificate is not an agency's: no break-glass release.
	_, err = brokerv1.NewBrokerServiceClient(ts.conn("auditor", "dpo")).BreakGlassRelease(cw("dpo-1"), req())
	wantCode(t, err, codes.PermissionDenied)
	// A journey without a break-glass rule: default deny, even for the same agency.
	for _, other := range b.Journeys() {
		if len(other.BreakGlass) > 0 || !slices.ContainsFunc(other.Steps, func(s *policy.Step) bool { return s.Agency == bg.Agency }) {
			continue
		}
		oc := ts.open(other.Steps[0].Agency, other.ID, ts.citizenFor(other.ID))
		_, err := agency.BreakGlassRelease(cw("doc-1"), req(func(r *brokerv1.BreakGlassReleaseRequest) { r.CaseId = oc.GetId() }))
		wantReason(t, err, "BREAK_GLASS_NOT_ALLOWED", "journey", other.ID)
		break
	}

	// The release: exactly the rule's fields, flagged, visible to the citizen at once.
	resp, err := agency.BreakGlassRelease(cw("doc-1"), req())
	if err != nil {
		t.Fatalf("break-glass release: %v", err)
	}
	if !slices.Equal(resp.GetFields(), rule.Fields) || resp.GetLegalBasis() != bg.LegalBasis || int(resp.GetRemaining()) != bg.Limit-1 {
		t.Fatalf("released %v under %q, %d remaining; want %v under %q, %d", resp.GetFields(), resp.GetLegalBasis(), resp.GetRemaining(), rule.Fields, bg.LegalBasis, bg.Limit-1)
	}
	var rec *auditv1.AccessRecord
	for _, r := range ts.accessRecords(citizen) {
		if r.GetId() == resp.GetAccessId() {
			rec = r
		}
	}
	if rec == nil || rec.GetBreakGlass().GetJustification() != justification || rec.GetBreakGlass().GetReasonCode() != bg.Reasons[0].Code ||
		rec.GetStep() != policy.BreakGlassStep || rec.GetHiddenUntil() != nil || rec.GetDecision() != auditv1.Decision_DECISION_RELEASED {
		t.Fatalf("access record of the break-glass release: %v", rec)
	}
	api, actx := ts.citizenAPI(citizen)
	mine, err := api.ListAccesses(actx, &citizenv1.ListAccessesRequest{PageSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(mine.GetAccesses(), func(a *citizenv1.Access) bool { return a.GetId() == resp.GetAccessId() })
	if i < 0 {
		t.Fatal("the citizen does not see the break-glass access at once")
	}
	if a := mine.GetAccesses()[i]; a.GetBreakGlass().GetJustification() != justification || a.GetBreakGlassReason().GetEn() != bg.Reasons[0].Title.EN || a.GetPurpose().GetEn() != bg.Purpose.EN {
		t.Errorf("the citizen's view of the break-glass access: %v", a)
	}

	// The review queue: the auditor sees it; an agency cannot read or close it.
	audit := ts.auditor()
	q, err := audit.ListBreakGlassReviews(context.Background(), &auditv1.ListBreakGlassReviewsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.GetReviews()) != 1 || q.GetReviews()[0].GetAccessId() != resp.GetAccessId() || q.GetReviews()[0].GetJustification() != justification {
		t.Fatalf("review queue: %v", q.GetReviews())
	}
	waitMetric(t, ts.Metrics.Addr(), "aperture_breakglass_reviews_open", 1)
	asAgency := auditv1.NewAuditServiceClient(ts.conn("agency", bg.Agency))
	_, err = asAgency.ListBreakGlassReviews(cw("doc-1"), &auditv1.ListBreakGlassReviewsRequest{})
	wantCode(t, err, codes.PermissionDenied)
	closeReq := &auditv1.CloseBreakGlassReviewRequest{AccessId: resp.GetAccessId(), Outcome: auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_JUSTIFIED, Note: "Confirmed with the ward."}
	_, err = asAgency.CloseBreakGlassReview(cw("doc-1"), closeReq)
	wantCode(t, err, codes.PermissionDenied)
	closed, err := audit.CloseBreakGlassReview(context.Background(), closeReq)
	if err != nil {
		t.Fatal(err)
	}
	if closed.GetReview().GetAuditor() == "" || closed.GetReview().GetClosureAccessId() == "" {
		t.Fatalf("closed review: %v", closed.GetReview())
	}
	_, err = audit.CloseBreakGlassReview(context.Background(), closeReq)
	wantCode(t, err, codes.FailedPrecondition, "already closed")
	if q, _ := audit.ListBreakGlassReviews(context.Background(), &auditv1.ListBreakGlassReviewsRequest{}); len(q.GetReviews()) != 0 {
		t.Errorf("closed review still open: %v", q.GetReviews())
	}
	waitMetric(t, ts.Metrics.Addr(), "aperture_breakglass_reviews_open", 0)
	if age, ok := scrape(t, ts.Metrics.Addr(), "aperture_breakglass_reviews_oldest_age_seconds"); !ok || age != 0 {
		t.Errorf("oldest open review's age with none open: %v (present %v), want 0", age, ok)
	}
	reviews := 0
	for _, r := range ts.accessRecords(citizen) {
		if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW {
			reviews++
			if r.GetBreakGlass().GetReviewedAccessId() != resp.GetAccessId() || r.GetBreakGlass().GetOutcome() != closeReq.Outcome {
				t.Errorf("review record: %v", r)
			}
		}
	}
	if reviews != 1 {
		t.Errorf("%d review records in the citizen's log, want 1", reviews)
	}

	// The limit per caseworker.
	for n := 1; n < bg.Limit; n++ {
		if _, err := agency.BreakGlassRelease(cw("doc-1"), req()); err != nil {
			t.Fatalf("use %d of %d: %v", n+1, bg.Limit, err)
		}
	}
	_, err = agency.BreakGlassRelease(cw("doc-1"), req())
	wantCode(t, err, codes.ResourceExhausted)
	wantReason(t, err, "BREAK_GLASS_RATE_LIMITED", "journey", j.ID, "agency", bg.Agency)
	if _, err := agency.BreakGlassRelease(cw("doc-2"), req()); err != nil {
		t.Fatalf("another caseworker is limited by doc-1's uses: %v", err)
	}
	last := ts.accessRecords(citizen)
	if n := slices.IndexFunc(last, func(r *auditv1.AccessRecord) bool {
		return r.GetRefusalReason() == auditv1.RefusalReason_REFUSAL_REASON_BREAK_GLASS_RATE_LIMITED && r.GetBreakGlass() != nil
	}); n < 0 {
		t.Error("the rate-limited attempt is not in the access log")
	}

	// The data-responsibility report counts the emergency releases and the review from the log alone.
	var size uint64
	var emergencies int64
	for _, r := range ts.accessRecords(citizen) {
		if r.GetBreakGlass() != nil && r.GetKind() != auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW && r.GetDecision() == auditv1.Decision_DECISION_RELEASED {
			emergencies++
		}
	}
	lr, err := audit.ListAccessRecords(context.Background(), &auditv1.ListAccessRecordsRequest{CitizenId: citizen, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, lf := range lr.GetLeaves() {
		size = max(size, lf.GetLeafIndex()+1)
	}
	ts.waitSigned(size)
	out := filepath.Join(t.TempDir(), "report.json")
	from, to := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), time.Now().UTC().Add(time.Hour).Format(time.RFC3339)
	if code, msg := ts.cli("report", "--from", from, "--to", to, "--format", "json", "--out", out, "--nats-url", ts.nats.ClientURL()); code != 0 {
		t.Fatalf("aperture report: exit %d\n%s", code, msg)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := report.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Figures.Total().BreakGlass; got != emergencies || emergencies < int64(bg.Limit) {
		t.Errorf("report: %d break-glass releases, the log lists %d (limit %d)", got, emergencies, bg.Limit)
	}
	if got := rep.Figures.BreakGlassReviews["JUSTIFIED"]; got != 1 {
		t.Errorf("report: %d justified break-glass reviews, want 1 (%v)", got, rep.Figures.BreakGlassReviews)
	}
	if code, msg := ts.cli("report", "verify", out, "--nats-url", ts.nats.ClientURL()); code != 0 {
		t.Fatalf("aperture report verify: exit %d\n%s", code, msg)
	}
}
