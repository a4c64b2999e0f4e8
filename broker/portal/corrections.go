package portal

import (
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// ---- Correct my data ----
//
//	GET  /corrections                                       my correction requests, their status and the cases that used the field
//	GET  /corrections/new?authority=&dataset=[&field=]       the form to flag a field as wrong
//	POST /corrections                                       file it (authority, dataset, field, reason, value)

// correctionRoutes registers the pages of correction requests with page (Routes' helper). Without
// Config.Corrections the pages answer "not found".
func (p *Portal) correctionRoutes(page func(string, func(http.ResponseWriter, *http.Request, *view))) {
	page("GET /corrections", p.corrections)
	page("GET /corrections/new", p.correctionForm)
	page("POST /corrections", p.correctionFile)
}

type correctionItem struct {
	ID, Authority, Dataset, Field string
	Reason, Proposed, Decision    string
	State                         string // open, accepted, rejected, unverified
	Requested, Decided            time.Time
	Cases                         []correctionCase
}

type correctionCase struct {
	ID, Journey, Agency string
	Released            time.Time
}

type correctionFormPage struct {
	AuthorityID, DatasetID, Authority, Dataset string
	Fields                                     []correctionField
	Field, Reason, Value, Error, ErrorFor      string
}

type correctionField struct{ Path, Name string }

func (p *Portal) corrections(w http.ResponseWriter, r *http.Request, v *view) {
	if p.cfg.Corrections == nil {
		p.notFound(w, r, v)
		return
	}
	v.Nav, v.Title = "data", v.T("corrections.title")
	if r.URL.Query().Get("done") == "filed" {
		v.Flash = v.T("corrections.flash.filed")
	}
	res, err := p.cfg.Corrections.ListCorrections(v.ctx(r), &citizenv1.ListCorrectionsRequest{})
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	var items []correctionItem
	for _, c := range res.GetCorrections() {
		a := c.GetAuthority().GetId()
		it := correctionItem{
			ID: c.GetId(), Authority: v.Party(c.GetAuthority()), Reason: c.GetReason(), Proposed: c.GetProposedValue(),
			Decision: c.GetDecisionReason(), Requested: v.TS(c.GetRequestedAt()), Decided: v.TS(c.GetDecidedAt()),
			State: strings.ToLower(strings.TrimPrefix(c.GetState().String(), "CORRECTION_STATE_")),
		}
		if c.GetState() != citizenv1.CorrectionState_CORRECTION_STATE_UNVERIFIED {
			it.Dataset, it.Field = v.DatasetName(a, c.GetDatasetId()), v.FieldName(a, c.GetDatasetId(), c.GetFieldPath())
		}
		for _, u := range c.GetCases() {
			it.Cases = append(it.Cases, correctionCase{ID: u.GetCaseId(), Journey: v.Tx(u.GetJourney().GetTitle()),
				Agency: v.Party(u.GetAgency()), Released: v.TS(u.GetReleasedAt())})
		}
		items = append(items, it)
	}
	v.Data = items
	p.render(w, r, v, http.StatusOK, "corrections")
}

// correctionPage fills the form for authority/dataset; false (after answering 404) if the portal
// knows no such dataset.
func (p *Portal) correctionPage(w http.ResponseWriter, r *http.Request, v *view, authority, dataset string) (*correctionFormPage, bool) {
	dl := v.lab[labelKey(authority, dataset)]
	if p.cfg.Corrections == nil || dl == nil {
		p.notFound(w, r, v)
		return nil, false
	}
	page := &correctionFormPage{AuthorityID: authority, DatasetID: dataset, Dataset: v.DatasetName(authority, dataset), Authority: authority}
	if cat, err := p.catalog(r, v); err == nil {
		for _, d := range cat.datasets {
			if d.Authority.GetId() == authority {
				page.Authority = v.Party(d.Authority)
			}
		}
	}
	for _, f := range dl.order {
		if f.GetKind() == citizenv1.FieldKind_FIELD_KIND_RECORD {
			continue
		}
		page.Fields = append(page.Fields, correctionField{Path: f.GetPath(), Name: v.FieldName(authority, dataset, f.GetPath())})
	}
	v.Nav, v.Title = "data", v.T("correct.title", page.Dataset)
	return page, true
}

func (p *Portal) correctionForm(w http.ResponseWriter, r *http.Request, v *view) {
	q := r.URL.Query()
	page, ok := p.correctionPage(w, r, v, q.Get("authority"), q.Get("dataset"))
	if !ok {
		return
	}
	page.Field = q.Get("field")
	v.Data = page
	p.render(w, r, v, http.StatusOK, "correct")
}

func (p *Portal) correctionFile(w http.ResponseWriter, r *http.Request, v *view) {
	page, ok := p.correctionPage(w, r, v, r.PostFormValue("authority"), r.PostFormValue("dataset"))
	if !ok {
		return
	}
	page.Field, page.Reason, page.Value = r.PostFormValue("field"), strings.TrimSpace(r.PostFormValue("reason")), strings.TrimSpace(r.PostFormValue("value"))
	known := false
	for _, f := range page.Fields {
		known = known || f.Path == page.Field
	}
	switch {
	case !known:
		page.Error, page.ErrorFor = v.T("correct.error.field"), "field"
	case page.Reason == "":
		page.Error, page.ErrorFor = v.T("correct.error.reason"), "reason"
	case utf8.RuneCountInString(page.Reason) > 2000:
		page.Error, page.ErrorFor = v.T("correct.error.reason_long"), "reason"
	case utf8.RuneCountInString(page.Value) > 1000:
		page.Error, page.ErrorFor = v.T("correct.error.value_long"), "value"
	}
	if page.Error == "" {
		_, err := p.cfg.Corrections.RequestCorrection(v.ctx(r), &citizenv1.RequestCorrectionRequest{
			Authority: page.AuthorityID, Dataset: page.DatasetID, Field: page.Field, Reason: page.Reason, ProposedValue: page.Value,
		})
		switch {
		case isCode(err, codes.InvalidArgument):
			page.Error, page.ErrorFor = v.T("correct.error.field"), "field"
		case err != nil:
			p.fail(w, r, v, err)
			return
		default:
			redirect(w, r, "/corrections?done=filed")
			return
		}
	}
	v.Data = page
	p.render(w, r, v, http.StatusBadRequest, "correct")
}

// correctLink is the form's address for one dataset.
func correctLink(authority, dataset string) string {
	return "/corrections/new?authority=" + url.QueryEscape(authority) + "&dataset=" + url.QueryEscape(dataset)
}

// correctionEntry words a correction request ("You asked … to correct:") or the authority's decision
// ("… answered your request to correct:") in the timeline; the outcome itself is on /corrections.
func (v *view) correctionEntry(a *citizenv1.Access, it *accessItem) {
	it.Correction = true
	if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED {
		it.Who, it.Did = v.Party(a.GetAgency()), v.T("entry.correction.decided")
		return
	}
	it.Who, it.Did = v.T("entry.correction.you"), v.T("entry.correction.requested", v.Party(a.GetAuthority()))
}
