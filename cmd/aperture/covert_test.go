package main

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestCovertStepHidesAccesses drives the benefit-control journey: at its covert step every access is
// logged at once with a hidden-until time (the step's maximum unless the caseworker asks for less) and
// the policy's reason; asking to hide longer than the maximum, or at a step that is not covert, is
// refused and logged; a hidden-until time in the past is bad input and changes nothing.
func TestCovertStepHidesAccesses(t *testing.T) {
	ts := newTestStack(t)
	citizen := ts.Population.Featured()[2].ID
	c := ts.open("municipality", "benefit-control", citizen)
	mun := ts.agency("municipality")
	release := func(hidden *time.Time) (*brokerv1.ReleaseResponse, error) {
		req := &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "tax", Dataset: "income"}
		if hidden != nil {
			req.HiddenUntil = timestamppb.New(*hidden)
		}
		return mun.Release(cw("cw-ctl-9"), req)
	}
	at := func(d time.Duration) *time.Time { t := time.Now().Add(d); return &t }
	const day = 24 * time.Hour

	byID := func(id string) *auditv1.AccessRecord {
		t.Helper()
		for _, r := range ts.accessRecords(citizen) {
			if r.GetId() == id {
				return r
			}
		}
		t.Fatalf("access %s is not in the log", id)
		return nil
	}
	near := func(got *timestamppb.Timestamp, want time.Time) bool {
		d := got.AsTime().Sub(want)
		return d > -time.Minute && d < time.Minute
	}

	def, err := release(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := byID(def.GetAccessId()); !near(r.GetHiddenUntil(), time.Now().Add(90*day)) || r.GetHiddenReason() == "" {
		t.Errorf("default: hidden until %v, reason %q; want 90 days and the policy's reason", r.GetHiddenUntil().AsTime(), r.GetHiddenReason())
	}
	short, err := release(at(10 * day))
	if err != nil {
		t.Fatal(err)
	}
	if r := byID(short.GetAccessId()); !near(r.GetHiddenUntil(), time.Now().Add(10*day)) {
		t.Errorf("asked 10 days: hidden until %v", r.GetHiddenUntil().AsTime())
	}

	before := len(ts.accessRecords(citizen))
	_, err = release(at(-time.Hour))
	wantCode(t, err, codes.InvalidArgument, "hidden_until must be in the future")
	if n := len(ts.accessRecords(citizen)); n != before {
		t.Errorf("bad input was logged: %d records, want %d", n, before)
	}

	_, err = release(at(200 * day))
	wantCode(t, err, codes.PermissionDenied, "at most 90 days")
	recs := ts.accessRecords(citizen)
	if r := recs[0]; r.GetDecision() != auditv1.Decision_DECISION_REFUSED || !near(r.GetHiddenUntil(), time.Now().Add(90*day)) {
		t.Errorf("over-long hiding: newest record %v hidden until %v; want a refusal hidden for the maximum", r.GetDecision(), r.GetHiddenUntil().AsTime())
	}

	if _, err := mun.CompleteStep(cw("cw-ctl-9"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: "check-reported-income"}); err != nil {
		t.Fatal(err)
	}
	_, err = mun.Release(cw("cw-ctl-9"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "population", Dataset: "person", HiddenUntil: timestamppb.New(*at(day))})
	wantCode(t, err, codes.PermissionDenied, "not covert")
	recs = ts.accessRecords(citizen)
	if r := recs[0]; r.GetDecision() != auditv1.Decision_DECISION_REFUSED || r.GetHiddenUntil() != nil || r.GetStep() != "hear-the-citizen" {
		t.Errorf("hiding at an open step: newest record %v step %q hidden until %v; want a visible refusal", r.GetDecision(), r.GetStep(), r.GetHiddenUntil())
	}
	open, err := mun.Release(cw("cw-ctl-9"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "population", Dataset: "person"})
	if err != nil {
		t.Fatal(err)
	}
	if r := byID(open.GetAccessId()); r.GetHiddenUntil() != nil || r.GetHiddenReason() != "" {
		t.Errorf("open step access is hidden: %v", r)
	}
}
