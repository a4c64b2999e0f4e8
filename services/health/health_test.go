package health_test

import (
	"strings"
	"testing"
	"time"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	healthv1 "github.com/aperture-gov/aperture/proto/aperture/health/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/health"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
)

const currentlySick = `record.sick_notes.exists(n, n.issued_on + duration(string(n.expected_duration_days * 24) + "h") > now)`

func TestPatient(t *testing.T) {
	pop := demo.New(50, time.Now())
	srv := kittest.Start(t, health.New(pop), kit.WithClock(func() time.Time { return pop.Ref().AddDate(0, 0, 20) }))
	tests := []struct {
		id     string
		sick   bool
		clinic string
	}{
		{demo.SickEmployeeID, true, "Nørrebro"},
		{demo.MovingParentID, false, "Trøjborg"},
		{demo.LowEarnerID, false, "Odense"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			req := kittest.Request(tt.id, "patient", "gp.clinic_name", "sick_notes.work_capacity_percent", "sick_notes.expected_duration_days")
			req.Derived = []*authorityv1.DerivedExpression{{Name: "currently_sick", Expression: currentlySick}}
			resp, rec := srv.Fetch(t, req)
			p := rec.(*healthv1.Patient)
			if got := resp.GetDerived()[0].GetValue().GetBoolValue(); got != tt.sick {
				t.Errorf("currently sick = %v, want %v", got, tt.sick)
			}
			if clinic := p.GetGp().GetClinicName(); !strings.Contains(clinic, tt.clinic) {
				t.Errorf("clinic %q, want one in %s", clinic, tt.clinic)
			}
			for _, n := range p.GetSickNotes() {
				if n.GetDiagnosisCode() != "" || n.GetIssuedOn() != nil {
					t.Fatalf("sick note outside the mask: %v", n)
				}
			}
			if tt.sick && p.GetSickNotes()[0].GetWorkCapacityPercent() != 50 {
				t.Errorf("current sick note %v, want 50 %% work capacity", p.GetSickNotes()[0])
			}
		})
	}
}
