// Package report computes the yearly data-responsibility report: per agency and journey, how many
// releases and refusals (by reason) the broker decided, how many field paths and derived facts it
// disclosed, how many covert accesses were made and later shown to the citizen, how often an
// authority answered more than the broker asked for (over-sharing, stripped before release), how many
// consents citizens gave, withdrew and let run out, how many questions they asked about accesses and
// how fast the agencies answered, how many corrections they asked for and how the authorities decided,
// and how often agencies broke glass and what the auditors found.
//
// Every figure is computed from the access log and nothing else, over exactly the leaves of one
// signed checkpoint (tlog.Replay checks the recomputed root), and the report names that checkpoint:
// anyone with read access to the log recomputes the same figures from the same leaves and compares
// ([Diff]). Figures the log does not record are not in the report; [NotCovered] says which and why.
//
// Records hold no citizen id and no field value, and the report keeps none of what they do hold per
// citizen (pseudonyms, case ids, caseworkers): only counts per agency, journey, authority and field
// path. Small counts can still point at individuals; [Suppress] is the rule the public page applies.
package report

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Format names this version of the report's JSON form.
const Format = "aperture.report.v1"

// Period is the half-open interval [From, To) of access times a report covers.
type Period struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// TimeZone is the IANA time zone the period's dates are in ("Europe/Copenhagen"), so that "2026"
	// is the calendar year where the agencies are; empty means UTC (reports made before zones were
	// stated). From and To are instants either way: verification recomputes over the same ones.
	TimeZone string `json:"time_zone,omitempty"`
}

// Location is the period's time zone (UTC when none is stated). It fails when the zone is unknown:
// a program that reads reports should embed the zone database (import _ "time/tzdata").
func (p Period) Location() (*time.Location, error) {
	if p.TimeZone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("report period: time zone %q: %w", p.TimeZone, err)
	}
	return loc, nil
}

// zone names the period's time zone for readers.
func (p Period) zone() string {
	if p.TimeZone == "" {
		return "UTC"
	}
	return p.TimeZone
}

// In returns the period with its boundaries shown in its time zone (the same instants).
func (p Period) In() (Period, error) {
	loc, err := p.Location()
	if err != nil {
		return p, err
	}
	return Period{From: p.From.In(loc), To: p.To.In(loc), TimeZone: p.TimeZone}, nil
}

// ParseBoundary reads a period boundary in loc: a year ("2026": its first day), a month ("2026-03":
// its first day) or a date ("2026-03-29"), each at midnight in loc, or an RFC 3339 time (which names
// its own offset). A period from "2026" to "2027" in Europe/Copenhagen is the Danish calendar year:
// 2025-12-31T23:00:00Z to 2026-12-31T23:00:00Z.
func ParseBoundary(s string, loc *time.Location) (time.Time, error) {
	for _, layout := range []string{"2006", "2006-01", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want YYYY, YYYY-MM, YYYY-MM-DD or an RFC 3339 time", s)
	}
	return t.In(loc), nil
}

// Contains reports whether t is in the period.
func (p Period) Contains(t time.Time) bool { return !t.Before(p.From) && t.Before(p.To) }

// Validate says what is wrong with the period, if anything.
func (p Period) Validate() error {
	if p.From.IsZero() || p.To.IsZero() {
		return errors.New("report period: both from and to are required")
	}
	if !p.From.Before(p.To) {
		return fmt.Errorf("report period: from (%s) must be before to (%s)", p.From.Format(time.RFC3339), p.To.Format(time.RFC3339))
	}
	_, err := p.Location()
	return err
}

// Checkpoint is the signed checkpoint a report was computed over.
type Checkpoint struct {
	Origin   string `json:"origin"`
	TreeSize uint64 `json:"tree_size"`
	// RootHash is the tree's root, base64 as in the checkpoint body.
	RootHash string `json:"root_hash"`
	// Note is the whole signed note (C2SP tlog-checkpoint), so the signature can be checked.
	Note string `json:"signed_note"`
}

// Report is one data-responsibility report.
type Report struct {
	Format     string     `json:"format"`
	Period     Period     `json:"period"`
	Checkpoint Checkpoint `json:"checkpoint"`
	Figures    Figures    `json:"figures"`
	// NotCovered lists what the report cannot say because the log does not record it.
	NotCovered []Gap `json:"not_covered"`
	// Labels name the agencies, authorities and journeys for readers (from the policies at the time
	// the report was made). They are not figures: verification does not compare them.
	Labels *Labels `json:"labels,omitempty"`
}

// Gap is one figure the report leaves out, and why.
type Gap struct {
	Figure string `json:"figure"`
	Why    string `json:"why"`
}

// NotCovered is what the report cannot count from the access log. Counting it from the broker's other
// state (the cases, consents and questions buckets) would give figures nobody can recompute from the
// signed log, so it is left out rather than mixed in.
func NotCovered() []Gap {
	return []Gap{
		{"covert accesses revealed early before the broker logged early reveals", "a case that closed or moved on before the broker wrote ACCESS_KIND_COVERT_REVEALED records showed its covert accesses without a record of it; such an access is counted as revealed in the period its hidden_until falls in"},
		{"consents cut short by a lower policy maximum", "a consent that lasts longer than its step's current maximum stops counting when the policy changes; that follows from the policy in force, not from the log, so it is counted as run out only when its own expiry passes (the refusals it causes are counted under refusals by reason, CONSENT_EXPIRED)"},
		{"consents and questions from before the broker logged them", "consents given and questions asked before they were written to the access log are in the consents and questions buckets only: a later withdrawal or answer of one is counted, its expiry and its time to answer are not"},
	}
}

// Labels are display names.
type Labels struct {
	Agencies    map[string]Text `json:"agencies,omitempty"`
	Authorities map[string]Text `json:"authorities,omitempty"`
	Journeys    map[string]Text `json:"journeys,omitempty"`
}

// Text is a name in English and Danish.
type Text struct {
	EN string `json:"en"`
	DA string `json:"da,omitempty"`
}

// In returns the text in lang, English when there is no Danish.
func (t Text) In(lang string) string {
	if lang == "da" && t.DA != "" {
		return t.DA
	}
	return t.EN
}

// Figures are the counts of a report.
type Figures struct {
	// Leaves is how many log records were read (the checkpoint's tree size); InPeriod how many of
	// them were decided within the period.
	Leaves   uint64 `json:"leaves"`
	InPeriod int64  `json:"in_period"`
	// Rows are the caseworker accesses per agency and journey, sorted by agency then journey.
	Rows []Row `json:"rows"`
	// Authorities are the data holders' side, sorted by authority.
	Authorities []AuthorityRow `json:"authorities"`
	// CitizenSelf counts citizens looking at their own data ("My data").
	CitizenSelf Decisions `json:"citizen_self"`
	// AuditorReads counts auditors listing a citizen's access records.
	AuditorReads int64 `json:"auditor_reads"`
	// MedianSecondsToAnswer is the median (of an even count, the later middle) time from question to
	// answer over every answer in the period whose question is in the log (0 when none).
	MedianSecondsToAnswer int64 `json:"median_seconds_to_answer"`
	// BreakGlassReviews counts auditors' closed reviews of emergency accesses in the period, by
	// aperture.audit.v1.BreakGlassOutcome without the BREAK_GLASS_OUTCOME_ prefix. A review record
	// names the auditor, not the agency that broke glass, so reviews are counted in total only.
	BreakGlassReviews map[string]int64 `json:"break_glass_reviews,omitempty"`
}

// Decisions counts released and refused decisions.
type Decisions struct {
	Released int64 `json:"released"`
	Refused  int64 `json:"refused"`
}

// Row is one agency's accesses in one journey.
type Row struct {
	Agency  string `json:"agency"`
	Journey string `json:"journey"`
	Decisions
	// RefusedBy counts refusals by aperture.audit.v1.RefusalReason, without the REFUSAL_REASON_ prefix
	// (UNSPECIFIED for records written before reasons were recorded).
	RefusedBy map[string]int64 `json:"refused_by,omitempty"`
	// FieldsDisclosed and FactsDisclosed are field paths and derived facts released, summed over
	// releases; Disclosed counts them per "authority.dataset:field" and "authority.dataset:fact()".
	FieldsDisclosed int64            `json:"fields_disclosed"`
	FactsDisclosed  int64            `json:"facts_disclosed"`
	Disclosed       map[string]int64 `json:"disclosed,omitempty"`
	// CaseReads counts reads of a case (its state, no authority data).
	CaseReads int64 `json:"case_reads"`
	// Covert counts the accesses in the period hidden from the citizen for a while: releases,
	// refusals, and the case reads and register check made while the case was at a covert step. Every
	// hidden record (made at any time) is counted once when it is shown:
	// CovertRevealedEarly when its case closed or reached the step that tells the citizen, within the
	// period and before its hidden_until (the log's ACCESS_KIND_COVERT_REVEALED record of that change,
	// naming its case and step); otherwise CovertRevealed when its hidden_until — the latest time the
	// log commits to showing it — falls in the period.
	Covert              int64 `json:"covert"`
	CovertRevealed      int64 `json:"covert_revealed"`
	CovertRevealedEarly int64 `json:"covert_revealed_early"`
	// OverSharing counts releases where the authority answered more than the mask (stripped, logged).
	OverSharing int64 `json:"over_sharing"`
	// BreakGlass counts emergency releases outside the case's current step (also in Released).
	BreakGlass int64 `json:"break_glass"`
	// ConsentsGranted and ConsentsRevoked count consents citizens gave and withdrew in the period to the
	// agency's steps of the journey. ConsentsExpired counts given consents (at any time) that ran out
	// in the period: neither withdrawn nor replaced by a new consent to the same step before their
	// expiry, which is no later than the last record of the log (a consent the log cannot yet say
	// anything more about is not counted as run out).
	ConsentsGranted int64 `json:"consents_granted"`
	ConsentsRevoked int64 `json:"consents_revoked"`
	ConsentsExpired int64 `json:"consents_expired"`
	// QuestionsAsked counts citizens' questions in the period about the agency's accesses in the
	// journey; QuestionsAnswered the agency's answers in the period. MedianSecondsToAnswer is the median
	// (of an even count, the later middle) time from question to answer of those answers whose question
	// is in the log (0 when none).
	QuestionsAsked        int64 `json:"questions_asked"`
	QuestionsAnswered     int64 `json:"questions_answered"`
	MedianSecondsToAnswer int64 `json:"median_seconds_to_answer"`
}

// AuthorityRow is one authority's side.
type AuthorityRow struct {
	Authority string `json:"authority"`
	// Released counts releases of its data (to caseworkers and to citizens themselves).
	Released int64 `json:"released"`
	// OverSharing counts its answers that held fields beyond the mask; Stripped counts those fields per
	// "dataset:field".
	OverSharing int64            `json:"over_sharing"`
	Stripped    map[string]int64 `json:"stripped,omitempty"`
	// CorrectionsRequested counts citizens' requests to correct its data made in the period;
	// CorrectionsDecided its decisions in the period, by aperture.audit.v1.CorrectionOutcome without the
	// CORRECTION_OUTCOME_ prefix. MedianSecondsToDecide is the median (of an even count, the later middle) time from request to decision of
	// the decisions in the period whose request is in the log (0 when none).
	CorrectionsRequested  int64            `json:"corrections_requested"`
	CorrectionsDecided    map[string]int64 `json:"corrections_decided,omitempty"`
	MedianSecondsToDecide int64            `json:"median_seconds_to_decide"`
}

// Builder adds up log records. Add the leaves in log order, then call Figures.
type Builder struct {
	period Period
	leaves uint64
	in     int64
	rows   map[[2]string]*Row
	auths  map[string]*AuthorityRow
	self   Decisions
	audits int64
	review map[string]int64
	// requested is when each correction request was logged (any time before), by request id;
	// toDecide the request-to-decision times of decisions in the period, per authority.
	requested map[string]time.Time
	toDecide  map[string][]time.Duration
	// granted is the latest consent given to each step, by pseudonym, journey and step, until it is
	// withdrawn or replaced; last is the latest record time read (how far the log speaks).
	granted map[[3]string]grant
	expired map[[2]string]int64
	last    time.Time
	// asked is when each question was logged (any time before), by question id; toAnswer the
	// question-to-answer times of answers in the period, per agency and journey.
	asked    map[string]time.Time
	toAnswer map[[2]string][]time.Duration
	// hidden are the covert accesses not revealed early so far whose hidden_until is not before the
	// period, by case and step: an early reveal (ACCESS_KIND_COVERT_REVEALED) names the case and step
	// whose accesses it shows.
	hidden map[[2]string][]covert
}

// covert is a covert access as the log tells it.
type covert struct {
	row   [2]string
	until time.Time
}

// grant is a consent given, as the log tells it.
type grant struct {
	row     [2]string
	expires time.Time
}

// NewBuilder starts the figures of period.
func NewBuilder(p Period) (*Builder, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Builder{period: p, rows: map[[2]string]*Row{}, auths: map[string]*AuthorityRow{},
		requested: map[string]time.Time{}, toDecide: map[string][]time.Duration{},
		granted: map[[3]string]grant{}, expired: map[[2]string]int64{},
		asked: map[string]time.Time{}, toAnswer: map[[2]string][]time.Duration{}, hidden: map[[2]string][]covert{}}, nil
}

// Add counts one leaf: the exact bytes of one AccessRecord. A leaf that does not decode is an error
// (the log's leaves are the broker's records; a recomputation must not skip any).
func (b *Builder) Add(leaf []byte) error {
	var rec auditv1.AccessRecord
	if err := proto.Unmarshal(leaf, &rec); err != nil {
		return fmt.Errorf("leaf %d does not decode as an access record: %w", b.leaves, err)
	}
	b.leaves++
	b.AddRecord(&rec)
	return nil
}

// AddRecord counts one decoded record.
func (b *Builder) AddRecord(rec *auditv1.AccessRecord) {
	in := rec.GetTime() != nil && b.period.Contains(rec.GetTime().AsTime())
	if in {
		b.in++
	}
	if t := rec.GetTime(); t != nil && t.AsTime().After(b.last) {
		b.last = t.AsTime()
	}
	released := rec.GetDecision() == auditv1.Decision_DECISION_RELEASED
	switch rec.GetKind() {
	case auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED, auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED:
		b.consent(rec, in)
		return
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED:
		if id := rec.GetQuestion().GetQuestionId(); id != "" && rec.GetTime() != nil {
			b.asked[id] = rec.GetTime().AsTime()
		}
		if in {
			b.row(rec.GetAgency(), rec.GetJourney()).QuestionsAsked++
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED:
		if !in {
			return
		}
		k := [2]string{rec.GetAgency(), rec.GetJourney()}
		b.row(k[0], k[1]).QuestionsAnswered++
		if at, ok := b.asked[rec.GetQuestion().GetQuestionId()]; ok {
			b.toAnswer[k] = append(b.toAnswer[k], rec.GetTime().AsTime().Sub(at))
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF:
		if !in {
			return
		}
		if released {
			b.self.Released++
			b.auth(rec.GetAuthority()).Released++
		} else {
			b.self.Refused++
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ:
		if in {
			b.audits++
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED:
		if id := rec.GetCorrection().GetRequestId(); id != "" && rec.GetTime() != nil {
			b.requested[id] = rec.GetTime().AsTime()
		}
		if in {
			b.auth(rec.GetAuthority()).CorrectionsRequested++
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED:
		if !in {
			return
		}
		a := b.auth(rec.GetAuthority())
		if a.CorrectionsDecided == nil {
			a.CorrectionsDecided = map[string]int64{}
		}
		a.CorrectionsDecided[strings.TrimPrefix(rec.GetCorrection().GetOutcome().String(), "CORRECTION_OUTCOME_")]++
		if at, ok := b.requested[rec.GetCorrection().GetRequestId()]; ok {
			b.toDecide[a.Authority] = append(b.toDecide[a.Authority], rec.GetTime().AsTime().Sub(at))
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_DELEGATE, auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK:
		// A citizen's delegate looking on the citizen's behalf, or the broker reading a parent's
		// custody for them: no agency, no release to an agency.
		return
	case auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW:
		if in {
			if b.review == nil {
				b.review = map[string]int64{}
			}
			b.review[strings.TrimPrefix(rec.GetBreakGlass().GetOutcome().String(), "BREAK_GLASS_OUTCOME_")]++
		}
		return
	case auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED:
		b.revealEarly(rec, in)
		return
	}
	if h := rec.GetHiddenUntil(); h != nil && !h.AsTime().Before(b.period.From) {
		k := [2]string{rec.GetCaseId(), rec.GetStep()}
		b.hidden[k] = append(b.hidden[k], covert{row: [2]string{rec.GetAgency(), rec.GetJourney()}, until: h.AsTime()})
	}
	if !in {
		return
	}
	r := b.row(rec.GetAgency(), rec.GetJourney())
	if rec.GetHiddenUntil() != nil {
		// Every access kept from the citizen for a while, case reads included: what the revealed
		// counts later show.
		r.Covert++
	}
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ {
		r.CaseReads++
		return
	}
	if !released {
		r.Refused++
		reason := strings.TrimPrefix(rec.GetRefusalReason().String(), "REFUSAL_REASON_")
		if r.RefusedBy == nil {
			r.RefusedBy = map[string]int64{}
		}
		r.RefusedBy[reason]++
		return
	}
	r.Released++
	if rec.GetBreakGlass() != nil {
		r.BreakGlass++
	}
	set := rec.GetAuthority() + "." + rec.GetDataset()
	if len(rec.GetFields())+len(rec.GetDerived()) > 0 && r.Disclosed == nil {
		r.Disclosed = map[string]int64{}
	}
	for _, f := range rec.GetFields() {
		r.FieldsDisclosed++
		r.Disclosed[set+":"+f]++
	}
	for _, f := range rec.GetDerived() {
		r.FactsDisclosed++
		r.Disclosed[set+":"+f+"()"]++
	}
	a := b.auth(rec.GetAuthority())
	a.Released++
	if len(rec.GetViolations()) > 0 {
		r.OverSharing++
		a.OverSharing++
		if a.Stripped == nil {
			a.Stripped = map[string]int64{}
		}
		for _, v := range rec.GetViolations() {
			a.Stripped[rec.GetDataset()+":"+v]++
		}
	}
}

// revealEarly counts the covert accesses an early reveal shows: those of its case and step (logged
// before it) still inside their hidden_until at its time, each in its own agency's row, when the reveal
// is in the period. They are no longer counted when their hidden_until passes. A second reveal of the
// same step (a transition retried after a conflict) finds none left.
func (b *Builder) revealEarly(rec *auditv1.AccessRecord, in bool) {
	k := [2]string{rec.GetCaseId(), rec.GetStep()}
	at := rec.GetTime().AsTime()
	kept := b.hidden[k][:0]
	for _, c := range b.hidden[k] {
		if !c.until.After(at) {
			kept = append(kept, c)
			continue
		}
		if in {
			b.row(c.row[0], c.row[1]).CovertRevealedEarly++
		}
	}
	if len(kept) == 0 {
		delete(b.hidden, k)
		return
	}
	b.hidden[k] = kept
}

// consent counts a consent given or withdrawn, and the run-out of the consent it ends: the latest one
// given to the same step, when its expiry came first.
func (b *Builder) consent(rec *auditv1.AccessRecord, in bool) {
	k := [2]string{rec.GetAgency(), rec.GetJourney()}
	step := [3]string{rec.GetCitizenPseudonym(), rec.GetJourney(), rec.GetStep()}
	at := rec.GetTime().AsTime()
	if prev, ok := b.granted[step]; ok {
		if !prev.expires.After(at) && b.period.Contains(prev.expires) {
			b.expired[prev.row]++
		}
		delete(b.granted, step)
	}
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED {
		if exp := rec.GetConsent().GetExpiresAt(); exp != nil && rec.GetTime() != nil {
			b.granted[step] = grant{row: k, expires: exp.AsTime()}
		}
		if in {
			b.row(k[0], k[1]).ConsentsGranted++
		}
		return
	}
	if in {
		b.row(k[0], k[1]).ConsentsRevoked++
	}
}

func (b *Builder) row(agency, journey string) *Row {
	k := [2]string{agency, journey}
	r, ok := b.rows[k]
	if !ok {
		r = &Row{Agency: agency, Journey: journey}
		b.rows[k] = r
	}
	return r
}

func (b *Builder) auth(id string) *AuthorityRow {
	a, ok := b.auths[id]
	if !ok {
		a = &AuthorityRow{Authority: id}
		b.auths[id] = a
	}
	return a
}

// Figures returns the counts so far, rows sorted.
func (b *Builder) Figures() Figures {
	f := Figures{Leaves: b.leaves, InPeriod: b.in, CitizenSelf: b.self, AuditorReads: b.audits,
		BreakGlassReviews: maps.Clone(b.review), Rows: []Row{}, Authorities: []AuthorityRow{}}
	// Consents still standing at the end of the log ran out if their expiry is in the period and
	// no later than the log's last record; those ended earlier were counted as they ended.
	expired := maps.Clone(b.expired)
	for _, g := range b.granted {
		if !g.expires.After(b.last) && b.period.Contains(g.expires) {
			expired[g.row]++
		}
	}
	rows := make(map[[2]string]Row, len(b.rows))
	for k, r := range b.rows {
		rows[k] = *r
	}
	// Covert accesses not revealed early are shown when their hidden_until passes.
	for _, cs := range b.hidden {
		for _, c := range cs {
			if !b.period.Contains(c.until) {
				continue
			}
			r, ok := rows[c.row]
			if !ok {
				r = Row{Agency: c.row[0], Journey: c.row[1]}
			}
			r.CovertRevealed++
			rows[c.row] = r
		}
	}
	for k, n := range expired {
		r, ok := rows[k]
		if !ok {
			r = Row{Agency: k[0], Journey: k[1]}
		}
		r.ConsentsExpired = n
		rows[k] = r
	}
	var all []time.Duration
	for _, k := range slices.SortedFunc(maps.Keys(rows), func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	}) {
		r := rows[k]
		r.MedianSecondsToAnswer = median(b.toAnswer[k])
		all = append(all, b.toAnswer[k]...)
		f.Rows = append(f.Rows, r)
	}
	f.MedianSecondsToAnswer = median(all)
	for _, k := range slices.Sorted(maps.Keys(b.auths)) {
		a := *b.auths[k]
		a.MedianSecondsToDecide = median(b.toDecide[k])
		f.Authorities = append(f.Authorities, a)
	}
	return f
}

// median is the median of ds in whole seconds (of an even count, the later middle); 0 for none.
func median(ds []time.Duration) int64 {
	if len(ds) == 0 {
		return 0
	}
	d := slices.Sorted(slices.Values(ds))
	return int64(d[len(d)/2] / time.Second)
}

// Total adds up the rows.
func (f Figures) Total() Row {
	t := Row{RefusedBy: map[string]int64{}}
	for _, r := range f.Rows {
		t.Released += r.Released
		t.Refused += r.Refused
		for k, n := range r.RefusedBy {
			t.RefusedBy[k] += n
		}
		t.FieldsDisclosed += r.FieldsDisclosed
		t.FactsDisclosed += r.FactsDisclosed
		t.CaseReads += r.CaseReads
		t.Covert += r.Covert
		t.CovertRevealed += r.CovertRevealed
		t.CovertRevealedEarly += r.CovertRevealedEarly
		t.OverSharing += r.OverSharing
		t.BreakGlass += r.BreakGlass
		t.ConsentsGranted += r.ConsentsGranted
		t.ConsentsRevoked += r.ConsentsRevoked
		t.ConsentsExpired += r.ConsentsExpired
		t.QuestionsAsked += r.QuestionsAsked
		t.QuestionsAnswered += r.QuestionsAnswered
	}
	return t
}
