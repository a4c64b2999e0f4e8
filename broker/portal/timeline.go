package portal

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// timelinePageSize is how many accesses one timeline page shows.
const timelinePageSize = 20

// periods are the choices of the period filter, as durations back from now.
var periods = []struct {
	Value string
	Key   string
	Back  time.Duration
}{
	{"", "filter.period.any", 0},
	{"7d", "filter.period.7d", 7 * 24 * time.Hour},
	{"30d", "filter.period.30d", 30 * 24 * time.Hour},
	{"1y", "filter.period.1y", 365 * 24 * time.Hour},
}

type option struct {
	Value, Label string
	Selected     bool
}

type timelinePage struct {
	Authorities, Journeys, Periods []option
	Who                            []option // everyone's looks, or only the authorities' (not mine)
	Filtered                       bool
	Paged                          bool
	Entries                        []accessItem
	Next                           string // URL of the next (older) page
	First                          string // URL of the first page with the same filters
	Live                           bool   // whether new accesses are streamed into this page
	Error                          string
}

// accessItem is one access in the words of the timeline.
type accessItem struct {
	ID      string
	Time    time.Time
	Self    bool
	Refused bool
	// Checks are the derived facts, worded as what was checked; OnlyChecks: Items are checks too.
	Checks       []string
	OnlyChecks   bool
	CaseRead     bool   // an agency read my case (which names me), no authority data
	AuditorRead  bool   // an auditor looked at my access log
	Who          string // the agency and caseworker (or the auditor); empty for my own accesses
	Did          string // what Who did, in words: "saw:", "asked for:", "looked at your case:", …
	Items        []string
	Source       string // the authority and dataset the data comes from
	For          string // journey and step
	Purpose      string
	Law          string
	Reason       string
	HiddenUntil  time.Time
	HiddenEarly  bool // shown before HiddenUntil, when the case closed or the citizen was heard
	HiddenReason string
	Violations   []string
	Announce     string // one plain sentence for screen readers when the entry appears live
	// BreakGlass is set for an emergency release outside the case's steps; Review for an auditor's
	// review of one (ReviewOf is the reviewed access, ReviewNote the auditor's note).
	BreakGlass           *breakGlassItem
	Review               bool
	ReviewOf, ReviewNote string
	// Correction is set for the citizen's request to correct data, and the authority's decision.
	Correction bool
	// Delegate is set for what someone the citizen gave power of attorney looked at or did.
	Delegate bool
	// Consent is set for a consent the citizen gave or withdrew; Question for a question the citizen
	// asked about an access, and the agency's answer.
	Consent, Question bool
}

// breakGlassItem is what the citizen is told about an emergency access: the emergency, in the policy's
// words, and the caseworker's own explanation.
type breakGlassItem struct{ Reason, Justification string }

type entryData struct {
	V *view
	A accessItem
}

func (v *view) accessItem(a *citizenv1.Access) accessItem {
	it := accessItem{
		ID:          a.GetId(),
		Time:        v.TS(a.GetTime()),
		Self:        a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF,
		CaseRead:    a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ,
		AuditorRead: a.GetKind() == auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ,
		Refused:     a.GetDecision() == auditv1.Decision_DECISION_REFUSED,
		Purpose:     v.Tx(a.GetPurpose()),
		Law:         a.GetLegalBasis(),
		Reason:      v.refusal(a),
	}
	correction := a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED || a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED
	// A case read that names an authority is the check with the citizen register before a case was
	// opened: no data, only whether the register knows the citizen.
	registerCheck := it.CaseRead && a.GetAuthority().GetId() != ""
	own := ownAction(a.GetKind())
	// An early reveal of a covert step's checks: the agency of the step, and the sentence saying how
	// many and why now (the checks themselves are entries of their own).
	revealed := a.GetKind() == auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED
	switch {
	case a.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE:
		v.delegateEntry(a, &it)
		return it
	case a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK:
		v.custodyEntry(a, &it)
		return it
	case correction:
		v.correctionEntry(a, &it)
	case own != "":
		v.ownEntry(a, own, &it)
	case revealed:
		it.Did = v.T("entry.covert_revealed")
	case registerCheck:
		it.Did = v.T("entry.register_check")
	case it.CaseRead:
		it.Did = v.T("entry.case_read")
	case it.AuditorRead:
		it.Did = v.T("entry.auditor_read")
	case it.Refused:
		it.Did = v.T("entry.asked")
	default:
		it.Did = v.T("entry.saw")
	}
	if !it.Self && !correction && !it.Consent && a.GetKind() != auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED {
		it.Who = v.Party(a.GetAgency())
		if a.GetCaseworker() != "" {
			it.Who += ", " + v.T("entry.caseworker", a.GetCaseworker())
		}
		if it.Who == "" {
			it.Who = v.T("entry.unknown_agency")
			if it.AuditorRead {
				it.Who = v.T("entry.auditor")
			}
		}
	}
	// A fact is a question the authority answered (yes/no, a number), not data the agency saw: worded
	// as what was checked, so a fact that came out false does not read as a statement about the citizen.
	for _, f := range a.GetFacts() {
		d := v.Tx(f.GetDescription())
		if d == "" {
			d = humanField(f.GetName())
		}
		check := lowerFirst(strings.TrimSuffix(d, "."))
		if f.Answer != nil {
			// The answer the agency got, where the policy lets the citizen see it: a check that came
			// out false reads as such ("…: no"), not as a statement about the citizen.
			check = v.T("entry.check.answer", check, v.T(answerKey(f.GetAnswer())))
		}
		it.Checks = append(it.Checks, check)
	}
	auth, ds := a.GetAuthority().GetId(), a.GetDataset()
	for _, f := range a.GetFields() {
		it.Items = append(it.Items, v.FieldName(auth, ds, f))
	}
	if it.Self && !it.Refused && len(it.Items) > 0 {
		// A look at my own data covers the whole record: one line, not every field of it.
		it.Items = []string{v.T("entry.self.whole", v.DatasetName(auth, ds), len(it.Items))}
	}
	switch {
	case own != "":
		// Set by ownEntry: a consent or a question holds no data.
	case revealed:
		it.Items, it.Purpose, it.Law = []string{it.Purpose}, "", ""
	case registerCheck:
		it.Items = []string{v.T("entry.register_check.item", v.Party(a.GetAuthority()))}
		if j := v.Tx(a.GetJourney().GetTitle()); j != "" {
			it.Items = []string{v.T("entry.register_check.item.case", v.Party(a.GetAuthority()), j)}
		}
	case it.CaseRead:
		// No authority data: what the agency saw is the case itself, and in it who the case is about.
		if j := v.Tx(a.GetJourney().GetTitle()); j != "" {
			it.Items = []string{v.T("entry.case_read.item", j)}
		} else {
			it.Items = []string{v.T("entry.case_read.item.any")}
		}
	case it.AuditorRead:
		it.Items = []string{v.T("entry.auditor_read.item")}
	case len(it.Items) == 0 && len(it.Checks) > 0:
		// Only checks: the summary says so.
		it.Did = v.T("entry.checked")
		if it.Refused {
			it.Did = v.T("entry.asked_check")
		}
		it.Items, it.Checks = it.Checks, nil
		it.OnlyChecks = true
	case len(it.Items) == 0:
		it.Items = []string{v.T("entry.whole_record", lowerFirst(v.DatasetName(auth, ds)))}
	}
	if a.GetAuthority() != nil {
		it.Source = v.Party(a.GetAuthority())
		if ds != "" {
			it.Source = v.T("entry.source.dataset", v.DatasetName(auth, ds), it.Source)
		}
	}
	if j := v.Tx(a.GetJourney().GetTitle()); j != "" {
		it.For = j
		if a.GetStep() != nil {
			it.For += ", " + v.Step(a.GetStep())
		}
	}
	if registerCheck {
		// The item names the register and the case: the why is the check itself, not the purpose of
		// the first step it happened before, and there is no data whose source to name.
		it.Source, it.Purpose, it.For = "", v.T("entry.register_check.why"), v.Tx(a.GetJourney().GetTitle())
	}
	if a.GetHiddenUntil() != nil {
		it.HiddenUntil = a.GetHiddenUntil().AsTime()
		// Shown before its date: the case reached the point the policy reveals it at.
		it.HiddenEarly = it.HiddenUntil.After(v.now)
		it.HiddenReason = lowerFirst(v.Tx(a.GetHiddenReason()))
	}
	for _, f := range a.GetViolations() {
		it.Violations = append(it.Violations, v.FieldName(auth, ds, f))
	}
	v.breakGlassItem(a, &it)
	who := it.Who
	if it.Self {
		who = v.T("entry.you")
	}
	switch {
	case own != "" || correction || revealed:
		// Not a look at the citizen's data: the entry's own summary.
		it.Announce = v.T("live.announce.entry", who, it.Did, strings.Join(it.Items, ", "))
	case it.Refused:
		it.Announce = v.T("live.announce.refused", who)
	default:
		it.Announce = v.T("live.announce", who)
	}
	return it
}

func (p *Portal) timeline(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "timeline", v.T("timeline.title")
	q := r.URL.Query()
	req := &citizenv1.ListAccessesRequest{
		Authority:  q.Get("authority"),
		Journey:    q.Get("journey"),
		PageSize:   timelinePageSize,
		PageToken:  q.Get("page"),
		OnBehalfOf: v.ActingFor,
	}
	if q.Get("done") == "acting" && v.ActingFor != "" {
		v.Flash = v.T("flash.acting")
	}
	// who=others leaves out the citizen's own looks at their data.
	req.ExcludeSelf = q.Get("who") == "others"
	period := q.Get("period")
	for _, pr := range periods {
		if pr.Value == period && pr.Back > 0 {
			req.Since = timestamppb.New(v.now.Add(-pr.Back))
		}
	}
	cat, err := p.catalog(r, v)
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &timelinePage{
		Filtered: req.Authority != "" || req.Journey != "" || req.Since != nil || req.ExcludeSelf,
		Paged:    req.PageToken != "",
	}
	page.Authorities = append(page.Authorities, option{Value: "", Label: v.T("filter.authority.any")})
	for _, a := range cat.authorities {
		page.Authorities = append(page.Authorities, option{Value: a.GetId(), Label: v.Party(a), Selected: a.GetId() == req.Authority})
	}
	page.Journeys = append(page.Journeys, option{Value: "", Label: v.T("filter.journey.any")})
	for _, j := range cat.journeys {
		id := j.GetJourney().GetId()
		page.Journeys = append(page.Journeys, option{Value: id, Label: v.Tx(j.GetJourney().GetTitle()), Selected: id == req.Journey})
	}
	for _, pr := range periods {
		page.Periods = append(page.Periods, option{Value: pr.Value, Label: v.T(pr.Key), Selected: pr.Value == period})
	}
	page.Who = []option{
		{Value: "", Label: v.T("filter.who.any"), Selected: !req.ExcludeSelf},
		{Value: "others", Label: v.T("filter.who.others"), Selected: req.ExcludeSelf},
	}
	page.Live = !page.Filtered && !page.Paged && v.ActingFor == "" // the live stream is one's own
	v.Data = page

	res, err := p.cfg.Citizen.ListAccesses(v.ctx(r), req)
	if p.actingEnded(w, r, v, err) {
		return
	}
	if isCode(err, codes.InvalidArgument) {
		page.Error = v.T("timeline.filter_error")
		page.Live = false
		p.render(w, r, v, http.StatusBadRequest, "timeline")
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	for _, a := range res.GetAccesses() {
		page.Entries = append(page.Entries, v.accessItem(a))
	}
	keep := url.Values{}
	for _, k := range []string{"authority", "journey", "period", "who"} {
		if s := q.Get(k); s != "" {
			keep.Set(k, s)
		}
	}
	page.First = "/?" + keep.Encode()
	if t := res.GetNextPageToken(); t != "" {
		keep.Set("page", t)
		page.Next = "/?" + keep.Encode()
	}
	p.render(w, r, v, http.StatusOK, "timeline")
}

// events streams the citizen's new accesses as Server-Sent Events. Each event is named "access",
// has the access id as its id, and carries the timeline entry as HTML (rendered with the same
// template as the page). When the sign-in expires, an event "signed-out" ends the stream.
func (p *Portal) events(w http.ResponseWriter, r *http.Request) {
	token, _, ok := p.cfg.Sessions.Session(r)
	if !ok || token == "" {
		http.Error(w, "signed out", http.StatusUnauthorized)
		return
	}
	v := p.newView(w, r)
	v.token = token
	v.lab = p.labels(r, v)
	stream, err := p.cfg.Citizen.WatchAccesses(v.ctx(r), &citizenv1.WatchAccessesRequest{})
	if err == nil {
		// The API sends its headers once it has subscribed; only then is the page told it is live,
		// so an access logged after the indicator shows is never missed.
		_, err = stream.Header()
	}
	if err != nil {
		p.log.Warn("portal: watch failed", "route", r.Pattern, "code", codeOf(err))
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // the stream lives as long as the page
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "retry: 5000\n: connected\n\n")
	if err := rc.Flush(); err != nil {
		return
	}

	type result struct {
		a   *citizenv1.Access
		err error
	}
	recv := make(chan result)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case recv <- result{m.GetAccess(), err}:
			case <-r.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(25 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			io.WriteString(w, ": still here\n\n")
		case res := <-recv:
			if res.err != nil {
				if isCode(res.err, codes.Unauthenticated) {
					io.WriteString(w, "event: signed-out\ndata: \n\n")
					rc.Flush()
				} else if !errors.Is(res.err, io.EOF) && r.Context().Err() == nil {
					p.log.Warn("portal: watch ended", "route", r.Pattern, "code", codeOf(res.err))
				}
				return
			}
			if res.a == nil {
				continue
			}
			html, err := p.renderPartial("entry", entryData{V: v, A: v.accessItem(res.a)})
			if err != nil {
				p.log.Error("portal: entry template failed", "err", err)
				return
			}
			var b strings.Builder
			b.WriteString("event: access\nid: ")
			b.WriteString(strings.Map(func(r rune) rune {
				if r == '\n' || r == '\r' {
					return -1
				}
				return r
			}, res.a.GetId()))
			b.WriteString("\n")
			for line := range strings.SplitSeq(strings.TrimSpace(html), "\n") {
				b.WriteString("data: ")
				b.WriteString(strings.TrimRight(line, "\r"))
				b.WriteString("\n")
			}
			b.WriteString("\n")
			io.WriteString(w, b.String())
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// refusal words why a is refused, from its machine-readable reason: the broker's own text is English
// for caseworkers and names policy ids, so it is never shown to the citizen.
func (v *view) refusal(a *citizenv1.Access) string {
	if a.GetDecision() != auditv1.Decision_DECISION_REFUSED {
		return ""
	}
	key := "refusal." + strings.TrimPrefix(a.GetRefusalReason().String(), "REFUSAL_REASON_")
	if _, ok := messages[key]; !ok {
		key = "refusal.UNSPECIFIED"
	}
	if strings.Contains(messages[key].en, "%s") {
		subject := a.GetRefusalSubject()
		if subject == "" {
			return v.T("refusal.UNSPECIFIED")
		}
		if a.GetRefusalReason() == auditv1.RefusalReason_REFUSAL_REASON_FACT_NOT_RELEASED {
			for _, f := range a.GetFacts() {
				if f.GetName() == subject && v.Tx(f.GetDescription()) != "" {
					return v.T(key, lowerFirst(strings.TrimSuffix(v.Tx(f.GetDescription()), ".")))
				}
			}
			return v.T(key, humanField(subject))
		}
		return v.T(key, lowerFirst(v.FieldName(a.GetAuthority().GetId(), a.GetDataset(), subject)))
	}
	return v.T(key)
}

// breakGlassItem words an emergency access, or an auditor's review of one.
func (v *view) breakGlassItem(a *citizenv1.Access, it *accessItem) {
	bg := a.GetBreakGlass()
	if bg == nil {
		return
	}
	if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW {
		it.Review, it.ReviewOf, it.ReviewNote = true, bg.GetReviewedAccessId(), bg.GetReviewNote()
		it.Did = v.T("entry.breakglass.review")
		it.Items = []string{v.T("entry.breakglass.review." + strings.TrimPrefix(bg.GetOutcome().String(), "BREAK_GLASS_OUTCOME_"))}
		// Who, what and the outcome are the summary; the API's sentence would say it again.
		it.Source, it.Law, it.Purpose = "", "", ""
		if j := v.Tx(a.GetJourney().GetTitle()); j != "" {
			it.For = j
		}
		return
	}
	it.BreakGlass = &breakGlassItem{Reason: v.Tx(a.GetBreakGlassReason()), Justification: bg.GetJustification()}
}

// answerKey is the i18n key of a fact's yes/no answer.
func answerKey(yes bool) string {
	if yes {
		return "entry.check.yes"
	}
	return "entry.check.no"
}

// ownAction is the i18n key stem of a consent or question record ("consent.granted", …), "" for any
// other kind.
func ownAction(k auditv1.AccessKind) string {
	switch k {
	case auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED:
		return "consent.granted"
	case auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED:
		return "consent.revoked"
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED:
		return "question.asked"
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED:
		return "question.answered"
	}
	return ""
}

// ownEntry words a consent the citizen gave or withdrew ("You gave the Jobcentre consent to: step 2:
// Assess work capacity, until 3 March 2027") and a question about an access and its answer ("You asked
// the Jobcentre: why they used your data"; "The Jobcentre answered your question: …"). None of them
// holds data; the question and the answer themselves are on /questions.
func (v *view) ownEntry(a *citizenv1.Access, action string, it *accessItem) {
	agency := v.Party(a.GetAgency())
	if agency == "" {
		agency = v.T("entry.unknown_agency")
	}
	switch action {
	case "consent.granted", "consent.revoked":
		it.Consent = true
		it.Who, it.Did = v.T("entry.correction.you"), v.T("entry."+action, agency)
		if a.GetDelegate() != nil {
			it.Who, it.Delegate = v.T("entry.delegate"), true
			if a.GetDelegate().GetBasis() == auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY {
				it.Who = v.T("entry.parent")
			}
		}
		step := v.Step(a.GetStep())
		if exp := a.GetConsent().GetExpiresAt(); action == "consent.granted" && exp != nil {
			step = v.T("entry.consent.until", step, v.Day(exp.AsTime()))
		}
		it.Items = []string{step}
	case "question.asked":
		it.Question = true
		it.Who, it.Did = v.T("entry.correction.you"), v.T("entry.question.asked", agency)
		it.Items = []string{v.T("entry.question.item")}
	case "question.answered":
		it.Question = true
		it.Did = v.T("entry.question.answered")
		it.Items = []string{v.T("entry.question.item")}
	}
}
