package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/report"
	"github.com/aperture-gov/aperture/policies"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// reportPlan is what the test does in one journey: releases at the first step, and one request for a
// dataset the step does not release.
type reportPlan struct {
	journey *policy.Journey
	step    *policy.Step
	rule    *policy.Rule
	// refuse is an authority dataset of the registry that the step has no rule for ("" if none).
	refuseAuthority, refuseDataset string
	releases                       int
}

// reportPlans derives the plan from the policies: every journey whose first step releases something
// without consent, with 1, 2, 3, … releases so that every row's count differs.
func reportPlans(t *testing.T, b *policy.Bundle) []reportPlan {
	t.Helper()
	var out []reportPlan
	for _, j := range b.Journeys() {
		s := j.Steps[0]
		if s.Consent != nil || s.Covert != nil || len(s.Rules) == 0 {
			continue
		}
		p := reportPlan{journey: j, step: s, rule: s.Rules[0], releases: len(out) + 1}
	find:
		for _, a := range b.Registry.Authorities {
			for _, d := range a.Datasets {
				if _, ok := s.Rule(a.ID, d); !ok {
					p.refuseAuthority, p.refuseDataset = a.ID, d
					break find
				}
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatal("no journey whose first step releases without consent")
	}
	return out
}

// TestReportE2E runs a real stack (gRPC over TLS, embedded NATS, the authorities, an authority that
// over-shares behind a proxy), makes releases and refusals in every journey the policies allow it in,
// then makes the data-responsibility report with the CLI, checks every figure against what it did,
// verifies the report against the log, tampers with a figure and with the checkpoint and sees
// verification fail, and finds the report on the public portal page.
func TestReportE2E(t *testing.T) {
	bundle, err := loadPolicyTree(policies.Files(), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	plans := reportPlans(t, bundle)
	// The first plan's authority answers more than asked: every field of the dataset that the rule
	// does not allow is added to the mask on the way.
	over := plans[0].rule
	var extra []string
	for _, l := range fieldmask.Leaves(over.Message) {
		if !fieldmask.Covers(over.Fields, l) {
			extra = append(extra, l)
		}
	}
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen, o.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		o.Rewire = func(id, addr string) string {
			if id != over.Authority || len(extra) == 0 {
				return addr
			}
			return startWideningProxy(t, o.DataDir, id, addr, extra)
		}
	})

	type rowKey struct{ agency, journey string }
	type rowWant struct {
		released, refused int64
		reasons           map[string]int64
	}
	want := map[rowKey]*rowWant{}
	outcome := func(agency, journey string, err error) {
		k := rowKey{agency, journey}
		if want[k] == nil {
			want[k] = &rowWant{reasons: map[string]int64{}}
		}
		if err == nil {
			want[k].released++
			return
		}
		want[k].refused++
		for _, d := range status.Convert(err).Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				want[k].reasons[info.GetReason()]++
				return
			}
		}
		t.Fatalf("refusal without ErrorInfo: %v", err)
	}
	start := time.Now().UTC()
	var firstAccess string // a release the citizen then asks about
	for _, p := range plans {
		c := ts.open(p.step.Agency, p.journey.ID, ts.citizenFor(p.journey.ID))
		client := ts.agency(p.step.Agency)
		for range p.releases {
			resp, err := client.Release(cw("cw-report"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: p.rule.Authority, Dataset: p.rule.Dataset})
			outcome(p.step.Agency, p.journey.ID, err)
			if firstAccess == "" && err == nil {
				firstAccess = resp.GetAccessId()
			}
		}
		if p.refuseDataset != "" {
			_, err := client.Release(cw("cw-report"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: p.refuseAuthority, Dataset: p.refuseDataset})
			if err == nil {
				t.Fatalf("%s: a dataset the step has no rule for was released", p.journey.ID)
			}
			outcome(p.step.Agency, p.journey.ID, err)
		}
	}
	// Consents and questions, through the citizen API over TLS and the agency's API: each is logged
	// before it takes effect, and the report counts them from the log.
	cj, cst := consentStep(t, bundle)
	consentCitizen := ts.citizenFor(cj.ID)
	capi, cctx := ts.citizenAPI(consentCitizen)
	for i, grant := range []bool{true, false, true} { // given, withdrawn, given again
		var err error
		if grant {
			_, err = capi.GrantConsent(cctx, &citizenv1.GrantConsentRequest{Journey: cj.ID, Step: cst.ID})
		} else {
			_, err = capi.RevokeConsent(cctx, &citizenv1.RevokeConsentRequest{Journey: cj.ID, Step: cst.ID})
		}
		if err != nil {
			t.Fatalf("consent action %d: %v", i, err)
		}
	}
	asker := ts.citizenFor(plans[0].journey.ID)
	qapi, qctx := ts.citizenAPI(asker)
	qr, err := qapi.QuestionAccess(qctx, &citizenv1.QuestionAccessRequest{AccessId: firstAccess, Message: "Why did you need this?"})
	if err != nil {
		t.Fatalf("question: %v", err)
	}
	if _, err := ts.agency(plans[0].step.Agency).AnswerQuestion(cw("cw-answer"), &brokerv1.AnswerQuestionRequest{
		QuestionId: qr.GetQuestion().GetId(), Answer: "To decide your case.",
	}); err != nil {
		t.Fatalf("answer: %v", err)
	}
	var actions uint64 = 3 + 2
	for _, w := range want {
		actions += uint64(w.released + w.refused)
	}
	ts.waitSigned(actions)
	end := time.Now().UTC().Add(time.Minute)
	from, to := start.Add(-time.Minute).Format(time.RFC3339), end.Format(time.RFC3339)

	dir := t.TempDir()
	out := filepath.Join(dir, "report.json")
	nats := []string{"--nats-url", ts.nats.ClientURL()}
	code, msg := ts.cli(append([]string{"report", "--from", from, "--to", to, "--format", "json", "--out", out}, nats...)...)
	if code != 0 {
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
	if rep.Checkpoint.TreeSize < actions || rep.Figures.Leaves != rep.Checkpoint.TreeSize || !strings.Contains(rep.Checkpoint.Note, rep.Checkpoint.RootHash) {
		t.Fatalf("checkpoint %+v over %d leaves; %d actions", rep.Checkpoint, rep.Figures.Leaves, actions)
	}
	t.Logf("%d journeys, %d rows wanted, report over %d leaves: %+v", len(plans), len(want), rep.Figures.Leaves, rep.Figures.Authorities)
	// Every figure the test can know: releases, refusals and their reasons, per agency and journey.
	got := map[rowKey]*rowWant{}
	for _, r := range rep.Figures.Rows {
		if r.Released+r.Refused == 0 {
			continue
		}
		got[rowKey{r.Agency, r.Journey}] = &rowWant{released: r.Released, refused: r.Refused, reasons: r.RefusedBy}
		if r.RefusedBy == nil {
			got[rowKey{r.Agency, r.Journey}].reasons = map[string]int64{}
		}
	}
	if len(got) != len(want) {
		t.Errorf("report has %d rows with decisions, want %d", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if g == nil || g.released != w.released || g.refused != w.refused || !maps.Equal(g.reasons, w.reasons) {
			t.Errorf("%v: report %+v, want %+v", k, g, w)
		}
	}
	// Fields disclosed: each release discloses the rule's fields.
	for _, p := range plans {
		for _, r := range rep.Figures.Rows {
			if r.Agency == p.step.Agency && r.Journey == p.journey.ID && r.FieldsDisclosed != r.Released*int64(len(p.rule.Fields)) {
				t.Errorf("%s: %d fields disclosed in %d releases of %d fields", p.journey.ID, r.FieldsDisclosed, r.Released, len(p.rule.Fields))
			}
		}
	}
	// Over-sharing: the proxied authority's answers held fields beyond the mask; they were stripped and
	// counted, and no other authority over-shared.
	if len(extra) > 0 {
		for _, a := range rep.Figures.Authorities {
			switch {
			case a.Authority == over.Authority && (a.OverSharing == 0 || len(a.Stripped) == 0):
				t.Errorf("authority %s over-shared but the report counts %d (%v)", a.Authority, a.OverSharing, a.Stripped)
			case a.Authority != over.Authority && a.OverSharing != 0:
				t.Errorf("authority %s did not over-share but the report counts %d", a.Authority, a.OverSharing)
			}
			for k := range a.Stripped {
				if f := k[strings.Index(k, ":")+1:]; fieldmask.Covers(over.Fields, f) && a.Authority == over.Authority {
					t.Errorf("stripped %q is an allowed field", k)
				}
			}
		}
	}
	// Consents and questions: the rows of the consent's step and of the questioned access.
	for _, r := range rep.Figures.Rows {
		gotC := [3]int64{r.ConsentsGranted, r.ConsentsRevoked, r.ConsentsExpired}
		wantC := [3]int64{}
		if r.Agency == cst.Agency && r.Journey == cj.ID {
			wantC = [3]int64{2, 1, 0}
		}
		if gotC != wantC {
			t.Errorf("%s/%s: consents given, withdrawn, run out %v, want %v", r.Agency, r.Journey, gotC, wantC)
		}
		gotQ := [2]int64{r.QuestionsAsked, r.QuestionsAnswered}
		wantQ := [2]int64{}
		if r.Agency == plans[0].step.Agency && r.Journey == plans[0].journey.ID {
			wantQ = [2]int64{1, 1}
		}
		if gotQ != wantQ {
			t.Errorf("%s/%s: questions asked, answered %v, want %v", r.Agency, r.Journey, gotQ, wantQ)
		}
	}
	if elapsed := time.Since(start); time.Duration(rep.Figures.MedianSecondsToAnswer)*time.Second > elapsed {
		t.Errorf("median time to answer %ds, longer than the test (%v)", rep.Figures.MedianSecondsToAnswer, elapsed)
	}
	for _, g := range rep.NotCovered {
		if strings.Contains(g.Figure, "consents granted") || strings.Contains(g.Figure, "questions asked") {
			t.Errorf("%q is counted but listed as not covered", g.Figure)
		}
	}
	// Counted as they happen, without a citizen.
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"aperture_consent_changes_total", []string{`change="granted"`, `outcome="ok"`}, 2},
		{"aperture_consent_changes_total", []string{`change="revoked"`, `outcome="ok"`}, 1},
		{"aperture_questions_total", []string{`event="asked"`, `outcome="ok"`, `agency="` + plans[0].step.Agency + `"`}, 1},
		{"aperture_questions_total", []string{`event="answered"`, `outcome="ok"`, `agency="` + plans[0].step.Agency + `"`}, 1},
	} {
		if n, ok := scrape(t, ts.Metrics.Addr(), m.name, m.labels...); !ok || n != m.want {
			t.Errorf("%s%v = %v (%v), want %v", m.name, m.labels, n, ok, m.want)
		}
	}
	// The citizen's log shows them in words; the auditor's CLI lists them.
	seen := map[auditv1.AccessKind]*citizenv1.Access{}
	for _, who := range []struct {
		api citizenv1.CitizenServiceClient
		ctx context.Context
	}{{capi, cctx}, {qapi, qctx}} {
		la, err := who.api.ListAccesses(who.ctx, &citizenv1.ListAccessesRequest{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range la.GetAccesses() {
			seen[a.GetKind()] = a
		}
	}
	if a := seen[auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED]; a == nil || a.GetConsent().GetExpiresAt() == nil || a.GetStep().GetId() != cst.ID || a.GetPurpose().GetDa() == "" {
		t.Errorf("the citizen's log shows the consent given as %v", a)
	}
	if a := seen[auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED]; a == nil || a.GetAgency().GetId() != cst.Agency {
		t.Errorf("the citizen's log shows the withdrawal as %v", a)
	}
	for _, k := range []auditv1.AccessKind{auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED, auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED} {
		if a := seen[k]; a == nil || a.GetAgency().GetId() != plans[0].step.Agency || a.GetPurpose().GetEn() == "" || a.GetPurpose().GetDa() == "" ||
			strings.Contains(a.String(), "Why did you need this") || strings.Contains(a.String(), "To decide your case") {
			t.Errorf("the citizen's log shows %v as %v (words in en and da, never the text)", k, a)
		}
	}
	for _, c := range []struct{ citizen, want string }{{consentCitizen, "CONSENT GIVEN"}, {consentCitizen, "CONSENT WITHDRAWN"}, {asker, "QUESTION ASKED"}, {asker, "QUESTION ANSWERED"}} {
		if code, msg := ts.cli("log", "--citizen", c.citizen, "--broker", ts.Broker.Addr()); code != 0 || !strings.Contains(msg, c.want) {
			t.Errorf("aperture log --citizen: exit %d, no %q\n%s", code, c.want, msg)
		}
	}
	if rep.Labels == nil || rep.Labels.Journeys[plans[0].journey.ID].EN != plans[0].journey.Title.EN {
		t.Errorf("labels: %+v", rep.Labels)
	}

	// More accesses after the report: verification recomputes up to the report's checkpoint only.
	ts.releaseN(2)
	code, msg = ts.cli(append([]string{"report", "verify", out}, nats...)...)
	if code != 0 || !strings.Contains(msg, "OK: all ") {
		t.Fatalf("report verify: exit %d\n%s", code, msg)
	}
	t.Logf("aperture report verify:\n%s", msg)

	// Tampering: a figure, then the checkpoint the report claims.
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(name string, edit func(m map[string]any)) string {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		code, msg := ts.cli(append([]string{"report", "verify", p}, nats...)...)
		if code != 1 || !strings.Contains(msg, "verification FAILED") {
			t.Fatalf("verify of a report with %s tampered: exit %d\n%s", name, code, msg)
		}
		return msg
	}
	firstRow := func(m map[string]any) map[string]any {
		return m["figures"].(map[string]any)["rows"].([]any)[0].(map[string]any)
	}
	msg = tamper("released", func(m map[string]any) { firstRow(m)["released"] = firstRow(m)["released"].(float64) + 1 })
	if r := rep.Figures.Rows[0]; !strings.Contains(msg, "agency_journey[agency="+r.Agency+" journey="+r.Journey+"].released") {
		t.Errorf("the failure does not name the figure:\n%s", msg)
	}
	msg = tamper("consents", func(m map[string]any) {
		for _, r := range m["figures"].(map[string]any)["rows"].([]any) {
			if row := r.(map[string]any); row["agency"] == cst.Agency && row["journey"] == cj.ID {
				row["consents_granted"] = row["consents_granted"].(float64) + 1
			}
		}
	})
	if !strings.Contains(msg, "journey="+cj.ID+"].consents_granted") {
		t.Errorf("the failure does not name the consents figure:\n%s", msg)
	}
	tamper("row dropped", func(m map[string]any) {
		fig := m["figures"].(map[string]any)
		fig["rows"] = fig["rows"].([]any)[1:]
	})
	tamper("tree size", func(m map[string]any) {
		m["checkpoint"].(map[string]any)["tree_size"] = float64(rep.Checkpoint.TreeSize - 1)
	})
	tamper("signed note", func(m map[string]any) {
		cp := m["checkpoint"].(map[string]any)
		cp["signed_note"] = strings.Replace(cp["signed_note"].(string), "\n"+cp["root_hash"].(string), "\nAAAA"+cp["root_hash"].(string)[4:], 1)
	})

	// The other forms.
	code, msg = ts.cli(append([]string{"report", "--from", from, "--to", to, "--format", "csv"}, nats...)...)
	if code != 0 || !strings.HasPrefix(msg, "period_from,") || !strings.Contains(msg, ",agency_journey,"+plans[0].step.Agency+","+plans[0].journey.ID+",") {
		t.Errorf("csv: exit %d\n%s", code, msg)
	}
	code, msg = ts.cli(append([]string{"report", "--from", from, "--to", to}, nats...)...)
	if code != 0 || !strings.Contains(msg, "# Data-responsibility report") || !strings.Contains(msg, plans[0].journey.Title.EN) {
		t.Errorf("markdown: exit %d\n%s", code, msg)
	}
	t.Logf("aperture report:\n%s", msg)
	if code, msg = ts.cli("report", "--from", to, "--to", from); code != 2 {
		t.Errorf("a period that ends before it starts: exit %d\n%s", code, msg)
	}

	// Published: the portal shows it to anyone, without signing in, with names from the policies and
	// no citizen id.
	pub := ts.Portal.reports
	if err := os.MkdirAll(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pub, "report.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(ts.Portal.base + "/report?lang=da")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Rapport om dataansvar") || !strings.Contains(page, `id="chart-decisions"`) ||
		!strings.Contains(page, "Samtykker og spørgsmål") || !strings.Contains(page, `id="report-consents"`) {
		t.Fatalf("GET /report: %s\n%s", resp.Status, page)
	}
	if title := plans[len(plans)-1].journey.Title.In("da"); !strings.Contains(page, title) {
		t.Errorf("the page does not name the journey %q", title)
	}
	for _, p := range plans {
		if id := ts.citizenFor(p.journey.ID); strings.Contains(page, id) || strings.Contains(page, ts.Pseudonyms.Pseudonym(id).Value) {
			t.Errorf("the public page shows a citizen id or pseudonym")
		}
	}
	// Metrics: the view is counted; a published file the portal cannot read is an operator's alarm.
	if err := os.WriteFile(filepath.Join(pub, "broken.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(ts.Portal.base + "/report"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /report with a broken file beside the good one: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if n, ok := scrape(t, ts.Metrics.Addr(), "aperture_portal_report_views_total", `result="shown"`); !ok || n != 2 {
		t.Errorf("aperture_portal_report_views_total{result=shown} = %v (%v), want 2", n, ok)
	}
	if n, ok := scrape(t, ts.Metrics.Addr(), "aperture_portal_report_unreadable"); !ok || n != 1 {
		t.Errorf("aperture_portal_report_unreadable = %v (%v), want 1", n, ok)
	}
}

// startWideningProxy serves AuthorityService with the authority's identity (dev CA in dataDir),
// forwarding to the real one with extra field paths added to every mask: an authority that answers
// more than the broker asked for.
func startWideningProxy(t *testing.T, dataDir, authority, upstream string, extra []string) string {
	ca, err := mtls.OpenDevCA(filepath.Join(dataDir, "pki"), trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	asBroker, err := ca.Source("broker", "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(asBroker, mtls.ID(trustDomain, "authority", authority)))))
	if err != nil {
		t.Fatal(err)
	}
	as, err := ca.Source("authority", authority)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtls.ServerConfig(as))))
	authorityv1.RegisterAuthorityServiceServer(srv, &widener{up: authorityv1.NewAuthorityServiceClient(cc), extra: extra})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Stop(); cc.Close() })
	return lis.Addr().String()
}

type widener struct {
	authorityv1.UnimplementedAuthorityServiceServer
	up    authorityv1.AuthorityServiceClient
	extra []string
}

func (w *widener) Describe(ctx context.Context, req *authorityv1.DescribeRequest) (*authorityv1.DescribeResponse, error) {
	return w.up.Describe(ctx, req)
}

func (w *widener) Fetch(ctx context.Context, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, error) {
	wide := proto.Clone(req).(*authorityv1.FetchRequest)
	if wide.GetFieldMask() != nil {
		for _, e := range w.extra {
			if !slices.Contains(wide.FieldMask.Paths, e) {
				wide.FieldMask.Paths = append(wide.FieldMask.Paths, e)
			}
		}
	}
	return w.up.Fetch(ctx, wide)
}

// TestReportWitnessed: with --witness-policy the report rests on the checkpoint the witnesses cosigned
// (what the public log serves), and verification with the policy accepts it; a report over a checkpoint
// only the broker signed does not pass verification with the policy.
func TestReportWitnessed(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.Witnesses = 1 })
	ts.releaseN(3)
	ts.waitSigned(3)
	policy := devWitnessPolicyFile(ts.dataDir)
	dir := t.TempDir()
	from, to := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), time.Now().UTC().Add(time.Hour).Format(time.RFC3339)
	nats := []string{"--nats-url", ts.nats.ClientURL()}
	mkReport := func(name string, extra ...string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		// The witnesses cosign right after the broker signs: poll with a generous deadline.
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, msg := ts.cli(append(append([]string{"report", "--from", from, "--to", to, "--format", "json", "--out", out}, nats...), extra...)...)
			if code == 0 {
				f, err := os.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := report.Decode(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				if rep.Checkpoint.TreeSize >= 3 {
					return out
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("aperture report %v: exit %d\n%s", extra, code, msg)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	witnessed := mkReport("witnessed.json", "--witness-policy", policy)
	code, msg := ts.cli(append([]string{"report", "verify", witnessed, "--witness-policy", policy}, nats...)...)
	if code != 0 || !strings.Contains(msg, "OK: the report's checkpoint is cosigned by "+ts.Witnesses[0].Name) || !strings.Contains(msg, "OK: all ") {
		t.Fatalf("report verify --witness-policy: exit %d\n%s", code, msg)
	}
	plain := mkReport("plain.json")
	if code, msg = ts.cli(append([]string{"report", "verify", plain}, nats...)...); code != 0 {
		t.Fatalf("report verify of the broker-signed report: exit %d\n%s", code, msg)
	}
	code, msg = ts.cli(append([]string{"report", "verify", plain, "--witness-policy", policy}, nats...)...)
	if code != 1 || !strings.Contains(msg, "not cosigned as the witness policy asks") {
		t.Fatalf("report verify --witness-policy of a report over a checkpoint the witnesses did not cosign: exit %d\n%s", code, msg)
	}
}
