// Package catalog lists the example authorities, so that `aperture dev` can serve all of them. Adding
// an authority means adding its proto, its package under services/, one line here, and its entry in
// the policy registry.
package catalog

import (
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/education"
	"github.com/aperture-gov/aperture/services/employment"
	"github.com/aperture-gov/aperture/services/health"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/municipality"
	"github.com/aperture-gov/aperture/services/population"
	"github.com/aperture-gov/aperture/services/tax"
)

// Examples returns the example authorities, all serving pop.
func Examples(pop *demo.Population) []*kit.Authority {
	return []*kit.Authority{
		population.New(pop),
		tax.New(pop),
		health.New(pop),
		employment.New(pop),
		municipality.New(pop),
		education.New(pop),
	}
}
