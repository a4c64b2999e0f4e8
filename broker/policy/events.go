package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	policyv1 "github.com/aperture-gov/aperture/proto/aperture/policy/v1"
)

// EventsFile is the policy file of life events and proactive journeys, within the policy tree. A tree
// without it has no proactive journeys.
const EventsFile = "events.yaml"

// LifeEvent is a kind of life event an authority may publish to the broker (policies/events.yaml).
type LifeEvent struct {
	// Type is the event type, e.g. "birth_registered".
	Type  string
	Label Text
	// PublishedBy are the ids of the authorities that may publish it.
	PublishedBy []string
	// Starts are the journeys the event opens, in policy order.
	Starts []ProactiveStart
}

// MayPublish reports whether authority may publish the event.
func (e *LifeEvent) MayPublish(authority string) bool {
	return slices.Contains(e.PublishedBy, authority)
}

// ProactiveStart opens a case of Journey at Agency (the agency of its first step).
type ProactiveStart struct {
	Journey, Agency string
}

// Event returns the life event of the given type.
func (b *Bundle) Event(typ string) (*LifeEvent, bool) {
	i := slices.IndexFunc(b.events, func(e *LifeEvent) bool { return e.Type == typ })
	if i < 0 {
		return nil, false
	}
	return b.events[i], true
}

// Events returns every life event, in policy order. The slice is the caller's.
func (b *Bundle) Events() []*LifeEvent { return slices.Clone(b.events) }

// loadEvents reads events.yaml, if the tree has one, and checks every name in it against the registry
// and the journeys already loaded: an unknown authority, event, journey or agency is an error, and so
// is an agency that is not the one of the journey's first step (only that agency may open the journey).
//
// files are the journey files; a journey whose file has findings of its own is not reported again here.
func (l *loader) loadEvents(fsys fs.FS, journeys []*Journey, files []string) (*file, []*LifeEvent) {
	data, err := fs.ReadFile(fsys, EventsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		*l.findings = append(*l.findings, Finding{File: EventsFile, Message: fmt.Sprintf("cannot read: %v", err)})
		return nil, nil
	}
	f := file{name: EventsFile, data: data}
	var pb policyv1.LifeEvents
	src := decode(f, &pb, l.validator, l.findings)
	if src == nil {
		return &f, nil
	}
	authorityIDs := make([]string, len(l.reg.Authorities))
	for i, a := range l.reg.Authorities {
		authorityIDs[i] = a.ID
	}
	agencyIDs := make([]string, len(l.reg.Agencies))
	for i, a := range l.reg.Agencies {
		agencyIDs[i] = a.ID
	}
	journeyIDs := make([]string, len(files))
	for i, f := range files {
		journeyIDs[i] = strings.TrimSuffix(path.Base(f), ".yaml") // a journey's id is its file's name
	}
	var out []*LifeEvent
	byType := map[string]*LifeEvent{}
	for i, ep := range pb.GetEvents() {
		p := []any{"events", i}
		if _, dup := byType[ep.GetType()]; dup {
			src.at(append(p, "type"), "event type %q is declared twice", ep.GetType())
			continue
		}
		e := &LifeEvent{Type: ep.GetType(), Label: text(ep.GetLabel())}
		for k, a := range ep.GetPublishedBy() {
			if !slices.Contains(authorityIDs, a) {
				src.at(append(p, "published_by", k), "authority %q is not in the registry%s", a, didYouMean(a, authorityIDs))
				continue
			}
			e.PublishedBy = append(e.PublishedBy, a)
		}
		byType[e.Type] = e
		out = append(out, e)
	}
	for i, sp := range pb.GetProactive() {
		p := func(k string) []any { return []any{"proactive", i, k} }
		types := make([]string, 0, len(byType))
		for _, e := range out {
			types = append(types, e.Type)
		}
		e, ok := byType[sp.GetEvent()]
		if !ok {
			src.at(p("event"), "event %q is not declared under events%s", sp.GetEvent(), didYouMean(sp.GetEvent(), types))
		}
		ji := slices.IndexFunc(journeys, func(j *Journey) bool { return j.ID == sp.GetJourney() })
		if !slices.Contains(journeyIDs, sp.GetJourney()) {
			src.at(p("journey"), "journey %q does not exist%s", sp.GetJourney(), didYouMean(sp.GetJourney(), journeyIDs))
		}
		if !slices.Contains(agencyIDs, sp.GetAgency()) {
			src.at(p("agency"), "agency %q is not in the registry%s", sp.GetAgency(), didYouMean(sp.GetAgency(), agencyIDs))
			continue
		}
		if ji < 0 || !ok {
			continue
		}
		if first := journeys[ji].Steps[0].Agency; first != sp.GetAgency() {
			src.at(p("agency"), "journey %q starts with agency %q, so %q cannot open it", sp.GetJourney(), first, sp.GetAgency())
			continue
		}
		st := ProactiveStart{Journey: sp.GetJourney(), Agency: sp.GetAgency()}
		if slices.Contains(e.Starts, st) {
			src.at(p("journey"), "event %q starts journey %q twice", e.Type, st.Journey)
			continue
		}
		e.Starts = append(e.Starts, st)
	}
	return &f, out
}
