package release_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/release"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	"github.com/aperture-gov/aperture/policies"
	educationv1 "github.com/aperture-gov/aperture/proto/aperture/education/v1"
	employmentv1 "github.com/aperture-gov/aperture/proto/aperture/employment/v1"
	healthv1 "github.com/aperture-gov/aperture/proto/aperture/health/v1"
	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	taxv1 "github.com/aperture-gov/aperture/proto/aperture/tax/v1"
)

type generated map[string]protoreflect.MessageDescriptor

func (g generated) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	if md, ok := g[authority+"."+dataset]; ok {
		return md, nil
	}
	return nil, fmt.Errorf("no dataset %s.%s", authority, dataset)
}

func realBundle(t *testing.T) *policy.Bundle {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.LoadBundle(policies.Files(), reg, generated{
		"population.person":     (&populationv1.Person{}).ProtoReflect().Descriptor(),
		"tax.income":            (&taxv1.Income{}).ProtoReflect().Descriptor(),
		"health.patient":        (&healthv1.Patient{}).ProtoReflect().Descriptor(),
		"employment.history":    (&employmentv1.EmploymentHistory{}).ProtoReflect().Descriptor(),
		"municipality.services": (&municipalityv1.Services{}).ProtoReflect().Descriptor(),
		"education.enrolment":   (&educationv1.Enrolment{}).ProtoReflect().Descriptor(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecide covers each way the policy part of a release ends, on the real sickness-benefit journey.
func TestDecide(t *testing.T) {
	b := realBundle(t)
	j, _ := b.Journey("sickness-benefit")
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	atStep := func(n int) *cases.Case {
		c := cases.New(j, "1403871237", "pn", "municipality", b.Version, now)
		for _, s := range j.Steps[:n] {
			if err := c.Complete(s.ID, "cw", now); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	closed := atStep(len(j.Steps))
	tests := []struct {
		name         string
		c            *cases.Case
		agency       string
		req          release.Request
		kind         refusal.Kind // Internal means allowed
		reason       string
		step         string
		fields       []string
		needsConsent bool
	}{
		{"allowed", atStep(0), "municipality", release.Request{Authority: "population", Dataset: "person", Fields: []string{"name.given_names"}},
			refusal.Internal, "", "register-absence", []string{"name.given_names"}, false},
		{"agency not in the case", atStep(0), "tax", release.Request{Authority: "population", Dataset: "person"},
			refusal.PermissionDenied, `agency "tax" takes no part in case`, "", nil, false},
		{"not the step's agency", atStep(4), "municipality", release.Request{Authority: "population", Dataset: "person"},
			refusal.PermissionDenied, `is for agency "payments", not "municipality"`, "pay-benefit", nil, false},
		{"field not allowed", atStep(0), "municipality", release.Request{Authority: "population", Dataset: "person", Fields: []string{"civil_status"}},
			refusal.PermissionDenied, `field "civil_status" of population.person is not released`, "register-absence", nil, false},
		{"malformed path", atStep(0), "municipality", release.Request{Authority: "population", Dataset: "person", Fields: []string{"no_such"}},
			refusal.InvalidArgument, "no_such", "register-absence", nil, false},
		{"closed case", closed, "municipality", release.Request{Authority: "population", Dataset: "person"},
			refusal.FailedPrecondition, "is closed", "", nil, false},
		{"consent step", atStep(2), "municipality", release.Request{Authority: "health", Dataset: "patient"},
			refusal.Internal, "", "assess-work-capacity", []string{"sick_notes.expected_duration_days", "sick_notes.issued_on", "sick_notes.work_capacity_percent"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, ref := release.Decide(b, tc.c, tc.agency, tc.req)
			if tc.kind == refusal.Internal {
				if ref != nil {
					t.Fatalf("refused: %v", ref)
				}
				if strings.Join(d.Grant.Fields, ",") != strings.Join(tc.fields, ",") || d.NeedsConsent != tc.needsConsent {
					t.Fatalf("grant %v, needs consent %v", d.Grant.Fields, d.NeedsConsent)
				}
			} else if ref == nil || ref.Kind != tc.kind || !strings.Contains(ref.Reason, tc.reason) {
				t.Fatalf("got %v, want %v containing %q", ref, tc.kind, tc.reason)
			}
			if got := stepID(d.Step); got != tc.step {
				t.Fatalf("decision names step %q, want %q", got, tc.step)
			}
		})
	}
}

func stepID(s *policy.Step) string {
	if s == nil {
		return ""
	}
	return s.ID
}

func TestConsentRefusal(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	valid := &consent.Consent{GrantedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)}
	revokedAt := now.Add(-time.Minute)
	revoked := &consent.Consent{GrantedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour), RevokedAt: &revokedAt}
	expired := &consent.Consent{GrantedAt: now.Add(-48 * time.Hour), ExpiresAt: now.Add(-24 * time.Hour)}
	step := &policy.Step{ID: "s", Consent: &policy.Consent{DefaultDays: 30, MaxDays: 90}}
	// Stored for 365 days at a step that allows 90: not valid, though its expiry is far off.
	tooLong := &consent.Consent{GrantedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Hour).AddDate(0, 0, 365)}
	atMax := &consent.Consent{GrantedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Hour).Add(consent.MaxValidity(90))}
	for _, tc := range []struct {
		name   string
		cn     *consent.Consent
		err    error
		kind   refusal.Kind
		reason string
	}{
		{"valid", valid, nil, refusal.Internal, ""},
		{"exactly the policy maximum", atMax, nil, refusal.Internal, ""},
		{"longer than the policy maximum", tooLong, nil, refusal.FailedPrecondition, "longer than the policy allows (90 days)"},
		{"one second longer than the maximum", &consent.Consent{GrantedAt: atMax.GrantedAt, ExpiresAt: atMax.ExpiresAt.Add(time.Second)}, nil, refusal.FailedPrecondition, "longer than the policy allows"},
		{"forged or moved (reads as absent)", nil, fmt.Errorf("consent for j/s: %w: %w", consent.ErrNotFound, sealedkv.ErrUnauthentic), refusal.FailedPrecondition, "has not given it"},
		{"never given", nil, consent.ErrNotFound, refusal.FailedPrecondition, "has not given it"},
		{"revoked", revoked, nil, refusal.FailedPrecondition, "revoked consent"},
		{"expired", expired, nil, refusal.FailedPrecondition, "expired on 2026-11-22"},
		{"store down", nil, errors.New("kv timeout"), refusal.Unavailable, "consent state is unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := release.ConsentRefusal(tc.cn, tc.err, "j", step, now)
			if tc.kind == refusal.Internal {
				if ref != nil {
					t.Fatalf("refused: %v", ref)
				}
				return
			}
			if ref == nil || ref.Kind != tc.kind || !strings.Contains(ref.Reason, tc.reason) {
				t.Fatalf("got %v, want %v containing %q", ref, tc.kind, tc.reason)
			}
		})
	}
}
