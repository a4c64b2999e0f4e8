// Package tax is the example tax agency authority (an eIndkomst-like income register). It serves
// dataset "income": 24 months of income reported by employers and other payers, and the
// preliminary income assessment.
package tax

import (
	"context"
	"slices"

	taxv1 "github.com/aperture-gov/aperture/proto/aperture/tax/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug.
const ID = "tax"

// New returns the authority serving pop. Citizens without reported income (children, people
// outside the labour market) have no record.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "Danish Tax Agency (income register)", Datasets: []kit.Dataset{
		kit.NewDataset("income", "Monthly income reported for the last 24 months, the payers, and the preliminary assessment.",
			func(_ context.Context, id string) (*taxv1.Income, error) {
				c, ok := pop.Citizen(id)
				if !ok || len(c.Income) == 0 {
					return nil, kit.ErrNotFound
				}
				return income(c), nil
			}),
	}}
}

func income(c *demo.Citizen) *taxv1.Income {
	in := &taxv1.Income{
		CitizenId:               c.ID,
		TaxMunicipalityCode:     c.Address.MunicipalityCode,
		AssessedAnnualIncomeDkk: c.AssessedAnnualDKK,
	}
	for _, m := range c.Income {
		in.Months = append(in.Months, &taxv1.MonthlyIncome{
			PeriodStart: kit.Timestamp(m.PeriodStart), GrossDkk: m.GrossDKK, TaxWithheldDkk: m.TaxWithheldDKK,
			EmployerId: m.EmployerID, Hours: m.Hours,
		})
		if !slices.Contains(in.EmployerIds, m.EmployerID) {
			in.EmployerIds = append(in.EmployerIds, m.EmployerID)
		}
	}
	return in
}
