// Package population is the example civil registration authority (a CPR-like population register).
// It serves dataset "person": name, birth date, address, civil status, household and earlier
// addresses.
package population

import (
	"context"

	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug.
const ID = "population"

// New returns the authority serving pop.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "Civil Registration (population register)", Datasets: []kit.Dataset{
		kit.NewDataset("person", "Name, birth date, registered address, civil status, household and children in custody of a citizen.",
			func(_ context.Context, id string) (*populationv1.Person, error) {
				c, ok := pop.Citizen(id)
				if !ok {
					return nil, kit.ErrNotFound
				}
				return person(c), nil
			}),
	}}
}

func person(c *demo.Citizen) *populationv1.Person {
	p := &populationv1.Person{
		CitizenId:   c.ID,
		Name:        &populationv1.Name{GivenNames: c.GivenNames, FamilyName: c.FamilyName},
		BirthDate:   kit.Timestamp(c.BirthDate),
		Address:     address(c.Address),
		CivilStatus: c.CivilStatus,
	}
	for _, m := range c.Household {
		p.Household = append(p.Household, &populationv1.HouseholdMember{
			CitizenId: m.ID, GivenNames: m.GivenNames, Relation: m.Relation, BirthDate: kit.Timestamp(m.BirthDate),
		})
	}
	for _, m := range c.Custody {
		p.ChildrenInCustody = append(p.ChildrenInCustody, &populationv1.ChildInCustody{
			CitizenId: m.ID, GivenNames: m.GivenNames, BirthDate: kit.Timestamp(m.BirthDate),
		})
	}
	for _, a := range c.PreviousAddresses {
		p.PreviousAddresses = append(p.PreviousAddresses, address(a))
	}
	return p
}

func address(a demo.Address) *populationv1.Address {
	return &populationv1.Address{
		Street: a.Street, HouseNumber: a.HouseNumber, Unit: a.Unit, PostalCode: a.PostalCode, City: a.City,
		MunicipalityCode: a.MunicipalityCode, MunicipalityName: a.MunicipalityName, MovedInOn: kit.Timestamp(a.MovedInOn),
	}
}
