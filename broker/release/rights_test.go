package release_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/release"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

func TestSwitchRefusal(t *testing.T) {
	unverified := fmt.Errorf("switch for \"j\": %w: %w", switchoff.ErrUnverified, sealedkv.ErrUnauthentic)
	for _, tc := range []struct {
		name  string
		scope switchoff.Scope
		err   error
		kind  refusal.Kind // Internal: allowed
		why   auditv1.RefusalReason
	}{
		{"never switched", switchoff.ScopeNone, nil, refusal.Internal, 0},
		{"journey off", switchoff.ScopeJourney, nil, refusal.FailedPrecondition, auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF},
		{"step off", switchoff.ScopeStep, nil, refusal.FailedPrecondition, auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF},
		{"all off", switchoff.ScopeAll, nil, refusal.FailedPrecondition, auditv1.RefusalReason_REFUSAL_REASON_SWITCHED_OFF},
		{"forged, moved or replayed: refused, never released", switchoff.ScopeNone, unverified, refusal.FailedPrecondition, auditv1.RefusalReason_REFUSAL_REASON_SWITCH_UNVERIFIED},
		{"store down", switchoff.ScopeNone, errors.New("kv timeout"), refusal.Unavailable, auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := release.SwitchRefusal(tc.scope, tc.err, "j", "s")
			if tc.kind == refusal.Internal {
				if ref != nil {
					t.Fatalf("refused: %v", ref)
				}
				return
			}
			if ref == nil || ref.Kind != tc.kind || ref.Why != tc.why {
				t.Fatalf("got %v, want %v %v", ref, tc.kind, tc.why)
			}
		})
	}
}

// TestDecideBreakGlass: in the shipped policies, each break-glass rule releases exactly its fields to
// its agency at every step of an open case, and nothing to anyone or anything else.
func TestDecideBreakGlass(t *testing.T) {
	b := realBundle(t)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	n := 0
	for _, j := range b.Journeys() {
		for _, bg := range j.BreakGlass {
			rule := bg.Rules[0]
			req := release.BreakGlassRequest{Authority: rule.Authority, Dataset: rule.Dataset, ReasonCode: bg.Reasons[0].Code, Justification: strings.Repeat("x", release.MinJustification)}
			c := cases.New(j, "t", "0101901234", j.Steps[0].Agency, b.Version, now)
			for i := range j.Steps {
				d, ref := release.DecideBreakGlass(b, c, bg.Agency, req)
				if ref != nil || !equal(d.Grant.Fields, rule.Fields) {
					t.Errorf("%s at step %d: %v, %v", j.ID, i, d.Grant.Fields, ref)
				}
				n++
				if i+1 < len(j.Steps) {
					if err := c.Complete(j.Steps[i].ID, "t", now); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, a := range b.Registry.Agencies {
				if a.ID == bg.Agency {
					continue
				}
				if _, ref := release.DecideBreakGlass(b, c, a.ID, req); ref == nil || ref.Why != auditv1.RefusalReason_REFUSAL_REASON_BREAK_GLASS_NOT_ALLOWED {
					t.Errorf("%s: agency %s: %v, want BREAK_GLASS_NOT_ALLOWED", j.ID, a.ID, ref)
				}
			}
			bad := req
			bad.ReasonCode = "not-a-reason"
			if _, ref := release.DecideBreakGlass(b, c, bg.Agency, bad); ref == nil || ref.Kind != refusal.PermissionDenied {
				t.Errorf("unknown reason code: %v", ref)
			}
			short := req
			short.Justification = "help"
			if _, ref := release.DecideBreakGlass(b, c, bg.Agency, short); ref == nil || ref.Kind != refusal.InvalidArgument {
				t.Errorf("short justification: %v", ref)
			}
			if err := c.Complete(j.Steps[len(j.Steps)-1].ID, "t", now); err != nil {
				t.Fatal(err)
			}
			if _, ref := release.DecideBreakGlass(b, c, bg.Agency, req); ref == nil || ref.Why != auditv1.RefusalReason_REFUSAL_REASON_CASE_CLOSED {
				t.Errorf("closed case: %v", ref)
			}
		}
	}
	// Journeys without a rule: default deny for every agency.
	for _, j := range b.Journeys() {
		if len(j.BreakGlass) > 0 {
			continue
		}
		c := cases.New(j, "t", "0101901234", j.Steps[0].Agency, b.Version, now)
		for _, a := range b.Registry.Agencies {
			if _, ref := release.DecideBreakGlass(b, c, a.ID, release.BreakGlassRequest{ReasonCode: "x"}); ref == nil {
				t.Errorf("%s without a rule: agency %s allowed", j.ID, a.ID)
			}
		}
	}
	if n == 0 {
		t.Skip("the shipped policies have no break-glass rule")
	}
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }
