package employment_test

import (
	"testing"
	"time"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	employmentv1 "github.com/aperture-gov/aperture/proto/aperture/employment/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/employment"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
)

// The employment test of the sickness benefit journey: in a job that started over 26 weeks ago.
const employed26Weeks = `record.employments.exists(e, !has(e.end_date) && e.start_date < now - duration("4368h"))`

func TestHistory(t *testing.T) {
	pop := demo.New(50, time.Now())
	srv := kittest.Start(t, employment.New(pop), kit.WithClock(func() time.Time { return pop.Ref().AddDate(0, 0, 5) }))
	tests := []struct {
		id       string
		employer string
		reports  int
	}{
		{demo.SickEmployeeID, "Nordhavn Logistik ApS", 1},
		{demo.MovingParentID, "Friskolen Lindely", 0},
		{demo.LowEarnerID, "Dagligvarehuset Torvet A/S", 0},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			req := kittest.Request(tt.id, "history", "employments.employer_name", "employments.weekly_hours", "sick_leave_reports.first_sick_day")
			req.Derived = []*authorityv1.DerivedExpression{{Name: "employed_over_26_weeks", Expression: employed26Weeks}}
			resp, rec := srv.Fetch(t, req)
			h := rec.(*employmentv1.EmploymentHistory)
			if !resp.GetDerived()[0].GetValue().GetBoolValue() {
				t.Error("not employed for over 26 weeks")
			}
			if e := h.GetEmployments()[0]; e.GetEmployerName() != tt.employer || e.GetWeeklyHours() == 0 || e.GetStartDate() != nil {
				t.Errorf("employment %v, want %s without start date", e, tt.employer)
			}
			if len(h.GetSickLeaveReports()) != tt.reports {
				t.Fatalf("%d sick-leave reports, want %d", len(h.GetSickLeaveReports()), tt.reports)
			}
			for _, r := range h.GetSickLeaveReports() {
				if r.GetFirstSickDay() == nil || r.GetEmployerId() != "" {
					t.Errorf("report %v, want only first_sick_day", r)
				}
			}
		})
	}
}
