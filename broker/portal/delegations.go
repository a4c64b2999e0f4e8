package portal

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// ---- Act for someone else (power of attorney) ----
//
//	GET  /delegations                     powers of attorney I gave (revoke) and hold (act for), the grant form
//	POST /delegations                     give one (holder, scope, journey, expires)
//	POST /delegations/{id}/revoke         end one I gave
//	POST /acting                          act for someone (for=<id>) or for myself again (for empty)
//
// While a citizen acts for someone else (a cookie holds the delegation id, never a person's id), the
// timeline, cases and consents pages (and a consent's preview and grant) show and act on that
// person's, through the citizen API's on_behalf_of, with a banner on every page; the menu shows only
// the pages the power of attorney covers, and every other page says why it does not open (acting.go).

// actingCookie holds the power of attorney the citizen acts with ("del_…"), bound to the sign-in it
// was chosen in (a hash of its ID token): another sign-in in the same browser, by the same citizen or
// another, acts for itself until it chooses otherwise.
const actingCookie = "aperture_acting"

// sessionTag binds the acting cookie to a sign-in: the start of the SHA-256 of its ID token.
func sessionTag(token string) string {
	sum := sha256.Sum256([]byte("aperture/acting/" + token))
	return hex.EncodeToString(sum[:12])
}

var delegationID = regexp.MustCompile(`^(del|cus)_[0-9a-z]{26}$`)

// delegationRoutes registers the pages; without Config.Delegations they answer "not found".
func (p *Portal) delegationRoutes(page func(string, func(http.ResponseWriter, *http.Request, *view))) {
	page("GET /delegations", p.delegations)
	page("POST /delegations", p.delegationGrant)
	page("POST /delegations/{id}/revoke", p.delegationRevoke)
	page("POST /acting", p.acting)
}

// actingFor is the delegation the citizen of this sign-in acts with, from the cookie; "" for
// themselves.
func (p *Portal) actingFor(r *http.Request, v *view) string {
	if p.cfg.Delegations == nil {
		return ""
	}
	c, err := r.Cookie(actingCookie)
	if err != nil {
		return ""
	}
	id, tag, ok := strings.Cut(c.Value, ".")
	if !ok || !delegationID.MatchString(id) || tag != sessionTag(v.token) {
		return ""
	}
	return id
}

func setActing(w http.ResponseWriter, r *http.Request, v *view, id string) {
	c := &http.Cookie{Name: actingCookie, Value: id + "." + sessionTag(v.token), Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}
	if id == "" {
		c.Value, c.MaxAge = "", -1
	}
	http.SetCookie(w, c)
}

// actingEnded answers a page read on someone's behalf that the API refused: a power of attorney that
// expired or was revoked sends the citizen back to acting for themselves, with a message on the
// power-of-attorney page; one that does not cover the page (e.g. a journey it does not name) says so
// in place (still acting).
func (p *Portal) actingEnded(w http.ResponseWriter, r *http.Request, v *view, err error) bool {
	switch {
	case v.ActingFor == "":
		return false
	case isCode(err, codes.PermissionDenied):
		p.notCovered(w, r, v)
		return true
	case isCode(err, codes.NotFound):
		setActing(w, r, v, "")
		redirect(w, r, "/delegations?done=ended")
		return true
	}
	return false
}

// landing is the first page a power of attorney lets its holder see.
func landing(d *citizenv1.Delegation) string {
	pages := map[citizenv1.DelegationScope]string{
		citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_ACCESSES:  "/",
		citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES:     "/cases",
		citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CONSENTS:  "/consents",
		citizenv1.DelegationScope_DELEGATION_SCOPE_GRANT_CONSENT: "/consents",
	}
	for _, s := range d.GetScopes() { // sorted: accesses first
		if to, ok := pages[s]; ok {
			return to
		}
	}
	return "/delegations"
}

type delegationsPage struct {
	Granted, Held []delegationItem
	Journeys      []option
	ScopeOptions  []option
	Form          delegationForm
}

// delegationTermsData is what the delegation-terms template shows.
type delegationTermsData struct {
	V *view
	D delegationItem
}

// scopeOrder is the order the form offers the scopes in.
var scopeOrder = []string{"accesses", "cases", "consents", "grant"}

type delegationItem struct {
	ID string
	// Child is the first names of a child in the citizen's custody (empty for a power of attorney).
	Child           string
	Scopes          []string
	Journeys        []string
	Granted, Expiry time.Time
	Revoked         time.Time
	State           string // active, expired, revoked, unverified
	Acting          bool
}

type delegationForm struct {
	Scopes  map[string]bool
	Expires string
	Error   string
}

var scopeKeys = map[citizenv1.DelegationScope]string{
	citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_ACCESSES:  "accesses",
	citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES:     "cases",
	citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CONSENTS:  "consents",
	citizenv1.DelegationScope_DELEGATION_SCOPE_GRANT_CONSENT: "grant",
}

var stateKeys = map[citizenv1.DelegationState]string{
	citizenv1.DelegationState_DELEGATION_STATE_ACTIVE:     "active",
	citizenv1.DelegationState_DELEGATION_STATE_EXPIRED:    "expired",
	citizenv1.DelegationState_DELEGATION_STATE_REVOKED:    "revoked",
	citizenv1.DelegationState_DELEGATION_STATE_UNVERIFIED: "unverified",
}

func (v *view) delegationItem(d *citizenv1.Delegation) delegationItem {
	it := delegationItem{
		ID: d.GetId(), Granted: v.TS(d.GetGrantedAt()), Expiry: v.TS(d.GetExpiresAt()), Revoked: v.TS(d.GetRevokedAt()),
		State: stateKeys[d.GetState()], Acting: d.GetId() == v.ActingFor,
	}
	if d.GetBasis() == citizenv1.DelegationBasis_DELEGATION_BASIS_PARENTAL_CUSTODY {
		it.Child = d.GetGivenNames()
	}
	for _, s := range d.GetScopes() {
		it.Scopes = append(it.Scopes, v.T("delegations.scope."+scopeKeys[s]))
	}
	for _, j := range d.GetJourneys() {
		it.Journeys = append(it.Journeys, v.Tx(j.GetTitle()))
	}
	return it
}

func (p *Portal) delegations(w http.ResponseWriter, r *http.Request, v *view) {
	p.renderDelegations(w, r, v, http.StatusOK, delegationForm{})
}

func (p *Portal) renderDelegations(w http.ResponseWriter, r *http.Request, v *view, code int, form delegationForm) {
	if p.cfg.Delegations == nil {
		p.notFound(w, r, v)
		return
	}
	v.Nav, v.Title = "delegations", v.T("delegations.title")
	if done := r.URL.Query().Get("done"); done != "" && r.Method == http.MethodGet {
		switch done {
		case "granted", "revoked", "acting", "self", "ended":
			v.Flash = v.T("delegations.flash." + done)
		}
	}
	res, err := p.cfg.Delegations.ListDelegations(v.ctx(r), &citizenv1.ListDelegationsRequest{})
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	cat, err := p.catalog(r, v)
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &delegationsPage{Form: form}
	for _, d := range res.GetGranted() {
		page.Granted = append(page.Granted, v.delegationItem(d))
	}
	for _, d := range res.GetHeld() {
		page.Held = append(page.Held, v.delegationItem(d))
	}
	for _, j := range cat.journeys {
		page.Journeys = append(page.Journeys, option{Value: j.GetJourney().GetId(), Label: v.Tx(j.GetJourney().GetTitle())})
	}
	for _, k := range scopeOrder {
		page.ScopeOptions = append(page.ScopeOptions, option{Value: k, Label: v.T("delegations.form.scope." + k), Selected: form.Scopes[k]})
	}
	v.Data = page
	p.render(w, r, v, code, "delegations")
}

func (p *Portal) delegationGrant(w http.ResponseWriter, r *http.Request, v *view) {
	if p.cfg.Delegations == nil {
		p.notFound(w, r, v)
		return
	}
	if err := r.ParseForm(); err != nil {
		p.notFound(w, r, v)
		return
	}
	form := delegationForm{Scopes: map[string]bool{}, Expires: r.PostFormValue("expires")}
	req := &citizenv1.GrantDelegationRequest{HolderCitizenId: r.PostFormValue("holder"), Journeys: r.PostForm["journey"]}
	for api, key := range scopeKeys {
		if r.PostFormValue("scope_"+key) == "1" {
			req.Scopes = append(req.Scopes, api)
			form.Scopes[key] = true
		}
	}
	day, err := time.ParseInLocation("2006-01-02", form.Expires, v.loc)
	switch {
	case len(req.Scopes) == 0:
		form.Error = v.T("delegations.error.scope")
	case err != nil:
		form.Error = v.T("delegations.error.expires")
	default:
		// The power of attorney lasts to the end of the day chosen.
		req.ExpiresAt = timestamppb.New(day.AddDate(0, 0, 1))
	}
	if form.Error == "" {
		_, err = p.cfg.Delegations.GrantDelegation(v.ctx(r), req)
		switch {
		case isCode(err, codes.InvalidArgument):
			form.Error = v.T("delegations.error.invalid")
		case isCode(err, codes.NotFound):
			form.Error = v.T("delegations.error.journey")
		case err != nil:
			p.fail(w, r, v, err)
			return
		}
	}
	if form.Error != "" {
		p.renderDelegations(w, r, v, http.StatusBadRequest, form)
		return
	}
	redirect(w, r, "/delegations?done=granted")
}

func (p *Portal) delegationRevoke(w http.ResponseWriter, r *http.Request, v *view) {
	if p.cfg.Delegations == nil {
		p.notFound(w, r, v)
		return
	}
	_, err := p.cfg.Delegations.RevokeDelegation(v.ctx(r), &citizenv1.RevokeDelegationRequest{Id: r.PathValue("id")})
	if isCode(err, codes.InvalidArgument) || isCode(err, codes.NotFound) {
		p.notFound(w, r, v)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	redirect(w, r, "/delegations?done=revoked")
}

// acting switches between acting for oneself and acting with a power of attorney one holds. The id
// is checked against the citizen's held list, so the cookie only ever names one of them (the API
// checks again on every call).
func (p *Portal) acting(w http.ResponseWriter, r *http.Request, v *view) {
	if p.cfg.Delegations == nil {
		p.notFound(w, r, v)
		return
	}
	id := r.PostFormValue("for")
	if id == "" {
		setActing(w, r, v, "")
		if back := r.PostFormValue("return"); back != "" {
			redirect(w, r, localPath(back)) // from a page that is only ever one's own
			return
		}
		redirect(w, r, "/delegations?done=self")
		return
	}
	d, err := p.held(r, v, id)
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	if d == nil {
		p.notFound(w, r, v)
		return
	}
	setActing(w, r, v, id)
	redirect(w, r, landing(d)+"?done=acting")
}

// held is the active power of attorney (or child in custody) id among those the citizen holds, or nil.
func (p *Portal) held(r *http.Request, v *view, id string) (*citizenv1.Delegation, error) {
	res, err := p.cfg.Delegations.ListDelegations(v.ctx(r), &citizenv1.ListDelegationsRequest{})
	if err != nil {
		return nil, err
	}
	for _, d := range res.GetHeld() {
		if d.GetId() == id && d.GetState() == citizenv1.DelegationState_DELEGATION_STATE_ACTIVE {
			return d, nil
		}
	}
	return nil, nil
}

// delegateEntry words what someone the citizen gave power of attorney did: who (never an id), what
// they looked at, or the step they consented to.
func (v *view) delegateEntry(a *citizenv1.Access, it *accessItem) {
	it.Delegate, it.Who, it.Did, it.Purpose, it.Law = true, v.T("entry.delegate"), v.T("entry.delegate.saw"), "", ""
	if a.GetDelegate().GetBasis() == auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY {
		it.Who = v.T("entry.parent")
	}
	switch a.GetDelegate().GetAction() {
	case auditv1.DelegateAction_DELEGATE_ACTION_VIEW_ACCESSES:
		it.Items = []string{v.T("entry.delegate.accesses")}
	case auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES:
		it.Items = []string{v.T("entry.delegate.cases")}
		if a.GetCaseId() != "" {
			it.Items = []string{v.T("entry.delegate.case")}
		}
	case auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CONSENTS:
		it.Items = []string{v.T("entry.delegate.consents")}
	case auditv1.DelegateAction_DELEGATE_ACTION_PREVIEW_CONSENT:
		it.Items = []string{v.T("entry.delegate.preview")}
	case auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT:
		it.Did, it.Items = v.T("entry.delegate.consented"), []string{v.T("entry.delegate.consent")}
	default:
		it.Purpose = v.Tx(a.GetPurpose())
	}
	if j := v.Tx(a.GetJourney().GetTitle()); j != "" {
		it.For = j
		if a.GetStep() != nil {
			it.For += ", " + v.Step(a.GetStep())
		}
	}
	it.Announce = v.T("live.announce", it.Who)
}

// custodyEntry words the broker's read of the custody register in the parent's own log: what was
// read and why, no child named.
func (v *view) custodyEntry(a *citizenv1.Access, it *accessItem) {
	it.Who, it.Did, it.Law = "", v.T("entry.custody_check"), ""
	it.Items = []string{v.T("entry.custody_check.item", v.Party(a.GetAuthority()))}
	it.Purpose, it.Source, it.Checks = v.T("entry.custody_check.why"), "", nil
	it.Announce = v.T("entry.custody_check.why")
}

// ActingForChild reports whether the citizen acts for a child in their custody (the API's "cus_" ids).
func (v *view) ActingForChild() bool { return strings.HasPrefix(v.ActingFor, "cus_") }
