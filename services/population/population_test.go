package population_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/population"
)

func TestPerson(t *testing.T) {
	pop := demo.New(50, time.Now())
	srv := kittest.Start(t, population.New(pop))
	tests := []struct {
		id    string
		paths []string
		check func(t *testing.T, p *populationv1.Person, children float64)
	}{
		{demo.SickEmployeeID, []string{"name.family_name", "address.municipality_code", "household.relation"}, func(t *testing.T, p *populationv1.Person, children float64) {
			if p.GetName().GetFamilyName() != "Møller" || p.GetAddress().GetMunicipalityCode() != "0101" || len(p.GetHousehold()) != 3 || children != 2 {
				t.Errorf("person = %v, %v children", p, children)
			}
			if p.GetName().GetGivenNames() != "" || p.GetCitizenId() != "" || p.GetHousehold()[0].GetCitizenId() != "" {
				t.Errorf("fields outside the mask released: %v", p)
			}
		}},
		{demo.MovingParentID, []string{"address.moved_in_on", "previous_addresses.municipality_code"}, func(t *testing.T, p *populationv1.Person, children float64) {
			if time.Since(p.GetAddress().GetMovedInOn().AsTime()) > 45*24*time.Hour || p.GetPreviousAddresses()[0].GetMunicipalityCode() != "0851" || children != 2 {
				t.Errorf("person = %v, %v children", p, children)
			}
		}},
		{demo.LowEarnerID, []string{"civil_status"}, func(t *testing.T, p *populationv1.Person, children float64) {
			if p.GetCivilStatus() != populationv1.CivilStatus_CIVIL_STATUS_UNMARRIED || children != 0 {
				t.Errorf("person = %v, %v children", p, children)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			req := kittest.Request(tt.id, "person", tt.paths...)
			req.Derived = []*authorityv1.DerivedExpression{{Name: "children", Expression: "record.household.filter(m, m.relation == 3).size()"}}
			resp, rec := srv.Fetch(t, req)
			tt.check(t, rec.(*populationv1.Person), resp.GetDerived()[0].GetValue().GetNumberValue())
		})
	}
	if _, err := srv.Client.Fetch(context.Background(), kittest.Request("0101010000", "person", "name")); status.Code(err) != codes.NotFound {
		t.Errorf("unknown citizen: %v, want NotFound", err)
	}
}
