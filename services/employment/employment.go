// Package employment is the example employment register authority. It serves dataset "history":
// employment relationships and employers' reports of sick leave.
package employment

import (
	"context"

	employmentv1 "github.com/aperture-gov/aperture/proto/aperture/employment/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug.
const ID = "employment"

// New returns the authority serving pop. Citizens who were never employed have no record.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "Employment register", Datasets: []kit.Dataset{
		kit.NewDataset("history", "Employment relationships with start dates and hours, and employers' sick-leave reports.",
			func(_ context.Context, id string) (*employmentv1.EmploymentHistory, error) {
				c, ok := pop.Citizen(id)
				if !ok || len(c.Employments) == 0 {
					return nil, kit.ErrNotFound
				}
				return history(c), nil
			}),
	}}
}

func history(c *demo.Citizen) *employmentv1.EmploymentHistory {
	h := &employmentv1.EmploymentHistory{CitizenId: c.ID}
	for _, e := range c.Employments {
		h.Employments = append(h.Employments, &employmentv1.Employment{
			EmployerId: e.EmployerID, EmployerName: e.EmployerName, StartDate: kit.Timestamp(e.Start),
			EndDate: kit.Timestamp(e.End), WeeklyHours: e.WeeklyHours, OccupationCode: e.OccupationCode,
		})
	}
	for _, r := range c.SickLeaveReports {
		h.SickLeaveReports = append(h.SickLeaveReports, &employmentv1.SickLeaveReport{
			EmployerId: r.EmployerID, FirstSickDay: kit.Timestamp(r.FirstSickDay),
			ReportedOn: kit.Timestamp(r.ReportedOn), EmployerPaysSalary: r.EmployerPaysSalary,
		})
	}
	return h
}
