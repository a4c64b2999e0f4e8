package portal

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/aperture-gov/aperture/broker/report"
)

// Metric names of the public report page (README "Metrics").
const (
	MetricReportViews      = "aperture.portal.report.views"
	MetricReportUnreadable = "aperture.portal.report.unreadable"
)

// reportMetrics count the report page's views by result (shown, none, not_found) and how many
// published report files could not be read at the last view (an operator's alarm: a report the
// public cannot see).
type reportMetrics struct {
	views      metric.Int64Counter
	unreadable metric.Int64Gauge
}

func newReportMetrics(mp metric.MeterProvider) (reportMetrics, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter("github.com/aperture-gov/aperture/broker/portal")
	var rm reportMetrics
	var err error
	if rm.views, err = m.Int64Counter(MetricReportViews, metric.WithDescription("Views of the public data-responsibility report page, by result")); err != nil {
		return rm, fmt.Errorf("portal metrics: %w", err)
	}
	if rm.unreadable, err = m.Int64Gauge(MetricReportUnreadable, metric.WithDescription("Published report files the portal could not read at the last view")); err != nil {
		return rm, fmt.Errorf("portal metrics: %w", err)
	}
	return rm, nil
}

func (m reportMetrics) view(ctx context.Context, result string) {
	m.views.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}

// countErrors is how many errors err joins (errors.Join), 1 for a plain error, 0 for nil.
func countErrors(err error) int64 {
	if err == nil {
		return 0
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return int64(len(j.Unwrap()))
	}
	return 1
}

// Reports gives the portal the published data-responsibility reports (the JSON form of
// `aperture report`). They hold aggregate figures only; the page suppresses small counts.
type Reports interface {
	// Reports returns every published report; an error names what could not be read (the reports
	// that could are still returned and shown).
	Reports() ([]*report.Report, error)
}

// reportID names a report in its URL by its period: "20260101-20270101".
func reportID(r *report.Report) string {
	// In the report's own time zone (the offsets its boundaries are written with): a Danish year is
	// 20260101-20270101, not the UTC dates of its midnights.
	return r.Period.From.Format("20060102") + "-" + r.Period.To.Format("20060102")
}

// reportPage is the public report page.
type reportPage struct {
	// None: no report is published.
	None   bool
	Report *report.Report
	ID     string
	Others []reportLink
	// Key figures, suppressed.
	Released, Refused, OverSharing, CovertRevealed, CovertEarly, Fields, Facts publicCount
	// From and Until are the first and last day of the period in the report's time zone, Zone its name.
	From, Until, Zone string
	// BreakGlass is emergency releases; Justified and NotJustified the auditors' reviews of them.
	BreakGlass, Justified, NotJustified publicCount
	// Consents given, withdrawn and run out; questions asked and answered, and the median time to
	// answer (shown only over at least MinPublic answers).
	ConsentsGranted, ConsentsRevoked, ConsentsExpired, QuestionsAsked, QuestionsAnswered publicCount
	ToAnswer                                                                             string
	// Consents are the rows with a consent or a question.
	Consents                     []consentRow
	Rows                         []reportRow
	Reasons                      []reasonRow
	Authorities                  []authorityRow
	ChartDecisions, ChartReasons template.HTML
	MinPublic                    int
	RootHash, Origin             string
	TreeSize                     uint64
}

type reportLink struct {
	ID, Label string
	Current   bool
}

// publicCount is a count as shown: the number, or "fewer than 5".
type publicCount struct {
	N      int64
	Hidden bool
}

type reportRow struct {
	Agency, Journey                                               string
	Released, Refused, Fields, Facts, CovertRevealed, OverSharing publicCount
	BreakGlass, CovertEarly                                       publicCount
}

// consentRow is one agency and journey's consents and questions.
type consentRow struct {
	Agency, Journey                            string
	Granted, Revoked, Expired, Asked, Answered publicCount
	ToAnswer                                   string
}

type reasonRow struct {
	Reason string
	Count  publicCount
}

type authorityRow struct {
	Authority                                              string
	Released, OverSharing, Corrections, Accepted, Rejected publicCount
}

// publicColumn suppresses one column of counts (cells that add up to a shown total).
func publicColumn(values []int64) ([]publicCount, publicCount) {
	cells, total := report.PublicGroup(values, report.MinPublic)
	out := make([]publicCount, len(cells))
	for i, c := range cells {
		out[i] = publicCount(c)
	}
	return out, publicCount(total)
}

// Count writes a shown count: the number, or "fewer than 5" for a suppressed one.
func (v *view) Count(c publicCount) string {
	if c.Hidden {
		return v.T("report.fewer", report.MinPublic)
	}
	return fmt.Sprint(c.N)
}

// label picks a report label in the page's language; the id when there is none.
func label(v *view, m map[string]report.Text, id string) string {
	if t, ok := m[id]; ok && t.EN != "" {
		return t.In(v.Lang)
	}
	if id == "" {
		return v.T("report.unnamed")
	}
	return id
}

// publicReport is the public data-responsibility report (no sign-in): GET /report shows the newest
// published report, GET /report/{id} one by its period.
func (p *Portal) publicReport(w http.ResponseWriter, r *http.Request) {
	v := p.newView(w, r)
	if _, name, ok := p.cfg.Sessions.Session(r); ok {
		v.Name, v.SignedIn = name, true
	}
	v.Nav, v.Title = "report", v.T("report.title")
	var all []*report.Report
	if p.cfg.Reports != nil {
		var err error
		all, err = p.cfg.Reports.Reports()
		p.reportMetrics.unreadable.Record(r.Context(), countErrors(err))
		if err != nil {
			// The published files are the operator's: no citizen data in the error.
			p.log.Error("portal: a published report could not be read", "route", r.Pattern, "err", err)
		}
	}
	slices.SortFunc(all, func(a, b *report.Report) int {
		return cmp.Or(b.Period.To.Compare(a.Period.To), b.Period.From.Compare(a.Period.From))
	})
	page := reportPage{MinPublic: report.MinPublic}
	id := r.PathValue("id")
	var cur *report.Report
	for _, rep := range all {
		if (id == "" && cur == nil) || reportID(rep) == id {
			cur = rep
		}
	}
	if cur == nil && id != "" {
		p.reportMetrics.view(r.Context(), "not_found")
		p.notFound(w, r, v)
		return
	}
	if cur == nil {
		page.None = true
		p.reportMetrics.view(r.Context(), "none")
		v.Data = &page
		p.render(w, r, v, http.StatusOK, "report")
		return
	}
	for _, rep := range all {
		page.Others = append(page.Others, reportLink{ID: reportID(rep), Label: v.DayIn(rep.Period.From) + " – " + v.DayIn(rep.Period.To.AddDate(0, 0, -1)), Current: rep == cur})
	}
	page.fill(v, cur)
	p.reportMetrics.view(r.Context(), "shown")
	// Shared caches may keep the page for a signed-out visitor only: a signed-in one names the citizen.
	w.Header().Add("Vary", "Cookie")
	if v.SignedIn {
		w.Header().Set("Cache-Control", "private, no-store")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=300")
	}
	v.Data = &page
	p.render(w, r, v, http.StatusOK, "report")
}

func (page *reportPage) fill(v *view, rep *report.Report) {
	page.Report, page.ID = rep, reportID(rep)
	page.From, page.Until, page.Zone = v.DayIn(rep.Period.From), v.DayIn(rep.Period.To.AddDate(0, 0, -1)), cmp.Or(rep.Period.TimeZone, "UTC")
	page.RootHash, page.Origin, page.TreeSize = rep.Checkpoint.RootHash, rep.Checkpoint.Origin, rep.Checkpoint.TreeSize
	labels := rep.Labels
	if labels == nil {
		labels = &report.Labels{}
	}
	f := rep.Figures
	col := func(get func(report.Row) int64) ([]publicCount, publicCount) {
		vals := make([]int64, len(f.Rows))
		for i, r := range f.Rows {
			vals[i] = get(r)
		}
		return publicColumn(vals)
	}
	rel, relT := col(func(r report.Row) int64 { return r.Released })
	ref, refT := col(func(r report.Row) int64 { return r.Refused })
	fld, fldT := col(func(r report.Row) int64 { return r.FieldsDisclosed })
	fct, fctT := col(func(r report.Row) int64 { return r.FactsDisclosed })
	cov, covT := col(func(r report.Row) int64 { return r.CovertRevealed })
	early, earlyT := col(func(r report.Row) int64 { return r.CovertRevealedEarly })
	ovr, ovrT := col(func(r report.Row) int64 { return r.OverSharing })
	brk, brkT := col(func(r report.Row) int64 { return r.BreakGlass })
	page.Released, page.Refused, page.Fields, page.Facts, page.CovertRevealed, page.OverSharing = relT, refT, fldT, fctT, covT, ovrT
	page.BreakGlass, page.CovertEarly = brkT, earlyT
	for i, r := range f.Rows {
		page.Rows = append(page.Rows, reportRow{
			Agency: label(v, labels.Agencies, r.Agency), Journey: label(v, labels.Journeys, r.Journey),
			Released: rel[i], Refused: ref[i], Fields: fld[i], Facts: fct[i], CovertRevealed: cov[i], OverSharing: ovr[i],
			BreakGlass: brk[i], CovertEarly: early[i],
		})
	}
	page.fillConsents(v, labels, f)
	reviews, _ := publicColumn([]int64{f.BreakGlassReviews["JUSTIFIED"], f.BreakGlassReviews["NOT_JUSTIFIED"]})
	page.Justified, page.NotJustified = reviews[0], reviews[1]
	total := f.Total()
	reasons := slices.Sorted(maps.Keys(total.RefusedBy))
	vals := make([]int64, len(reasons))
	for i, k := range reasons {
		vals[i] = total.RefusedBy[k]
	}
	counts, _ := publicColumn(vals)
	for i, k := range reasons {
		if vals[i] == 0 {
			continue
		}
		page.Reasons = append(page.Reasons, reasonRow{Reason: v.T("report.reason." + k), Count: counts[i]})
	}
	acol := func(get func(report.AuthorityRow) int64) []publicCount {
		vals := make([]int64, len(f.Authorities))
		for i, a := range f.Authorities {
			vals[i] = get(a)
		}
		c, _ := publicColumn(vals)
		return c
	}
	ar := acol(func(a report.AuthorityRow) int64 { return a.Released })
	ao := acol(func(a report.AuthorityRow) int64 { return a.OverSharing })
	ac := acol(func(a report.AuthorityRow) int64 { return a.CorrectionsRequested })
	aa := acol(func(a report.AuthorityRow) int64 { return a.CorrectionsDecided["ACCEPTED"] })
	aj := acol(func(a report.AuthorityRow) int64 { return a.CorrectionsDecided["REJECTED"] })
	for i, a := range f.Authorities {
		page.Authorities = append(page.Authorities, authorityRow{Authority: label(v, labels.Authorities, a.Authority), Released: ar[i], OverSharing: ao[i],
			Corrections: ac[i], Accepted: aa[i], Rejected: aj[i]})
	}
	page.ChartDecisions = decisionsChart(v, page.Rows)
	page.ChartReasons = reasonsChart(v, page.Reasons)
}

// fillConsents fills the consents and questions: every column suppressed as a group over the rows
// that have any, a median time to answer shown only over at least MinPublic answers.
func (page *reportPage) fillConsents(v *view, labels *report.Labels, f report.Figures) {
	var rows []report.Row
	for _, r := range f.Rows {
		if r.ConsentsGranted+r.ConsentsRevoked+r.ConsentsExpired+r.QuestionsAsked+r.QuestionsAnswered > 0 {
			rows = append(rows, r)
		}
	}
	col := func(get func(report.Row) int64) ([]publicCount, publicCount) {
		vals := make([]int64, len(rows))
		for i, r := range rows {
			vals[i] = get(r)
		}
		return publicColumn(vals)
	}
	gr, grT := col(func(r report.Row) int64 { return r.ConsentsGranted })
	rv, rvT := col(func(r report.Row) int64 { return r.ConsentsRevoked })
	ex, exT := col(func(r report.Row) int64 { return r.ConsentsExpired })
	as, asT := col(func(r report.Row) int64 { return r.QuestionsAsked })
	an, anT := col(func(r report.Row) int64 { return r.QuestionsAnswered })
	page.ConsentsGranted, page.ConsentsRevoked, page.ConsentsExpired, page.QuestionsAsked, page.QuestionsAnswered = grT, rvT, exT, asT, anT
	page.ToAnswer = v.toAnswer(anT.N, f.MedianSecondsToAnswer)
	for i, r := range rows {
		page.Consents = append(page.Consents, consentRow{
			Agency: label(v, labels.Agencies, r.Agency), Journey: label(v, labels.Journeys, r.Journey),
			Granted: gr[i], Revoked: rv[i], Expired: ex[i], Asked: as[i], Answered: an[i],
			ToAnswer: v.toAnswer(r.QuestionsAnswered, r.MedianSecondsToAnswer),
		})
	}
}

// toAnswer words a median time to answer over answered answers: in days, hours or "under an hour";
// "too few answers" below MinPublic (a time over one or two answers can point at a person), "–" when
// there is none.
func (v *view) toAnswer(answered, seconds int64) string {
	const hour, day = 3600, 24 * 3600
	switch {
	case answered == 0:
		return "–"
	case answered < report.MinPublic:
		return v.T("report.wait.few")
	case seconds >= 2*day:
		return v.T("report.wait.days", seconds/day)
	case seconds >= day:
		return v.T("report.wait.day")
	case seconds >= 2*hour:
		return v.T("report.wait.hours", seconds/hour)
	case seconds >= hour:
		return v.T("report.wait.hour")
	}
	return v.T("report.wait.minutes")
}

// Bar charts, drawn on the server as inline SVG (no script), each with a <title> and <desc>; the page
// repeats every figure in a table. A suppressed count draws no bar, only its "fewer than 5" label.
const (
	chartW      = 960
	chartLabelW = 380
	chartBarH   = 16
	chartGap    = 14
	chartNumW   = 110
)

type bar struct {
	class string
	c     publicCount
}

type barGroup struct {
	label []string
	bars  []bar
}

func barChart(v *view, id, title, desc string, legend [][2]string, groups []barGroup) template.HTML {
	var maxN int64 = 1
	for _, g := range groups {
		for _, b := range g.bars {
			if !b.c.Hidden && b.c.N > maxN {
				maxN = b.c.N
			}
		}
	}
	scale := float64(chartW-chartLabelW-chartNumW-16) / float64(maxN)
	y := 12
	if len(legend) > 0 {
		y = 36
	}
	var s svgBuf
	var body svgBuf
	for _, g := range groups {
		h := max(len(g.bars)*chartBarH+(len(g.bars)-1)*3, len(g.label)*lineH)
		body.f(`<g class="chart-group">`)
		for i, l := range g.label {
			body.f(`<text x="0" y="%d" class="chart-label">%s</text>`, y+13+i*lineH, esc(l))
		}
		by := y
		for _, b := range g.bars {
			w := 0
			if !b.c.Hidden {
				w = int(float64(b.c.N)*scale + 0.5)
			}
			if w > 0 {
				body.f(`<rect x="%d" y="%d" width="%d" height="%d" class="%s"/>`, chartLabelW, by, w, chartBarH, b.class)
			}
			body.f(`<text x="%d" y="%d" class="chart-num">%s</text>`, chartLabelW+w+6, by+13, esc(v.Count(b.c)))
			by += chartBarH + 3
		}
		body.f(`</g>`)
		y += h + chartGap
	}
	height := y
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" id="%s" class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-labelledby="%s-title %s-desc" focusable="false">`,
		id, chartW, height, chartW, height, id, id)
	s.f(`<title id="%s-title">%s</title><desc id="%s-desc">%s</desc>`, id, esc(title), id, esc(desc))
	x := chartLabelW
	for _, l := range legend {
		s.f(`<rect x="%d" y="8" width="14" height="14" class="%s"/><text x="%d" y="20" class="chart-legend">%s</text>`, x, l[0], x+20, esc(l[1]))
		x += 30 + 9*len([]rune(l[1]))
	}
	s.WriteString(body.String())
	s.f(`</svg>`)
	return template.HTML(s.String())
}

func decisionsChart(v *view, rows []reportRow) template.HTML {
	var groups []barGroup
	for _, r := range rows {
		lbl := append(wrap(r.Agency, 44), wrap(r.Journey, 44)...)
		groups = append(groups, barGroup{label: lbl, bars: []bar{{"chart-bar chart-released", r.Released}, {"chart-bar chart-refused", r.Refused}}})
	}
	return barChart(v, "chart-decisions", v.T("report.chart.decisions"), v.T("report.chart.decisions.desc", len(rows)),
		[][2]string{{"chart-bar chart-released", v.T("report.col.released")}, {"chart-bar chart-refused", v.T("report.col.refused")}}, groups)
}

func reasonsChart(v *view, rows []reasonRow) template.HTML {
	var groups []barGroup
	for _, r := range rows {
		groups = append(groups, barGroup{label: wrap(r.Reason, 44), bars: []bar{{"chart-bar chart-refused", r.Count}}})
	}
	return barChart(v, "chart-reasons", v.T("report.chart.reasons"), v.T("report.chart.reasons.desc", len(rows)), nil, groups)
}
