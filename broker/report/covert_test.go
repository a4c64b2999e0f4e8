package report_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/report"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

func inCase(id, step string) recOpt {
	return func(r *auditv1.AccessRecord) { r.CaseId, r.Step = id, step }
}

// revealed is the early reveal at t of the covert step "s1" of case id (as the broker writes it: the
// covert step's agency, the number it found, no data).
func revealed(id string, t time.Time, n uint32, opts ...recOpt) *auditv1.AccessRecord {
	return rec(append([]recOpt{kind(auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED), at(t), fields(), inCase(id, "s1"), func(r *auditv1.AccessRecord) {
		r.Authority, r.Dataset = "", ""
		r.CovertReveal = &auditv1.CovertReveal{Accesses: n, Cause: auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_CASE_CLOSED}
	}}, opts...)...)
}

func TestBuilderCovertRevealedEarly(t *testing.T) {
	covertIn := func(t0 time.Time, until time.Time, opts ...recOpt) *auditv1.AccessRecord {
		return rec(append([]recOpt{fields(), at(t0), hidden(until), inCase("c1", "s1")}, opts...)...)
	}
	later := inside.Add(30 * 24 * time.Hour)
	released := func(n int64) report.Decisions { return report.Decisions{Released: n} }
	for _, tc := range []struct {
		name string
		recs []*auditv1.AccessRecord
		want []report.Row
	}{
		{
			name: "a reveal shows the case's hidden accesses at its step early; they are not counted again at their hidden_until",
			recs: []*auditv1.AccessRecord{
				covertIn(inside, later), covertIn(inside, to.Add(time.Hour)),
				revealed("c1", inside.Add(time.Hour), 2),
			},
			want: []report.Row{{Agency: "a1", Journey: "j1", Decisions: released(2), Covert: 2, CovertRevealedEarly: 2}},
		},
		{
			name: "an access whose hidden_until passed before the reveal was shown then, not by the reveal",
			recs: []*auditv1.AccessRecord{
				covertIn(inside, inside.Add(time.Minute)), covertIn(inside, later),
				revealed("c1", inside.Add(time.Hour), 1),
			},
			want: []report.Row{{Agency: "a1", Journey: "j1", Decisions: released(2), Covert: 2, CovertRevealed: 1, CovertRevealedEarly: 1}},
		},
		{
			name: "another case, another step: not revealed",
			recs: []*auditv1.AccessRecord{
				covertIn(inside, later, inCase("c2", "s1")), covertIn(inside, later, inCase("c1", "s2")),
				revealed("c1", inside.Add(time.Hour), 0),
			},
			want: []report.Row{{Agency: "a1", Journey: "j1", Decisions: released(2), Covert: 2, CovertRevealed: 2}},
		},
		{
			name: "a reveal retried (the same step revealed twice) counts each access once",
			recs: []*auditv1.AccessRecord{
				covertIn(inside, later), revealed("c1", inside.Add(time.Hour), 1), revealed("c1", inside.Add(2*time.Hour), 1),
			},
			want: []report.Row{{Agency: "a1", Journey: "j1", Decisions: released(1), Covert: 1, CovertRevealedEarly: 1}},
		},
		{
			name: "made last year, revealed early this year: counted this year in the access's own row",
			recs: []*auditv1.AccessRecord{
				covertIn(before.Add(-time.Hour), later, agency("a2")), revealed("c1", inside, 1),
			},
			want: []report.Row{{Agency: "a2", Journey: "j1", CovertRevealedEarly: 1}},
		},
		{
			name: "revealed early last year: counted in neither year's figures of this one",
			recs: []*auditv1.AccessRecord{
				covertIn(before.Add(-time.Hour), inside), revealed("c1", before, 1),
			},
			want: []report.Row{},
		},
		{
			name: "made this year, revealed early next year: covert this year, revealed next",
			recs: []*auditv1.AccessRecord{
				covertIn(inside, to.Add(48*time.Hour)), revealed("c1", to.Add(time.Hour), 1),
			},
			want: []report.Row{{Agency: "a1", Journey: "j1", Decisions: released(1), Covert: 1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := figures(t, tc.recs...)
			if d := report.Diff(report.Figures{Leaves: got.Leaves, InPeriod: got.InPeriod, Rows: tc.want, Authorities: got.Authorities}, got); len(d) > 0 {
				t.Errorf("figures differ:\n  %s", strings.Join(d, "\n  "))
			}
		})
	}
}

// TestCovertRevealedEarlyOutputs: the figure is in every form, and verification compares it.
func TestCovertRevealedEarlyOutputs(t *testing.T) {
	f := figures(t, rec(fields(), hidden(to.Add(time.Hour)), inCase("c1", "s1")), revealed("c1", inside.Add(time.Hour), 1))
	if tot := f.Total(); tot.CovertRevealedEarly != 1 || tot.CovertRevealed != 0 {
		t.Fatalf("total: %+v", tot)
	}
	r := &report.Report{Format: report.Format, Period: period, NotCovered: report.NotCovered(), Figures: f,
		Checkpoint: report.Checkpoint{Origin: "example.org/log", TreeSize: 2, RootHash: "AAAA", Note: "example.org/log\n2\nAAAA\n"}}
	var md, csv, js bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteCSV(&csv); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| covert accesses revealed early (the case closed or moved on) | 1 |") || !strings.Contains(md.String(), "| `a1` | `j1` | 1 | 0 | 0 | 0 | 0 | 1 | 0 | 1 | 0 | 0 |") {
		t.Errorf("Markdown:\n%s", md.String())
	}
	if !strings.Contains(csv.String(), ",agency_journey,a1,j1,,covert_revealed_early,,1") {
		t.Errorf("CSV:\n%s", csv.String())
	}
	if !strings.Contains(js.String(), `"covert_revealed_early": 1`) {
		t.Errorf("JSON:\n%s", js.String())
	}
	tampered := f
	tampered.Rows = append([]report.Row(nil), f.Rows...)
	tampered.Rows[0].CovertRevealedEarly = 0
	if d := report.Diff(tampered, f); len(d) != 1 || !strings.Contains(d[0], "covert_revealed_early: the report says 0; the log gives 1") {
		t.Errorf("diff of a hidden early reveal: %v", d)
	}
	for _, g := range report.NotCovered() {
		if strings.HasPrefix(g.Figure, "covert accesses revealed early") && !strings.Contains(g.Figure, "before the broker logged") ||
			strings.HasPrefix(g.Figure, "covert accesses shown before") {
			t.Errorf("%q is counted but listed as not covered", g.Figure)
		}
	}
}

func TestParseBoundaryInZone(t *testing.T) {
	cph, err := time.LoadLocation("Europe/Copenhagen")
	if err != nil {
		t.Fatalf("the zone database: %v", err)
	}
	for _, tc := range []struct {
		in   string
		loc  *time.Location
		want string // UTC
	}{
		{"2026", time.UTC, "2026-01-01T00:00:00Z"},
		{"2026", cph, "2025-12-31T23:00:00Z"}, // the Danish year starts an hour before UTC's
		{"2027", cph, "2026-12-31T23:00:00Z"},
		{"2026-07", cph, "2026-06-30T22:00:00Z"},    // summer time: two hours
		{"2026-03-29", cph, "2026-03-28T23:00:00Z"}, // the day summer time starts begins in winter time
		{"2026-03-30", cph, "2026-03-29T22:00:00Z"},
		{"2026-10-25", cph, "2026-10-24T22:00:00Z"},
		{"2026-10-26", cph, "2026-10-25T23:00:00Z"},
		{"2026-05-01T12:00:00+02:00", cph, "2026-05-01T10:00:00Z"}, // names its own offset
		{"2026-05-01T12:00:00Z", cph, "2026-05-01T12:00:00Z"},
	} {
		got, err := report.ParseBoundary(tc.in, tc.loc)
		if err != nil {
			t.Errorf("%s in %s: %v", tc.in, tc.loc, err)
			continue
		}
		if g := got.UTC().Format(time.RFC3339); g != tc.want {
			t.Errorf("%s in %s: %s, want %s", tc.in, tc.loc, g, tc.want)
		}
	}
	for _, bad := range []string{"", "26", "2026-13", "2026-02-30", "1 Jan 2026", "2026-01-01 10:00"} {
		if _, err := report.ParseBoundary(bad, cph); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestPeriodInZone: a Danish year contains the access at 00:30 Danish time on New Year's Day (23:30
// UTC the day before) and not the one at 00:30 Danish time on the next New Year's Day; the UTC year
// counts them the other way round. The zone is stated in the report and verified.
func TestPeriodInZone(t *testing.T) {
	cph, err := time.LoadLocation("Europe/Copenhagen")
	if err != nil {
		t.Fatalf("the zone database: %v", err)
	}
	first := time.Date(2026, 1, 1, 0, 30, 0, 0, cph)
	next := time.Date(2027, 1, 1, 0, 30, 0, 0, cph)
	dk := report.Period{From: time.Date(2026, 1, 1, 0, 0, 0, 0, cph), To: time.Date(2027, 1, 1, 0, 0, 0, 0, cph), TimeZone: "Europe/Copenhagen"}
	count := func(p report.Period) int64 {
		b, err := report.NewBuilder(p)
		if err != nil {
			t.Fatal(err)
		}
		b.AddRecord(rec(at(first)))
		b.AddRecord(rec(at(next)))
		return b.Figures().Rows[0].Released
	}
	for _, tc := range []struct {
		p      report.Period
		want   int64
		within time.Time
	}{{dk, 1, first}, {period, 1, next}} {
		if got := count(tc.p); got != tc.want || !tc.p.Contains(tc.within) {
			t.Errorf("period %v: %d released, contains %v: %v", tc.p, got, tc.within, tc.p.Contains(tc.within))
		}
	}
	shown, err := dk.In()
	if err != nil {
		t.Fatal(err)
	}
	r := &report.Report{Format: report.Format, Period: shown, Figures: report.Figures{Rows: []report.Row{}, Authorities: []report.AuthorityRow{}},
		Checkpoint: report.Checkpoint{Origin: "example.org/log", TreeSize: 0, RootHash: "AAAA", Note: "x"}}
	var js, md, csv bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteCSV(&csv); err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Period map[string]string `json:"period"`
	}
	if err := json.Unmarshal(js.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Period["from"] != "2026-01-01T00:00:00+01:00" || raw.Period["to"] != "2027-01-01T00:00:00+01:00" || raw.Period["time_zone"] != "Europe/Copenhagen" {
		t.Errorf("JSON period: %v", raw.Period)
	}
	back, err := report.Decode(bytes.NewReader(js.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !back.Period.From.Equal(dk.From) || back.Period.TimeZone != dk.TimeZone {
		t.Errorf("decoded period %v", back.Period)
	}
	if !strings.Contains(md.String(), "# Data-responsibility report 2026-01-01T00:00:00+01:00 to 2027-01-01T00:00:00+01:00") || !strings.Contains(md.String(), "time zone Europe/Copenhagen") {
		t.Errorf("Markdown:\n%s", md.String())
	}
	if !strings.Contains(csv.String(), "2026-01-01T00:00:00+01:00,2027-01-01T00:00:00+01:00,Europe/Copenhagen,") {
		t.Errorf("CSV:\n%s", csv.String())
	}
	if _, err := report.Decode(strings.NewReader(strings.Replace(js.String(), "Europe/Copenhagen", "Nowhere/Atlantis", 1))); err == nil {
		t.Error("a report in an unknown time zone decoded")
	}
	// Verification stops before reading the log when the stated zone is not the one the period's
	// boundaries are written in (the zone was changed after the report was made).
	moved, err := report.Decode(strings.NewReader(strings.Replace(js.String(), "Europe/Copenhagen", "America/New_York", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := moved.Recompute(t.Context(), nil, nil, nil); err == nil || !strings.Contains(err.Error(), "not written in its time zone America/New_York") {
		t.Errorf("verify of a report whose zone was changed: %v", err)
	}
	if _, err := back.Recompute(t.Context(), nil, nil, nil); err == nil || !strings.Contains(err.Error(), "no checkpoint verifier key") {
		t.Errorf("verify of the report as made: %v (want it to pass the zone check and stop at the missing key)", err)
	}
}
