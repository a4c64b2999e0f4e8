package education_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	educationv1 "github.com/aperture-gov/aperture/proto/aperture/education/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/education"
	"github.com/aperture-gov/aperture/services/kit/kittest"
)

// TestEnrolment fetches through the kit over mTLS, as the broker does: a parent's children with their
// school and grade, marks only when the mask asks for them, and NotFound for an unknown citizen.
func TestEnrolment(t *testing.T) {
	pop := demo.New(30, time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC))
	srv := kittest.Start(t, education.New(pop))
	sofie := pop.Featured()[1]
	tests := []struct {
		name  string
		paths []string
		check func(*educationv1.Enrolment) bool
	}{
		{"school and grade", []string{"children.school_name", "children.grade"}, func(e *educationv1.Enrolment) bool {
			return len(e.GetChildren()) == 1 && e.GetChildren()[0].GetSchoolName() == "Trøjborg Skole" &&
				e.GetChildren()[0].GetGrade() == 1 && len(e.GetChildren()[0].GetMarks()) == 0 && e.GetCitizenId() == ""
		}},
		{"marks only when asked", []string{"children.marks.mark"}, func(e *educationv1.Enrolment) bool {
			return len(e.GetChildren()) == 1 && len(e.GetChildren()[0].GetMarks()) == 3 && e.GetChildren()[0].GetSchoolName() == ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rec := srv.Fetch(t, kittest.Request(sofie.ID, "enrolment", tc.paths...))
			e, ok := rec.(*educationv1.Enrolment)
			if !ok || !tc.check(e) {
				t.Fatalf("record %v", rec)
			}
		})
	}
	_, err := srv.Client.Fetch(context.Background(), kittest.Request("3112999999", "enrolment"))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown citizen: %v, want NotFound", err)
	}
}
