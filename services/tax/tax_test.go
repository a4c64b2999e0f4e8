package tax_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	taxv1 "github.com/aperture-gov/aperture/proto/aperture/tax/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/tax"
)

// The earnings test of the sickness benefit journey.
const earnedAbove = `record.months.filter(m, m.period_start >= now - duration("8784h") && m.gross_dkk >= 20000).size() >= 6`

func TestIncome(t *testing.T) {
	pop := demo.New(50, time.Now())
	srv := kittest.Start(t, tax.New(pop), kit.WithClock(func() time.Time { return pop.Ref().AddDate(0, 0, 10) }))
	tests := []struct {
		id   string
		want bool
	}{
		{demo.SickEmployeeID, true},
		{demo.MovingParentID, true},
		{demo.LowEarnerID, false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			req := kittest.Request(tt.id, "income", "months.period_start", "tax_municipality_code")
			req.Derived = []*authorityv1.DerivedExpression{{Name: "earned_above_threshold_6_of_12", Expression: earnedAbove}}
			resp, rec := srv.Fetch(t, req)
			in := rec.(*taxv1.Income)
			if got := resp.GetDerived()[0].GetValue().GetBoolValue(); got != tt.want {
				t.Errorf("earned above threshold = %v, want %v", got, tt.want)
			}
			if len(in.GetMonths()) != 24 || in.GetTaxMunicipalityCode() == "" {
				t.Errorf("%d months in %q, want 24", len(in.GetMonths()), in.GetTaxMunicipalityCode())
			}
			for _, m := range in.GetMonths() {
				if m.GetGrossDkk() != 0 || m.GetEmployerId() != "" || m.GetPeriodStart() == nil {
					t.Fatalf("month outside the mask: %v", m)
				}
			}
		})
	}
	// A child has no income record.
	lars, _ := pop.Citizen(demo.SickEmployeeID)
	for _, m := range lars.Household {
		if m.Relation == populationv1.Relation_RELATION_CHILD {
			if _, err := srv.Client.Fetch(context.Background(), kittest.Request(m.ID, "income", "months")); status.Code(err) != codes.NotFound {
				t.Errorf("child's income: %v, want NotFound", err)
			}
		}
	}
}
