package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/report"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// revealableCovertStep is the first journey (by id) with a covert step that a closed case reveals
// (any reveal rule but max-days) and that releases something, and that step's index.
func revealableCovertStep(t *testing.T, b *policy.Bundle) (*policy.Journey, int) {
	t.Helper()
	for _, j := range b.Journeys() {
		for i, st := range j.Steps {
			if st.Covert != nil && st.Covert.Reveal != policy.RevealMaxDays && len(st.Rules) > 0 {
				return j, i
			}
		}
	}
	t.Fatal("no journey has a covert step that closing the case reveals: the early reveal is not tested")
	return nil, 0
}

// covertCase opens a case of j for citizen, brings it to covert step idx, and makes releases there
// (each rule once, then the first again); it returns the case and how many were released.
func (ts *testStack) covertCase(j *policy.Journey, idx int, citizen string) (*brokerv1.Case, int) {
	ts.t.Helper()
	c := ts.open(j.Steps[0].Agency, j.ID, citizen)
	ts.advance(j, c, idx)
	st := j.Steps[idx]
	if st.Consent != nil {
		ts.grantConsent(citizen, j.ID, st.ID)
	}
	n := 0
	for _, r := range append(append([]*policy.Rule{}, st.Rules...), st.Rules[0]) {
		if _, err := ts.agency(st.Agency).Release(cw("cw-covert"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: r.Authority, Dataset: r.Dataset}); err != nil {
			ts.t.Logf("%s %s.%s: %v", st.ID, r.Authority, r.Dataset, err)
			continue
		}
		n++
	}
	if n == 0 {
		ts.t.Fatalf("the covert step %s of %s released nothing", st.ID, j.ID)
	}
	return c, n
}

// TestCovertRevealLoggedAndReported: closing a case at a covert step shows its checks to the citizen
// before their hidden-until time. The broker logs that (ACCESS_KIND_COVERT_REVEALED, with the number
// of checks and why) before it closes the case; the citizen reads it in English and Danish, the
// auditor's CLI lists it, and the data-responsibility report — made with the CLI in the Danish time
// zone, and verified — counts the checks as revealed early, in the covert step's agency and journey.
// Real gRPC over TLS, embedded NATS; the journey is read from the policies.
func TestCovertRevealLoggedAndReported(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	j, idx := revealableCovertStep(t, ts.Broker.Bundle())
	st := j.Steps[idx]
	citizen := ts.citizenFor(j.ID)
	start := time.Now()
	c, n := ts.covertCase(j, idx, citizen)

	capi, cctx := ts.citizenAPI(citizen)
	shown := func() map[auditv1.AccessKind][]*citizenv1.Access {
		t.Helper()
		la, err := capi.ListAccesses(cctx, &citizenv1.ListAccessesRequest{PageSize: 200})
		if err != nil {
			t.Fatal(err)
		}
		out := map[auditv1.AccessKind][]*citizenv1.Access{}
		for _, a := range la.GetAccesses() {
			if a.GetCaseId() == c.GetId() {
				out[a.GetKind()] = append(out[a.GetKind()], a)
			}
		}
		return out
	}
	if got := shown(); len(got[auditv1.AccessKind_ACCESS_KIND_CASEWORKER]) != 0 {
		t.Fatalf("the covert checks are shown before the case closed: %v", got)
	}
	// Everything the log keeps from the citizen at the step: the releases, and the register check or
	// case reads made while the case was there.
	hidden := 0
	for _, r := range ts.accessRecords(citizen) {
		if r.GetCaseId() == c.GetId() && r.GetStep() == st.ID && r.GetHiddenUntil().AsTime().After(time.Now()) {
			hidden++
		}
	}
	if hidden < n {
		t.Fatalf("%d of the %d covert releases are hidden", hidden, n)
	}

	if _, err := ts.agency(st.Agency).CloseCase(cw("cw-covert"), &brokerv1.CloseCaseRequest{CaseId: c.GetId(), Reason: "nothing found"}); err != nil {
		t.Fatal(err)
	}
	var reveal *auditv1.AccessRecord
	for _, r := range ts.accessRecords(citizen) {
		if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED && r.GetCaseId() == c.GetId() {
			if reveal != nil {
				t.Fatalf("two reveal records for one step: %v and %v", reveal, r)
			}
			reveal = r
		}
	}
	switch {
	case reveal == nil:
		t.Fatal("closing the case revealed covert checks without a record in the log")
	case reveal.GetStep() != st.ID || reveal.GetAgency() != st.Agency || reveal.GetJourney() != j.ID:
		t.Errorf("reveal names %s/%s/%s, want the covert step %s/%s/%s", reveal.GetAgency(), reveal.GetJourney(), reveal.GetStep(), st.Agency, j.ID, st.ID)
	case reveal.GetCovertReveal().GetAccesses() != uint32(hidden) || reveal.GetCovertReveal().GetCause() != auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_CASE_CLOSED:
		t.Errorf("reveal says %v, want %d accesses revealed by the close", reveal.GetCovertReveal(), hidden)
	case reveal.GetHiddenUntil() != nil || len(reveal.GetFields())+len(reveal.GetDerived()) > 0 || reveal.GetAuthority() != "":
		t.Errorf("the reveal record carries more than the reveal: %v", reveal)
	}

	got := shown()
	if len(got[auditv1.AccessKind_ACCESS_KIND_CASEWORKER]) != n {
		t.Errorf("after the close the citizen sees %d of the %d covert checks", len(got[auditv1.AccessKind_ACCESS_KIND_CASEWORKER]), n)
	}
	if rs := got[auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED]; len(rs) != 1 {
		t.Errorf("the citizen sees %d reveal entries, want 1", len(rs))
	} else if p := rs[0].GetPurpose(); !strings.Contains(p.GetEn(), "without telling you") || !strings.Contains(p.GetEn(), "because the case was closed") ||
		!strings.Contains(p.GetDa(), "uden at du fik besked") || !strings.Contains(p.GetDa(), "fordi sagen blev lukket") {
		t.Errorf("the reveal reads %q / %q", p.GetEn(), p.GetDa())
	}
	if code, msg := ts.cli("log", "--citizen", citizen, "--broker", ts.Broker.Addr()); code != 0 || !strings.Contains(msg, "COVERT REVEALED") {
		t.Errorf("aperture log: exit %d, no COVERT REVEALED\n%s", code, msg)
	}

	// The report, in the Danish time zone, over a checkpoint that holds the reveal.
	resp, err := ts.auditor().ListAccessRecords(context.Background(), &auditv1.ListAccessRecordsRequest{CitizenId: citizen, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for _, lf := range resp.GetLeaves() {
		last = max(last, lf.GetLeafIndex())
	}
	ts.waitSigned(last + 1)
	cph, err := time.LoadLocation("Europe/Copenhagen")
	if err != nil {
		t.Fatal(err)
	}
	day := start.In(cph)
	from, to := day.AddDate(0, 0, -1).Format(time.DateOnly), day.AddDate(0, 0, 2).Format(time.DateOnly)
	dir := t.TempDir()
	out := filepath.Join(dir, "report.json")
	nats := []string{"--nats-url", ts.nats.ClientURL()}
	if code, msg := ts.cli(append([]string{"report", "--from", from, "--to", to, "--tz", "Europe/Copenhagen", "--format", "json", "--out", out}, nats...)...); code != 0 {
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
	if rep.Period.TimeZone != "Europe/Copenhagen" || rep.Period.From.Format(time.RFC3339) != day.AddDate(0, 0, -1).Format(time.DateOnly)+"T00:00:00"+day.Format("-07:00") {
		t.Errorf("report period %v", rep.Period)
	}
	var row *report.Row
	for i, r := range rep.Figures.Rows {
		if r.Agency == st.Agency && r.Journey == j.ID {
			row = &rep.Figures.Rows[i]
		}
	}
	if row == nil || row.Covert != int64(hidden) || row.CovertRevealedEarly != int64(hidden) || row.CovertRevealed != 0 {
		t.Errorf("report row of %s/%s: %+v; want %d hidden accesses (%d of them releases), all revealed early", st.Agency, j.ID, row, hidden, n)
	}
	for _, g := range rep.NotCovered {
		if strings.HasPrefix(g.Figure, "covert accesses shown before") {
			t.Errorf("%q is counted but listed as not covered", g.Figure)
		}
	}
	code, msg := ts.cli(append([]string{"report", "verify", out}, nats...)...)
	if code != 0 || !strings.Contains(msg, "OK: all ") || !strings.Contains(msg, "time zone Europe/Copenhagen") {
		t.Fatalf("report verify: exit %d\n%s", code, msg)
	}
	// The same report from the config file's setting, in Markdown.
	cfg := filepath.Join(dir, "report.yaml")
	if err := os.WriteFile(cfg, []byte("report-tz: Europe/Copenhagen\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, msg = ts.cli(append([]string{"report", "--config", cfg, "--from", from, "--to", to}, nats...)...)
	if code != 0 || !strings.Contains(msg, "time zone Europe/Copenhagen") || !strings.Contains(msg, "| covert accesses revealed early (the case closed or moved on) | "+strconv.Itoa(hidden)+" |") {
		t.Errorf("markdown report with report-tz in the config: exit %d\n%s", code, msg)
	}
}

// TestCovertRevealFailsClosed: when the access log takes no records, a close that would reveal covert
// checks early is refused Unavailable and the case stays as it was (open, at the covert step): no
// reveal the log does not hold.
func TestCovertRevealFailsClosed(t *testing.T) {
	ts := newTestStack(t)
	j, idx := revealableCovertStep(t, ts.Broker.Bundle())
	st := j.Steps[idx]
	c, _ := ts.covertCase(j, idx, ts.citizenFor(j.ID))
	was, err := ts.Broker.Cases.Get(context.Background(), c.GetId())
	if err != nil {
		t.Fatal(err)
	}

	// The log stops taking records the way a full disk or a lost quorum does: JetStream refuses the
	// write (a sealed ACCESS stream takes nothing more).
	js := ts.jetStream()
	stream, err := js.Stream(context.Background(), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	_, err = ts.agency(st.Agency).CloseCase(cw("cw-covert"), &brokerv1.CloseCaseRequest{CaseId: c.GetId(), Reason: "nothing found"})
	wantCode(t, err, codes.Unavailable)
	wantReason(t, err, "LOG_UNAVAILABLE")
	got, err := ts.Broker.Cases.Get(context.Background(), c.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if cur, ok := got.CurrentStep(); got.State != cases.StateOpen || !ok || cur.ID != st.ID || got.Revision != was.Revision || got.CloseReason != "" {
		t.Errorf("the case changed without its reveal record: state %s, current %v, revision %d (was %d), close reason %q", got.State, cur, got.Revision, was.Revision, got.CloseReason)
	}
}

// TestReportTimeZoneSetting: the report's zone comes from --tz, else APERTURE_REPORT_TZ, else the
// config key; an unknown zone is a usage error that names where it came from, and --tz on the command
// line wins over the environment. (No log is needed to see which zone was taken: the command stops
// at the zone or, with a good one, at the missing verifier key of an empty data directory.)
func TestReportTimeZoneSetting(t *testing.T) {
	dir := t.TempDir()
	runIt := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"report", "--from", "2026", "--to", "2027", "--data", dir}, args...), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, msg := runIt("--tz", "Nowhere/Atlantis"); code != 2 || !strings.Contains(msg, "Nowhere/Atlantis") {
		t.Errorf("--tz Nowhere/Atlantis: exit %d\n%s", code, msg)
	}
	cfg := filepath.Join(dir, "report.yaml")
	if err := os.WriteFile(cfg, []byte("report-tz: Nowhere/Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg := runIt("--config", cfg); code != 2 || !strings.Contains(msg, "Nowhere/Config") {
		t.Errorf("report-tz in the config: exit %d\n%s", code, msg)
	}
	t.Setenv("APERTURE_REPORT_TZ", "Nowhere/Env")
	if code, msg := runIt("--config", cfg); code != 2 || !strings.Contains(msg, "Nowhere/Env") {
		t.Errorf("APERTURE_REPORT_TZ over the config: exit %d\n%s", code, msg)
	}
	if code, msg := runIt("--tz", "Europe/Copenhagen"); code == 2 || strings.Contains(msg, "Nowhere") || !strings.Contains(msg, "verifier") {
		t.Errorf("--tz on the command line over APERTURE_REPORT_TZ: exit %d\n%s", code, msg)
	}
}
