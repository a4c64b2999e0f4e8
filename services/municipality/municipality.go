// Package municipality is the example municipality authority. It serves dataset "services": the
// citizen's benefit cases, and the daycare and school places of their children.
package municipality

import (
	"context"

	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug.
const ID = "municipality"

// New returns the authority serving pop. Every resident has a record at the municipality they live
// in.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "Municipality (citizen services)", Datasets: []kit.Dataset{
		kit.NewDataset("services", "Benefit cases by case number, and the daycare and school places of the citizen's children.",
			func(_ context.Context, id string) (*municipalityv1.Services, error) {
				c, ok := pop.Citizen(id)
				if !ok {
					return nil, kit.ErrNotFound
				}
				return services(c), nil
			}),
	}}
}

func services(c *demo.Citizen) *municipalityv1.Services {
	s := &municipalityv1.Services{CitizenId: c.ID, MunicipalityCode: c.Address.MunicipalityCode}
	if len(c.BenefitCases) > 0 {
		s.BenefitCases = map[string]*municipalityv1.BenefitCase{}
	}
	for number, b := range c.BenefitCases {
		s.BenefitCases[number] = &municipalityv1.BenefitCase{
			Kind: b.Kind, OpenedOn: kit.Timestamp(b.OpenedOn), Status: b.Status, MonthlyAmountDkk: b.MonthlyAmountDKK, Notes: b.Notes,
		}
	}
	for _, d := range c.Daycare {
		s.Daycare = append(s.Daycare, &municipalityv1.DaycarePlacement{
			ChildCitizenId: d.ChildID, InstitutionName: d.Institution, StartDate: kit.Timestamp(d.Start), WeeklyHours: d.WeeklyHours,
		})
	}
	for _, e := range c.Schools {
		s.Schools = append(s.Schools, &municipalityv1.SchoolEnrolment{ChildCitizenId: e.ChildID, SchoolName: e.School, Grade: e.Grade})
	}
	return s
}
