// Package health is the example health data authority. It serves dataset "patient": the citizen's
// general practitioner and sick notes. Diagnoses are special-category data; the kit releases them
// only if a policy names the field, and no journey does.
package health

import (
	"context"

	healthv1 "github.com/aperture-gov/aperture/proto/aperture/health/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug.
const ID = "health"

// New returns the authority serving pop.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "Health Data Authority (GP and sick notes)", Datasets: []kit.Dataset{
		kit.NewDataset("patient", "The citizen's general practitioner and the sick notes doctors have issued.",
			func(_ context.Context, id string) (*healthv1.Patient, error) {
				c, ok := pop.Citizen(id)
				if !ok {
					return nil, kit.ErrNotFound
				}
				return patient(c), nil
			}),
	}}
}

func patient(c *demo.Citizen) *healthv1.Patient {
	p := &healthv1.Patient{
		CitizenId: c.ID,
		Gp:        &healthv1.GeneralPractitioner{ClinicId: c.GP.ID, ClinicName: c.GP.Name, MunicipalityCode: c.GP.MunicipalityCode},
	}
	for _, n := range c.SickNotes {
		p.SickNotes = append(p.SickNotes, &healthv1.SickNote{
			Id: n.ID, IssuedOn: kit.Timestamp(n.IssuedOn), DiagnosisCode: n.DiagnosisCode,
			ExpectedDurationDays: n.ExpectedDurationDays, WorkCapacityPercent: n.WorkCapacityPercent, ClinicId: n.ClinicID,
		})
	}
	return p
}
