package portal

import (
	"errors"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/grpc/codes"
)

// ---- My cases ----

type casesPage struct {
	Cases []caseItem
	Next  string
}

type caseItem struct {
	ID, JourneyID, Journey string
	Open                   bool
	Current, Agency        string
	Opened, Updated        time.Time
	OpenedBy               string
	CloseReason            string
	// Proactive is set when an authority's life event started the case: the citizen fills in nothing.
	Proactive   *proactiveItem
	Steps       []caseStepItem
	Done, Total int
}

// proactiveItem is the life event that started a case, as the citizen reads it.
type proactiveItem struct {
	Event, Authority string
	On               time.Time
}

type caseStepItem struct {
	JourneyID, StepID string
	Number            int32
	Title, Agency     string
	Status            string // done, current, pending, skipped
	Started, Finished time.Time
	ConsentRequired   bool
	ConsentGiven      bool
}

func (v *view) caseItem(c *citizenv1.Case) caseItem {
	it := caseItem{
		ID:          c.GetId(),
		JourneyID:   c.GetJourney().GetId(),
		Journey:     v.Tx(c.GetJourney().GetTitle()),
		Open:        c.GetStatus() == citizenv1.CaseStatus_CASE_STATUS_OPEN,
		Opened:      v.TS(c.GetOpenedAt()),
		Updated:     v.TS(c.GetUpdatedAt()),
		CloseReason: c.GetCloseReason(),
		Total:       len(c.GetSteps()),
	}
	if c.GetOpenedBy() != nil {
		it.OpenedBy = v.Party(c.GetOpenedBy())
	}
	if p := c.GetProactive(); p != nil {
		it.Proactive = &proactiveItem{Event: v.Tx(p.GetEvent()), Authority: v.Party(p.GetAuthority()), On: v.TS(p.GetOccurredAt())}
	}
	if it.Journey == "" {
		it.Journey = it.JourneyID
	}
	if c.GetCurrentStep() != nil {
		it.Current = upperFirst(v.Step(c.GetCurrentStep()))
		it.Agency = v.Party(c.GetCurrentAgency())
	}
	for _, s := range c.GetSteps() {
		si := caseStepItem{
			JourneyID:       it.JourneyID,
			StepID:          s.GetStep().GetId(),
			Number:          s.GetStep().GetNumber(),
			Title:           v.Tx(s.GetStep().GetTitle()),
			Agency:          v.Party(s.GetAgency()),
			Started:         v.TS(s.GetStartedAt()),
			Finished:        v.TS(s.GetCompletedAt()),
			ConsentRequired: s.GetConsentRequired(),
			ConsentGiven:    s.GetConsentGiven(),
		}
		switch s.GetStatus() {
		case citizenv1.StepStatus_STEP_STATUS_COMPLETED:
			si.Status = "done"
			it.Done++
		case citizenv1.StepStatus_STEP_STATUS_CURRENT:
			si.Status = "current"
		case citizenv1.StepStatus_STEP_STATUS_SKIPPED:
			si.Status = "skipped"
		default:
			si.Status = "pending"
		}
		it.Steps = append(it.Steps, si)
	}
	return it
}

func (p *Portal) cases(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "cases", v.T("cases.title")
	if r.URL.Query().Get("done") == "acting" && v.ActingFor != "" {
		v.Flash = v.T("flash.acting")
	}
	res, err := p.cfg.Citizen.ListCases(v.ctx(r), &citizenv1.ListCasesRequest{PageSize: 20, PageToken: r.URL.Query().Get("page"), OnBehalfOf: v.ActingFor})
	if p.actingEnded(w, r, v, err) {
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &casesPage{}
	for _, c := range res.GetCases() {
		page.Cases = append(page.Cases, v.caseItem(c))
	}
	if t := res.GetNextPageToken(); t != "" {
		page.Next = "/cases?" + url.Values{"page": {t}}.Encode()
	}
	v.Data = page
	p.render(w, r, v, http.StatusOK, "cases")
}

func (p *Portal) caseDetail(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav = "cases"
	res, err := p.cfg.Citizen.GetCase(v.ctx(r), &citizenv1.GetCaseRequest{CaseId: r.PathValue("id"), OnBehalfOf: v.ActingFor})
	if isCode(err, codes.PermissionDenied) && p.actingEnded(w, r, v, err) {
		return
	}
	if isCode(err, codes.InvalidArgument) { // a malformed id in the address names no case
		p.notFound(w, r, v)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	it := v.caseItem(res.GetCase())
	v.Title = it.Journey
	v.Data = it
	p.render(w, r, v, http.StatusOK, "case")
}

// ---- Journeys and data path ----

type journeyItem struct {
	ID, Title, Description string
	Steps                  int32
}

type journeyPage struct {
	ID, Title, Description string
	Diagram                template.HTML
	Steps                  []pathStep
	PolicyVersion          string
}

type pathStep struct {
	JourneyID, StepID    string
	Number               int32
	Title, Agency, Role  string
	Purpose, Law         string
	Releases             []pathRelease
	ConsentRequired      bool
	DefaultDays, MaxDays int32
	CovertReason         string
	CovertDays           int32
	// Optional: the citizen may switch the step off (OptionalWhy says what that means); SwitchedOff:
	// they have, or their choice cannot be verified.
	Optional, SwitchedOff bool
	OptionalWhy           string
	// SwitchedOffBy is which switch turned it off: "step", "journey", "all" or "unverified".
	SwitchedOffBy string
}

type pathRelease struct {
	AuthorityID, Authority, Dataset string
	Facts, Fields                   []string
}

// switchedOffBy names the switch that turned a step off, for the data path's wording.
var switchedOffBy = map[citizenv1.SwitchScope]string{
	citizenv1.SwitchScope_SWITCH_SCOPE_STEP:         "step",
	citizenv1.SwitchScope_SWITCH_SCOPE_JOURNEY:      "journey",
	citizenv1.SwitchScope_SWITCH_SCOPE_ALL_JOURNEYS: "all",
	citizenv1.SwitchScope_SWITCH_SCOPE_UNVERIFIED:   "unverified",
}

func (v *view) pathStep(journeyID string, s *citizenv1.DataPathStep) pathStep {
	ps := pathStep{
		JourneyID:       journeyID,
		StepID:          s.GetStep().GetId(),
		Number:          s.GetStep().GetNumber(),
		Title:           v.Tx(s.GetStep().GetTitle()),
		Agency:          v.Party(s.GetAgency()),
		Role:            humanField(s.GetRole()),
		Purpose:         v.Tx(s.GetPurpose()),
		Law:             s.GetLegalBasis(),
		ConsentRequired: s.GetConsentRequired(),
		DefaultDays:     s.GetConsentDefaultDays(),
		MaxDays:         s.GetConsentMaxDays(),
		CovertReason:    v.Tx(s.GetCovertReason()),
		CovertDays:      s.GetCovertMaxDays(),
		Optional:        s.GetOptional(),
		SwitchedOff:     s.GetSwitchedOff(),
		OptionalWhy:     v.Tx(s.GetOptionalWhy()),
		SwitchedOffBy:   switchedOffBy[s.GetSwitchedOffBy()],
	}
	if ps.Title == "" {
		ps.Title = ps.StepID
	}
	for _, rel := range s.GetReleases() {
		auth, ds := rel.GetAuthority().GetId(), rel.GetDataset()
		pr := pathRelease{AuthorityID: auth, Authority: v.Party(rel.GetAuthority()), Dataset: v.DatasetName(auth, ds)}
		for _, f := range rel.GetFacts() {
			d := v.Tx(f.GetDescription())
			if d == "" {
				d = humanField(f.GetName())
			}
			pr.Facts = append(pr.Facts, d)
		}
		for _, f := range rel.GetFields() {
			pr.Fields = append(pr.Fields, v.FieldName(auth, ds, f))
		}
		ps.Releases = append(ps.Releases, pr)
	}
	return ps
}

func (p *Portal) journeys(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "journeys", v.T("journeys.title")
	res, err := p.cfg.Citizen.ListJourneys(v.ctx(r), &citizenv1.ListJourneysRequest{})
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	var items []journeyItem
	for _, j := range res.GetJourneys() {
		items = append(items, journeyItem{
			ID: j.GetJourney().GetId(), Title: v.Tx(j.GetJourney().GetTitle()),
			Description: v.Tx(j.GetDescription()), Steps: j.GetSteps(),
		})
	}
	v.Data = items
	p.render(w, r, v, http.StatusOK, "journeys")
}

func (p *Portal) journey(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav = "journeys"
	res, err := p.cfg.Citizen.GetDataPath(v.ctx(r), &citizenv1.GetDataPathRequest{Journey: r.PathValue("id")})
	if isCode(err, codes.InvalidArgument) {
		p.notFound(w, r, v)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &journeyPage{
		ID:            res.GetJourney().GetId(),
		Title:         v.Tx(res.GetJourney().GetTitle()),
		Description:   v.Tx(res.GetDescription()),
		PolicyVersion: res.GetPolicyVersion(),
	}
	for _, s := range res.GetSteps() {
		page.Steps = append(page.Steps, v.pathStep(page.ID, s))
	}
	page.Diagram = dataPathSVG(v, page)
	v.Title, v.Data = page.Title, page
	p.render(w, r, v, http.StatusOK, "journey")
}

// ---- Consents ----

type consentsPage struct {
	// Listed: the citizen's consents were read (always for their own; on someone's behalf only when
	// the power of attorney lets them see consents).
	Listed   bool
	Consents []consentItem
	// Steps that ask for consent, to preview and give: all for one's own; on someone's behalf only
	// when the power of attorney lets them give consent, and only of the journeys it names.
	Steps []consentStepItem
}

type consentItem struct {
	JourneyID, StepID, Journey, Step, Agency string
	Granted, Expires, Revoked                time.Time
	Valid                                    bool
	State                                    string // valid, expired, revoked
}

type consentStepItem struct {
	JourneyID, StepID, Journey, Step, Agency string
	Given                                    bool
}

func (v *view) consentItem(c *citizenv1.Consent) consentItem {
	it := consentItem{
		JourneyID: c.GetJourney().GetId(), StepID: c.GetStep().GetId(),
		Journey: v.Tx(c.GetJourney().GetTitle()), Step: v.Step(c.GetStep()), Agency: v.Party(c.GetAgency()),
		Granted: v.TS(c.GetGrantedAt()), Expires: v.TS(c.GetExpiresAt()), Revoked: v.TS(c.GetRevokedAt()),
		Valid: c.GetValid(),
	}
	switch {
	case it.Valid:
		it.State = "valid"
	case !it.Revoked.IsZero():
		it.State = "revoked"
	default:
		it.State = "expired"
	}
	return it
}

func (p *Portal) consents(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "consents", v.T("consents.title")
	if r.URL.Query().Get("done") == "revoked" {
		v.Flash = v.T("flash.revoked")
	}
	if r.URL.Query().Get("done") == "acting" && v.ActingFor != "" {
		v.Flash = v.T("flash.acting")
	}
	cat, err := p.catalog(r, v)
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &consentsPage{Listed: v.ActingFor == "" || v.May["consents"]}
	res := &citizenv1.ListConsentsResponse{}
	if page.Listed {
		res, err = p.cfg.Citizen.ListConsents(v.ctx(r), &citizenv1.ListConsentsRequest{OnBehalfOf: v.ActingFor})
		if p.actingEnded(w, r, v, err) {
			return
		}
		if err != nil {
			p.fail(w, r, v, err)
			return
		}
	}
	valid := map[[2]string]bool{}
	for _, c := range res.GetConsents() {
		it := v.consentItem(c)
		page.Consents = append(page.Consents, it)
		if it.Valid {
			valid[[2]string{it.JourneyID, it.StepID}] = true
		}
	}
	for _, cs := range cat.consentable {
		j, s := cs.Journey.GetId(), cs.Step.GetStep().GetId()
		if v.ActingFor != "" && (!v.May["grant"] || !v.coversJourney(j)) {
			continue
		}
		page.Steps = append(page.Steps, consentStepItem{
			JourneyID: j, StepID: s, Journey: v.Tx(cs.Journey.GetTitle()), Step: v.Step(cs.Step.GetStep()),
			Agency: v.Party(cs.Step.GetAgency()), Given: valid[[2]string{j, s}],
		})
	}
	v.Data = page
	p.render(w, r, v, http.StatusOK, "consents")
}

type previewPage struct {
	JourneyID, StepID, Journey string
	Step                       pathStep
	Expires                    time.Time
	Current                    *consentItem
	Days                       string
	DaysError                  string
}

func (p *Portal) consentPreview(w http.ResponseWriter, r *http.Request, v *view) {
	switch r.URL.Query().Get("done") {
	case "granted":
		v.Flash = v.TA("flash.granted")
	case "revoked":
		v.Flash = v.T("flash.revoked")
	}
	days := strings.TrimSpace(r.URL.Query().Get("days"))
	n, ok := parseDays(days)
	if !ok {
		p.preview(w, r, v, 0, days, v.T("consent.days.invalid"))
		return
	}
	p.preview(w, r, v, n, days, "")
}

// preview renders the consent preview for days (0: the policy's default), with a form error if any.
func (p *Portal) preview(w http.ResponseWriter, r *http.Request, v *view, days int32, asked, formErr string) {
	v.Nav = "consents"
	j, s := r.PathValue("journey"), r.PathValue("step")
	res, err := p.cfg.Citizen.PreviewConsent(v.ctx(r), &citizenv1.PreviewConsentRequest{Journey: j, Step: s, Days: days, OnBehalfOf: v.ActingFor})
	if isCode(err, codes.InvalidArgument) && days != 0 {
		// The days asked for are out of range: show the default, and say so.
		formErr = daysTooMany
		res, err = p.cfg.Citizen.PreviewConsent(v.ctx(r), &citizenv1.PreviewConsentRequest{Journey: j, Step: s, OnBehalfOf: v.ActingFor})
	}
	// The power of attorney was found active just now (withActing): a NotFound here is the step's.
	if isCode(err, codes.PermissionDenied) && p.actingEnded(w, r, v, err) {
		return
	}
	if isCode(err, codes.InvalidArgument) {
		p.notFound(w, r, v)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &previewPage{
		JourneyID: j, StepID: s,
		Step:      v.pathStep(j, res.GetStep()),
		Expires:   v.TS(res.GetExpiresAt()),
		Days:      asked,
		DaysError: formErr,
	}
	if page.Days == "" {
		page.Days = strconv.Itoa(int(page.Step.DefaultDays))
	}
	if formErr == daysTooMany {
		page.DaysError = v.T("consent.days.range", page.Step.MaxDays)
	}
	if cat, err := p.catalog(r, v); err == nil {
		if dp, ok := cat.paths[j]; ok {
			page.Journey = v.Tx(dp.GetJourney().GetTitle())
		}
	}
	if page.Journey == "" {
		page.Journey = j
	}
	if c := res.GetCurrent(); c != nil {
		ci := v.consentItem(c)
		page.Current = &ci
	}
	v.Title, v.Data = v.T("preview.title", page.Step.Title), page
	code := http.StatusOK
	if formErr != "" {
		code = http.StatusBadRequest
	}
	p.render(w, r, v, code, "consent")
}

// parseDays reads the days field: empty is the policy's default (0). Any whole number above zero is
// read (one beyond int32 as the largest int32), so that too many days is answered with the maximum
// rather than called not a number; the API refuses what is above the policy's maximum.
func parseDays(s string) (int32, bool) {
	if s == "" {
		return 0, true
	}
	if strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if errors.Is(err, strconv.ErrRange) {
		return math.MaxInt32, true
	}
	if err != nil || n < 1 {
		return 0, false
	}
	return int32(n), true
}

// daysTooMany marks the form error "more days than the policy allows", which preview words with the
// step's maximum.
const daysTooMany = "\x00too-many"

func (p *Portal) consentGrant(w http.ResponseWriter, r *http.Request, v *view) {
	j, s := r.PathValue("journey"), r.PathValue("step")
	days := strings.TrimSpace(r.PostFormValue("days"))
	n, ok := parseDays(days)
	if !ok {
		p.preview(w, r, v, 0, days, v.T("consent.days.invalid"))
		return
	}
	_, err := p.cfg.Citizen.GrantConsent(v.ctx(r), &citizenv1.GrantConsentRequest{Journey: j, Step: s, Days: n, OnBehalfOf: v.ActingFor})
	// The power of attorney was found active just now (withActing): a NotFound here is the step's.
	if isCode(err, codes.PermissionDenied) && p.actingEnded(w, r, v, err) {
		return
	}
	if isCode(err, codes.InvalidArgument) {
		p.preview(w, r, v, 0, days, daysTooMany)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	redirect(w, r, "/consents/"+url.PathEscape(j)+"/"+url.PathEscape(s)+"?done=granted")
}

func (p *Portal) consentRevoke(w http.ResponseWriter, r *http.Request, v *view) {
	j, s := r.PathValue("journey"), r.PathValue("step")
	_, err := p.cfg.Citizen.RevokeConsent(v.ctx(r), &citizenv1.RevokeConsentRequest{Journey: j, Step: s, OnBehalfOf: v.ActingFor})
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	if r.PostFormValue("from") == "list" {
		redirect(w, r, "/consents?done=revoked")
		return
	}
	redirect(w, r, "/consents/"+url.PathEscape(j)+"/"+url.PathEscape(s)+"?done=revoked")
}

// ---- My data ----

type dataGroup struct {
	AuthorityID, Authority string
	Datasets               []dataLink
}

type dataLink struct {
	ID, Name string
}

type datasetPage struct {
	AuthorityID, Authority, Dataset string
	Found                           bool
	Record                          []recordNode
	AccessID                        string
	// Correct is the address of the form to flag a field of this dataset as wrong ("" without it).
	Correct string
}

func (p *Portal) myData(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "data", v.T("data.title")
	cat, err := p.catalog(r, v)
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	var groups []dataGroup
	for _, d := range cat.datasets {
		id := d.Authority.GetId()
		if len(groups) == 0 || groups[len(groups)-1].AuthorityID != id {
			groups = append(groups, dataGroup{AuthorityID: id, Authority: v.Party(d.Authority)})
		}
		g := &groups[len(groups)-1]
		g.Datasets = append(g.Datasets, dataLink{ID: d.Dataset, Name: v.DatasetName(id, d.Dataset)})
	}
	v.Data = groups
	p.render(w, r, v, http.StatusOK, "data")
}

func (p *Portal) myDataset(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav = "data"
	a, d := r.PathValue("authority"), r.PathValue("dataset")
	res, err := p.cfg.Citizen.GetMyData(v.ctx(r), &citizenv1.GetMyDataRequest{Authority: a, Dataset: d})
	if isCode(err, codes.InvalidArgument) {
		p.notFound(w, r, v)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &datasetPage{
		AuthorityID: a, Authority: v.Party(res.GetAuthority()), Dataset: v.DatasetName(a, d),
		Found: res.GetFound(), AccessID: res.GetAccessId(),
	}
	if p.cfg.Corrections != nil {
		page.Correct = correctLink(a, d)
	}
	if page.Authority == "" {
		page.Authority = a
	}
	if res.GetFound() {
		page.Record = v.recordNodes(a, d, "", res.GetRecord())
	}
	v.Title, v.Data = v.T("dataset.title", page.Authority), page
	p.render(w, r, v, http.StatusOK, "dataset")
}

// ---- Questions ----

type questionItem struct {
	ID, AccessID, Agency, Message string
	Asked, Answered               time.Time
	Open                          bool
	Answer, AnsweredBy            string
}

type questionForm struct {
	AccessID, Message, Error string
}

var accessIDPattern = regexp.MustCompile(`^acc_[0-9a-z]{26}$`)

func (p *Portal) questions(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "questions", v.T("questions.title")
	if r.URL.Query().Get("done") == "asked" {
		v.Flash = v.T("flash.asked")
	}
	res, err := p.cfg.Citizen.ListQuestions(v.ctx(r), &citizenv1.ListQuestionsRequest{})
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	var items []questionItem
	for _, q := range res.GetQuestions() {
		items = append(items, questionItem{
			ID: q.GetId(), AccessID: q.GetAccessId(), Agency: v.Party(q.GetAgency()), Message: q.GetMessage(),
			Asked: v.TS(q.GetAskedAt()), Answered: v.TS(q.GetAnsweredAt()),
			Open:   q.GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED,
			Answer: q.GetAnswer(), AnsweredBy: q.GetAnsweredBy(),
		})
	}
	v.Data = items
	p.render(w, r, v, http.StatusOK, "questions")
}

func (p *Portal) questionForm(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.URL.Query().Get("access")
	if !accessIDPattern.MatchString(id) {
		p.notFound(w, r, v)
		return
	}
	p.renderQuestion(w, r, v, http.StatusOK, questionForm{AccessID: id})
}

func (p *Portal) renderQuestion(w http.ResponseWriter, r *http.Request, v *view, code int, f questionForm) {
	v.Nav, v.Title = "questions", v.T("ask.title")
	if f.Error != "" {
		v.Title = v.T("form.error.prefix") + " " + v.Title
	}
	v.Data = f
	p.render(w, r, v, code, "ask")
}

func (p *Portal) questionAsk(w http.ResponseWriter, r *http.Request, v *view) {
	f := questionForm{AccessID: r.PostFormValue("access"), Message: strings.TrimSpace(r.PostFormValue("message"))}
	if !accessIDPattern.MatchString(f.AccessID) {
		p.notFound(w, r, v)
		return
	}
	switch n := len([]rune(f.Message)); {
	case n == 0:
		f.Error = v.T("ask.error.empty")
	case n > 2000:
		f.Error = v.T("ask.error.long")
	}
	if f.Error != "" {
		p.renderQuestion(w, r, v, http.StatusBadRequest, f)
		return
	}
	_, err := p.cfg.Citizen.QuestionAccess(v.ctx(r), &citizenv1.QuestionAccessRequest{AccessId: f.AccessID, Message: f.Message})
	if isCode(err, codes.InvalidArgument) {
		f.Error = v.T("ask.error.invalid")
		p.renderQuestion(w, r, v, http.StatusBadRequest, f)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	redirect(w, r, "/questions?done=asked")
}
