package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// name is the English label of an agency, authority or journey id, with the id; the id alone when
// there is no label.
func (r *Report) name(m func(*Labels) map[string]Text, id string) string {
	if id == "" {
		return "(none)"
	}
	if r.Labels != nil {
		if t, ok := m(r.Labels)[id]; ok && t.EN != "" {
			return fmt.Sprintf("%s (`%s`)", t.EN, id)
		}
	}
	return "`" + id + "`"
}

func agencies(l *Labels) map[string]Text    { return l.Agencies }
func authorities(l *Labels) map[string]Text { return l.Authorities }
func journeys(l *Labels) map[string]Text    { return l.Journeys }

// WriteMarkdown writes the report for people: the checkpoint it rests on, how to recompute it, and
// every figure. It is the auditor's full report; counts are not suppressed (the public page does that).
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	f := r.Figures
	t := f.Total()
	p("# Data-responsibility report %s to %s\n\n", r.Period.From.Format(timeFormat), r.Period.To.Format(timeFormat))
	p("Dates and times are in the time zone %s; the period includes its start and ends just before its end.\n\n", r.Period.zone())
	p("Every figure below is computed from the access log: the first %d records, which the signed checkpoint below commits to. "+
		"Anyone with read access to the log recomputes them with `aperture report verify REPORT.json`.\n\n", r.Checkpoint.TreeSize)
	p("- log origin: `%s`\n- tree size: %d\n- root hash: `%s`\n- records decided in the period: %d\n\n", r.Checkpoint.Origin, r.Checkpoint.TreeSize, r.Checkpoint.RootHash, f.InPeriod)
	p("```\n%s```\n\n", r.Checkpoint.Note)

	p("## Totals\n\n| figure | count |\n|---|---:|\n")
	for _, row := range []struct {
		k string
		v int64
	}{
		{"releases to caseworkers", t.Released}, {"refusals", t.Refused}, {"field paths disclosed", t.FieldsDisclosed},
		{"derived facts disclosed", t.FactsDisclosed}, {"case reads", t.CaseReads}, {"covert accesses", t.Covert},
		{"covert accesses whose hidden_until fell in the period", t.CovertRevealed},
		{"covert accesses revealed early (the case closed or moved on)", t.CovertRevealedEarly}, {"releases where an authority over-shared", t.OverSharing},
		{"citizens looking at their own data", f.CitizenSelf.Released}, {"citizens' own looks refused", f.CitizenSelf.Refused},
		{"auditor reads of a citizen's log", f.AuditorReads},
		{"emergency (break-glass) releases", t.BreakGlass},
		{"break-glass reviews found justified", f.BreakGlassReviews["JUSTIFIED"]},
		{"break-glass reviews found not justified", f.BreakGlassReviews["NOT_JUSTIFIED"]},
		{"consents given", t.ConsentsGranted}, {"consents withdrawn", t.ConsentsRevoked}, {"consents run out", t.ConsentsExpired},
		{"questions asked about an access", t.QuestionsAsked}, {"questions answered", t.QuestionsAnswered},
	} {
		p("| %s | %d |\n", row.k, row.v)
	}
	p("| median time to answer a question | %s |\n", time.Duration(f.MedianSecondsToAnswer)*time.Second)

	p("\n## Per agency and journey\n\n")
	if len(f.Rows) == 0 {
		p("No agency accessed data in the period.\n")
	} else {
		p("| agency | journey | released | refused | fields | facts | case reads | covert | covert revealed | revealed early | over-sharing | break-glass |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range f.Rows {
			p("| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d |\n", r.name(agencies, row.Agency), r.name(journeys, row.Journey),
				row.Released, row.Refused, row.FieldsDisclosed, row.FactsDisclosed, row.CaseReads, row.Covert, row.CovertRevealed, row.CovertRevealedEarly, row.OverSharing, row.BreakGlass)
		}
	}

	p("\n## Refusals by reason\n\n")
	if t.Refused == 0 {
		p("No refusals in the period.\n")
	} else {
		p("| agency | journey | reason | count |\n|---|---|---|---:|\n")
		for _, row := range f.Rows {
			for _, k := range slices.Sorted(maps.Keys(row.RefusedBy)) {
				p("| %s | %s | %s | %d |\n", r.name(agencies, row.Agency), r.name(journeys, row.Journey), k, row.RefusedBy[k])
			}
		}
	}

	p("\n## Consents and questions\n\nConsents citizens gave, withdrew and let run out for the agency's steps of the journey, and citizens' questions about the agency's accesses with the time the agency took to answer.\n\n")
	if t.ConsentsGranted+t.ConsentsRevoked+t.ConsentsExpired+t.QuestionsAsked+t.QuestionsAnswered == 0 {
		p("No consents or questions in the period.\n")
	} else {
		p("| agency | journey | consents given | withdrawn | run out | questions asked | answered | median time to answer |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range f.Rows {
			if row.ConsentsGranted+row.ConsentsRevoked+row.ConsentsExpired+row.QuestionsAsked+row.QuestionsAnswered == 0 {
				continue
			}
			p("| %s | %s | %d | %d | %d | %d | %d | %s |\n", r.name(agencies, row.Agency), r.name(journeys, row.Journey),
				row.ConsentsGranted, row.ConsentsRevoked, row.ConsentsExpired, row.QuestionsAsked, row.QuestionsAnswered, time.Duration(row.MedianSecondsToAnswer)*time.Second)
		}
	}

	p("\n## What was disclosed\n\nField paths and derived facts (`fact()`) released, per authority dataset.\n\n")
	if t.FieldsDisclosed+t.FactsDisclosed == 0 {
		p("Nothing was disclosed in the period.\n")
	} else {
		p("| agency | journey | authority.dataset:field | releases |\n|---|---|---|---:|\n")
		for _, row := range f.Rows {
			for _, k := range slices.Sorted(maps.Keys(row.Disclosed)) {
				p("| %s | %s | `%s` | %d |\n", r.name(agencies, row.Agency), r.name(journeys, row.Journey), k, row.Disclosed[k])
			}
		}
	}

	p("\n## Authorities\n\nOver-sharing: the authority answered with fields the broker had not asked for. They were stripped before release and logged.\n\n")
	if len(f.Authorities) == 0 {
		p("No authority data was released in the period.\n")
	} else {
		p("| authority | releases | over-sharing | fields stripped | corrections asked | decided | median time to decide |\n|---|---:|---:|---|---:|---|---:|\n")
		for _, a := range f.Authorities {
			var s, d []string
			for _, k := range slices.Sorted(maps.Keys(a.Stripped)) {
				s = append(s, fmt.Sprintf("`%s` ×%d", k, a.Stripped[k]))
			}
			for _, k := range slices.Sorted(maps.Keys(a.CorrectionsDecided)) {
				d = append(d, fmt.Sprintf("%s ×%d", strings.ToLower(k), a.CorrectionsDecided[k]))
			}
			p("| %s | %d | %d | %s | %d | %s | %s |\n", r.name(authorities, a.Authority), a.Released, a.OverSharing, strings.Join(s, ", "),
				a.CorrectionsRequested, strings.Join(d, ", "), time.Duration(a.MedianSecondsToDecide)*time.Second)
		}
	}

	p("\n## Not in this report\n\nThe access log does not record these, so no figure for them can be recomputed from it:\n\n")
	if len(r.NotCovered) == 0 {
		p("Nothing: every figure is counted from the log.\n")
	}
	for _, g := range r.NotCovered {
		p("- **%s**: %s\n", g.Figure, g.Why)
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
