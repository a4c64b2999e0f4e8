package portal

import (
	"net/http"
	"net/url"
	"time"

	"google.golang.org/grpc/codes"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// ---- Switch off ----

type switchesPage struct {
	All      switchState
	Journeys []switchJourney
}

// switchState is one switch as the page shows it.
type switchState struct {
	Off, Unverified bool
	Since           time.Time
}

type switchJourney struct {
	ID, Title, OptionalWhy string
	Switchable             bool
	Switch                 switchState
	Steps                  []switchStep
}

type switchStep struct {
	Number           int32
	Title, Agency    string
	Optional         bool
	OptionalWhy, Law string
}

func switchStateOf(v *view, sw *citizenv1.Switch) switchState {
	return switchState{Off: sw.GetOff() || sw.GetUnverified(), Unverified: sw.GetUnverified(), Since: v.TS(sw.GetChangedAt())}
}

func (p *Portal) switches(w http.ResponseWriter, r *http.Request, v *view) {
	v.Nav, v.Title = "switches", v.T("switches.title")
	switch r.URL.Query().Get("done") {
	case "off":
		v.Flash = v.T("flash.switched_off")
	case "on":
		v.Flash = v.T("flash.switched_on")
	}
	res, err := p.cfg.Citizen.ListSwitches(v.ctx(r), &citizenv1.ListSwitchesRequest{})
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	page := &switchesPage{All: switchStateOf(v, res.GetAll())}
	for _, sj := range res.GetJourneys() {
		j := switchJourney{ID: sj.GetJourney().GetId(), Title: v.Tx(sj.GetJourney().GetTitle()), OptionalWhy: v.Tx(sj.GetOptionalWhy()),
			Switch: switchStateOf(v, sj.GetSwitch())}
		for _, st := range sj.GetSteps() {
			j.Switchable = j.Switchable || st.GetOptional()
			j.Steps = append(j.Steps, switchStep{
				Number: st.GetStep().GetNumber(), Title: v.Tx(st.GetStep().GetTitle()), Agency: v.Party(st.GetAgency()),
				Optional: st.GetOptional(), OptionalWhy: v.Tx(st.GetOptionalWhy()), Law: st.GetLegalBasis(),
			})
		}
		page.Journeys = append(page.Journeys, j)
	}
	v.Data = page
	p.render(w, r, v, http.StatusOK, "switches")
}

func (p *Portal) setSwitch(w http.ResponseWriter, r *http.Request, v *view) {
	journey, off := r.PostFormValue("journey"), r.PostFormValue("off") == "1"
	_, err := p.cfg.Citizen.SetSwitch(v.ctx(r), &citizenv1.SetSwitchRequest{Journey: journey, Off: off})
	if isCode(err, codes.InvalidArgument) || isCode(err, codes.NotFound) {
		p.notFound(w, r, v)
		return
	}
	if err != nil {
		p.fail(w, r, v, err)
		return
	}
	done, anchor := "on", "sw-all"
	if off {
		done = "off"
	}
	if journey != "" {
		anchor = "sw-" + url.PathEscape(journey)
	}
	redirect(w, r, "/switches?done="+done+"#"+anchor)
}

// switchFormData is what the switch-form template shows: one switch and the form that flips it.
type switchFormData struct {
	V              *view
	Journey, Title string
	S              switchState
}
