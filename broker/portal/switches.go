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
	ID               string
	Number           int32
	Title, Agency    string
	Optional         bool
	OptionalWhy, Law string
	// Switch is the step's own switch (optional steps only).
	Switch switchState
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
				ID: st.GetStep().GetId(), Number: st.GetStep().GetNumber(), Title: v.Tx(st.GetStep().GetTitle()), Agency: v.Party(st.GetAgency()),
				Optional: st.GetOptional(), OptionalWhy: v.Tx(st.GetOptionalWhy()), Law: st.GetLegalBasis(),
				Switch: switchStateOf(v, st.GetSwitch()),
			})
		}
		page.Journeys = append(page.Journeys, j)
	}
	v.Data = page
	p.render(w, r, v, http.StatusOK, "switches")
}

func (p *Portal) setSwitch(w http.ResponseWriter, r *http.Request, v *view) {
	journey, step, off := r.PostFormValue("journey"), r.PostFormValue("step"), r.PostFormValue("off") == "1"
	_, err := p.cfg.Citizen.SetSwitch(v.ctx(r), &citizenv1.SetSwitchRequest{Journey: journey, Step: step, Off: off})
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
	if step != "" {
		anchor = stepAnchor(journey, step)
	}
	redirect(w, r, "/switches?done="+done+"#"+anchor)
}

// stepAnchor is the id of a step's switch on the switch page: the journey's anchor, a double dash, the
// step (policy ids are letters, digits and single dashes in practice, so the two stay apart).
func stepAnchor(journey, step string) string {
	return "sw-" + url.PathEscape(journey) + "--" + url.PathEscape(step)
}

// switchFormData is what the switch-form template shows: one switch and the form that flips it. Step
// is set for a step's own switch.
type switchFormData struct {
	V                    *view
	Journey, Step, Title string
	S                    switchState
}
