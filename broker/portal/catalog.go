package portal

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// catalog is the policy side of the portal: the journeys, their data paths, and the authorities and
// datasets the journeys read. It holds no citizen data and is the same for everyone, so it is read
// once and kept for Config.CatalogTTL.
type catalog struct {
	journeys    []*citizenv1.JourneySummary
	paths       map[string]*citizenv1.GetDataPathResponse
	authorities []*citizenv1.Party // every authority named in a data path, by id
	datasets    []datasetRef       // every authority dataset named in a data path
	consentable []consentStep      // every step that asks for consent
}

// datasetRef is one authority dataset.
type datasetRef struct {
	Authority *citizenv1.Party
	Dataset   string
}

// consentStep is one step that needs the citizen's consent.
type consentStep struct {
	Journey *citizenv1.JourneyRef
	Step    *citizenv1.DataPathStep
}

func (p *Portal) catalog(r *http.Request, v *view) (*catalog, error) {
	p.catMu.Lock()
	defer p.catMu.Unlock()
	if p.cat != nil && p.cfg.CatalogTTL > 0 && time.Since(p.catAt) < p.cfg.CatalogTTL {
		return p.cat, nil
	}
	ctx := v.ctx(r)
	js, err := p.cfg.Citizen.ListJourneys(ctx, &citizenv1.ListJourneysRequest{})
	if err != nil {
		return nil, err
	}
	c := &catalog{journeys: js.GetJourneys(), paths: map[string]*citizenv1.GetDataPathResponse{}}
	auths := map[string]*citizenv1.Party{}
	sets := map[[2]string]datasetRef{}
	for _, j := range c.journeys {
		id := j.GetJourney().GetId()
		dp, err := p.cfg.Citizen.GetDataPath(ctx, &citizenv1.GetDataPathRequest{Journey: id})
		if err != nil {
			return nil, err
		}
		c.paths[id] = dp
		for _, s := range dp.GetSteps() {
			// The one thing in a data path that is the citizen's own: the catalog is shared, so it
			// keeps the policy only (the journey page asks for the citizen's path itself).
			s.SwitchedOff, s.SwitchedOffBy = false, citizenv1.SwitchScope_SWITCH_SCOPE_UNSPECIFIED
			if s.GetConsentRequired() {
				c.consentable = append(c.consentable, consentStep{Journey: dp.GetJourney(), Step: s})
			}
			for _, rel := range s.GetReleases() {
				a := rel.GetAuthority()
				auths[a.GetId()] = a
				sets[[2]string{a.GetId(), rel.GetDataset()}] = datasetRef{Authority: a, Dataset: rel.GetDataset()}
			}
		}
	}
	for _, a := range auths {
		c.authorities = append(c.authorities, a)
	}
	slices.SortFunc(c.authorities, func(a, b *citizenv1.Party) int { return cmp.Compare(a.GetId(), b.GetId()) })
	for _, d := range sets {
		c.datasets = append(c.datasets, d)
	}
	slices.SortFunc(c.datasets, func(a, b datasetRef) int {
		return cmp.Or(cmp.Compare(a.Authority.GetId(), b.Authority.GetId()), cmp.Compare(a.Dataset, b.Dataset))
	})
	p.cat, p.catAt = c, time.Now()
	return c, nil
}
