package portal

import (
	"net/http"
	"strings"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// ---- What a page does while the citizen acts for someone else ----
//
// Every signed-in page learns, from the acting cookie and the citizen's held powers of attorney,
// whether it acts for someone else and what that power of attorney covers (withActing). Then:
//
//   - a page of the other person's data (timeline, cases, consents, a consent's preview and grant)
//     needs the scope that covers it (needs); outside it the page says so (notCovered), and the
//     menu does not offer it;
//   - a page that is only ever about the citizen themselves (journeys, switches, my data,
//     questions, proofs, corrections) is not in the menu; opened anyway, it says that it shows the
//     citizen's own data and offers to act for themselves again and open it (ownOnly). It never
//     shows the citizen's own data under the banner that says the page is the other person's.
//
// The citizen API checks every call on someone's behalf again; this is what the citizen is shown.

// withActing sets, for a citizen acting for someone, the power of attorney (v.ActingFor), what it
// covers (v.May) and its first page (v.ActingHome). A power of attorney that is no longer among
// those the citizen holds (ended, expired) sends them back to acting for themselves, with a message.
func (p *Portal) withActing(h func(http.ResponseWriter, *http.Request, *view)) func(http.ResponseWriter, *http.Request, *view) {
	return func(w http.ResponseWriter, r *http.Request, v *view) {
		id := p.actingFor(r, v)
		if id == "" {
			h(w, r, v)
			return
		}
		d, err := p.held(r, v, id)
		if err != nil {
			p.fail(w, r, v, err)
			return
		}
		if d != nil {
			v.ActingFor, v.ActingHome, v.May = id, landing(d), map[string]bool{}
			for _, s := range d.GetScopes() {
				v.May[scopeKeys[s]] = true
			}
			// A parent may also withdraw a child's consent; a power of attorney never withdraws.
			v.May["revoke"] = d.GetBasis() == citizenv1.DelegationBasis_DELEGATION_BASIS_PARENTAL_CUSTODY
			for _, j := range d.GetJourneys() {
				v.actingJourneys = append(v.actingJourneys, j.GetId())
			}
			h(w, r, v)
			return
		}
		setActing(w, r, v, "")
		redirect(w, r, "/delegations?done=ended")
	}
}

// needs lets h answer only when the citizen acts for themselves or the power of attorney they act
// with covers one of scopes (scopeKeys' words); otherwise the page says it is not covered.
func (p *Portal) needs(h func(http.ResponseWriter, *http.Request, *view), scopes ...string) func(http.ResponseWriter, *http.Request, *view) {
	return func(w http.ResponseWriter, r *http.Request, v *view) {
		if v.ActingFor == "" {
			h(w, r, v)
			return
		}
		for _, s := range scopes {
			if v.May[s] {
				h(w, r, v)
				return
			}
		}
		p.notCovered(w, r, v)
	}
}

// ownOnly marks a page that is only ever about the citizen themselves: while they act for someone
// else it says so instead, and offers to act for themselves again and come back to it.
func (p *Portal) ownOnly(h func(http.ResponseWriter, *http.Request, *view)) func(http.ResponseWriter, *http.Request, *view) {
	return func(w http.ResponseWriter, r *http.Request, v *view) {
		if v.ActingFor == "" {
			h(w, r, v)
			return
		}
		ep := errorPage{Heading: v.T("acting.own.h"), Body: v.T("acting.own.p"), Back: v.ActingHome, Self: selfReturn(r)}
		v.Title, v.Data = ep.Heading, ep
		p.render(w, r, v, http.StatusOK, "error")
	}
}

// notCovered answers a page the power of attorney the citizen acts with does not cover: a scope it
// does not have, a journey it does not name, or something no power of attorney allows (withdrawing
// a consent). Nothing was asked of the API on the other person's behalf.
func (p *Portal) notCovered(w http.ResponseWriter, r *http.Request, v *view) {
	ep := errorPage{Heading: v.T("acting.scope.h"), Body: v.T("acting.scope.p"), Back: v.ActingHome}
	v.Title, v.Data = ep.Heading, ep
	p.render(w, r, v, http.StatusForbidden, "error")
}

// selfReturn is the page to come back to after acting for oneself again: this page for a GET, the
// page of the form for a POST (its address without the action), never another site.
func selfReturn(r *http.Request) string {
	back := r.URL.Path
	if r.Method == http.MethodGet {
		back = r.URL.RequestURI()
	}
	return localPath(back)
}

// localPath is to when it is a path on this site, "/" otherwise.
func localPath(to string) string {
	if !strings.HasPrefix(to, "/") || strings.HasPrefix(to, "//") || strings.HasPrefix(to, "/\\") {
		return "/"
	}
	return to
}

// coversJourney reports whether the power of attorney acted with reaches journey (always, when it
// names none, or when the citizen acts for themselves).
func (v *view) coversJourney(journey string) bool {
	if v.ActingFor == "" || len(v.actingJourneys) == 0 {
		return true
	}
	for _, j := range v.actingJourneys {
		if j == journey {
			return true
		}
	}
	return false
}
