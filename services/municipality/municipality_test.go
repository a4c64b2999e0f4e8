package municipality_test

import (
	"testing"
	"time"

	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/municipality"
)

func TestServices(t *testing.T) {
	pop := demo.New(50, time.Now())
	srv := kittest.Start(t, municipality.New(pop))
	tests := []struct {
		id           string
		municipality string
		grades       []int32
		daycare      int
		kinds        []municipalityv1.BenefitKind
	}{
		{demo.SickEmployeeID, "0101", []int32{2}, 1, []municipalityv1.BenefitKind{municipalityv1.BenefitKind_BENEFIT_KIND_SICKNESS}},
		{demo.MovingParentID, "0751", []int32{1}, 0, []municipalityv1.BenefitKind{municipalityv1.BenefitKind_BENEFIT_KIND_CHILD}},
		{demo.LowEarnerID, "0461", nil, 0, []municipalityv1.BenefitKind{municipalityv1.BenefitKind_BENEFIT_KIND_HOUSING}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			_, rec := srv.Fetch(t, kittest.Request(tt.id, "services", "municipality_code", "schools.grade", "daycare.weekly_hours", "benefit_cases.kind"))
			s := rec.(*municipalityv1.Services)
			if s.GetMunicipalityCode() != tt.municipality || len(s.GetDaycare()) != tt.daycare || len(s.GetBenefitCases()) != len(tt.kinds) {
				t.Fatalf("services = %v", s)
			}
			for i, e := range s.GetSchools() {
				if e.GetGrade() != tt.grades[i] || e.GetSchoolName() != "" {
					t.Errorf("school %v, want grade %d only", e, tt.grades[i])
				}
			}
			for _, b := range s.GetBenefitCases() {
				if b.GetKind() != tt.kinds[0] || b.GetNotes() != "" || b.GetStatus() != "" {
					t.Errorf("benefit case %v, want kind %v only", b, tt.kinds[0])
				}
			}
		})
	}
}
