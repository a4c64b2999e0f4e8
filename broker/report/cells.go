package report

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
)

// Cell is one figure of a report, in a flat form: the CSV rows, and what Diff compares.
type Cell struct {
	// Section is "total", "agency_journey", "authority" or "citizen_self".
	Section   string
	Agency    string
	Journey   string
	Authority string
	// Measure names the count ("released", "refused_by", "disclosed", …); Key qualifies it (the
	// refusal reason, the field path) where the measure is broken down.
	Measure string
	Key     string
	Value   int64
}

// Name identifies the cell in a message.
func (c Cell) Name() string {
	s := c.Section
	switch c.Section {
	case "agency_journey":
		s += fmt.Sprintf("[agency=%s journey=%s]", c.Agency, c.Journey)
	case "authority":
		s += fmt.Sprintf("[authority=%s]", c.Authority)
	}
	s += "." + c.Measure
	if c.Key != "" {
		s += "[" + c.Key + "]"
	}
	return s
}

// Cells lists every figure, in a stable order.
func (f Figures) Cells() []Cell {
	var out []Cell
	add := func(c Cell) { out = append(out, c) }
	add(Cell{Section: "total", Measure: "leaves", Value: int64(f.Leaves)})
	add(Cell{Section: "total", Measure: "in_period", Value: f.InPeriod})
	add(Cell{Section: "total", Measure: "auditor_reads", Value: f.AuditorReads})
	add(Cell{Section: "total", Measure: "median_seconds_to_answer", Value: f.MedianSecondsToAnswer})
	add(Cell{Section: "citizen_self", Measure: "released", Value: f.CitizenSelf.Released})
	add(Cell{Section: "citizen_self", Measure: "refused", Value: f.CitizenSelf.Refused})
	for _, k := range slices.Sorted(maps.Keys(f.BreakGlassReviews)) {
		add(Cell{Section: "total", Measure: "break_glass_reviews", Key: k, Value: f.BreakGlassReviews[k]})
	}
	for _, r := range f.Rows {
		c := Cell{Section: "agency_journey", Agency: r.Agency, Journey: r.Journey}
		for _, m := range []struct {
			name string
			v    int64
		}{
			{"released", r.Released}, {"refused", r.Refused}, {"fields_disclosed", r.FieldsDisclosed},
			{"facts_disclosed", r.FactsDisclosed}, {"case_reads", r.CaseReads}, {"covert", r.Covert},
			{"covert_revealed", r.CovertRevealed}, {"covert_revealed_early", r.CovertRevealedEarly}, {"over_sharing", r.OverSharing}, {"break_glass", r.BreakGlass},
			{"consents_granted", r.ConsentsGranted}, {"consents_revoked", r.ConsentsRevoked}, {"consents_expired", r.ConsentsExpired},
			{"questions_asked", r.QuestionsAsked}, {"questions_answered", r.QuestionsAnswered}, {"median_seconds_to_answer", r.MedianSecondsToAnswer},
		} {
			c.Measure, c.Value = m.name, m.v
			add(c)
		}
		for _, k := range slices.Sorted(maps.Keys(r.RefusedBy)) {
			c.Measure, c.Key, c.Value = "refused_by", k, r.RefusedBy[k]
			add(c)
		}
		for _, k := range slices.Sorted(maps.Keys(r.Disclosed)) {
			c.Measure, c.Key, c.Value = "disclosed", k, r.Disclosed[k]
			add(c)
		}
	}
	for _, a := range f.Authorities {
		c := Cell{Section: "authority", Authority: a.Authority}
		c.Measure, c.Value = "released", a.Released
		add(c)
		c.Measure, c.Value = "over_sharing", a.OverSharing
		add(c)
		c.Measure, c.Value = "corrections_requested", a.CorrectionsRequested
		add(c)
		c.Measure, c.Value = "median_seconds_to_decide", a.MedianSecondsToDecide
		add(c)
		for _, k := range slices.Sorted(maps.Keys(a.CorrectionsDecided)) {
			c.Measure, c.Key, c.Value = "corrections_decided", k, a.CorrectionsDecided[k]
			add(c)
		}
		c.Key = ""
		for _, k := range slices.Sorted(maps.Keys(a.Stripped)) {
			c.Measure, c.Key, c.Value = "stripped", k, a.Stripped[k]
			add(c)
		}
	}
	return out
}

// Diff compares the figures a report states (got) with recomputed ones (want) and describes every
// difference: a figure with another value, a figure only one side has. Empty means they agree.
func Diff(got, want Figures) []string {
	var out []string
	index := func(cs []Cell, dup func(string)) map[string]int64 {
		m := make(map[string]int64, len(cs))
		for _, c := range cs {
			if _, ok := m[c.Name()]; ok && dup != nil {
				dup(c.Name())
			}
			m[c.Name()] += c.Value
		}
		return m
	}
	// A figure stated twice (a row split in two) is a difference even when the parts add up.
	g := index(got.Cells(), func(name string) { out = append(out, fmt.Sprintf("%s: the report states it more than once", name)) })
	w := index(want.Cells(), nil)
	for _, k := range slices.Sorted(maps.Keys(w)) {
		gv, ok := g[k]
		switch {
		case !ok && w[k] != 0:
			out = append(out, fmt.Sprintf("%s: the report leaves it out; the log gives %d", k, w[k]))
		case ok && gv != w[k]:
			out = append(out, fmt.Sprintf("%s: the report says %d; the log gives %d", k, gv, w[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(g)) {
		if _, ok := w[k]; !ok && g[k] != 0 {
			out = append(out, fmt.Sprintf("%s: the report says %d; the log has no such figure", k, g[k]))
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(a, b) })
	return out
}

// WriteCSV writes the figures as CSV, one figure a line, with a header.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"period_from", "period_to", "period_time_zone", "checkpoint_origin", "checkpoint_tree_size", "checkpoint_root_hash",
		"section", "agency", "journey", "authority", "measure", "key", "value"})
	head := []string{r.Period.From.Format(timeFormat), r.Period.To.Format(timeFormat), r.Period.zone(), r.Checkpoint.Origin,
		strconv.FormatUint(r.Checkpoint.TreeSize, 10), r.Checkpoint.RootHash}
	for _, c := range r.Figures.Cells() {
		cw.Write(append(head[:len(head):len(head)], c.Section, c.Agency, c.Journey, c.Authority, c.Measure, c.Key, strconv.FormatInt(c.Value, 10)))
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write report CSV: %w", err)
	}
	return nil
}
