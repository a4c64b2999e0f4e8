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
	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

type generated map[string]protoreflect.MessageDescriptor

func (g generated) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	if md, ok := g[authority+"."+dataset]; ok {
		return md, nil
	}
	return nil, fmt.Errorf("no dataset %s.%s", authority, dataset)
}

// realBundle loads the shipped policies against every authority in services/catalog.
func realBundle(t *testing.T) *policy.Bundle {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := generated{}
	for _, a := range catalog.Examples(nil) { // the lookups are never called
		for _, ds := range a.Datasets {
			g[a.ID+"."+ds.Name] = ds.Message.ProtoReflect().Descriptor()
		}
	}
	b, err := policy.LoadBundle(policies.Files(), reg, g)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decideCase is one request at one step of a journey and how Decide must end.
type decideCase struct {
	name         string
	c            *cases.Case
	agency       string
	req          release.Request
	kind         refusal.Kind // Internal means allowed
	reason       string
	step         string
	fields       []string
	needsConsent bool
}

// decideCases finds, in the shipped policies, an example of every way the policy part of a release
// ends. It names no journey, authority or field: the examples are whatever the policies hold, so the
// test holds for any policy set that has each kind of step.
func decideCases(t *testing.T, b *policy.Bundle, now time.Time) map[string]decideCase {
	out := map[string]decideCase{}
	add := func(tc decideCase) {
		if _, ok := out[tc.name]; !ok {
			out[tc.name] = tc
		}
	}
	for _, j := range b.Journeys() {
		atStep := func(n int) *cases.Case {
			c := cases.New(j, "1403871237", "pn", j.Steps[0].Agency, b.Version, now)
			for _, s := range j.Steps[:n] {
				if err := c.Complete(s.ID, "cw", now); err != nil {
					t.Fatal(err)
				}
			}
			return c
		}
		involved := map[string]bool{}
		for _, s := range j.Steps {
			involved[s.Agency] = true
		}
		for i, s := range j.Steps {
			for _, r := range s.Rules {
				req := func(fields ...string) release.Request {
					return release.Request{Authority: r.Authority, Dataset: r.Dataset, Fields: fields}
				}
				ds := r.Authority + "." + r.Dataset
				if len(r.Fields) > 0 {
					add(decideCase{"allowed", atStep(i), s.Agency, req(r.Fields[0]), refusal.Internal, "", s.ID, r.Fields[:1], s.Consent != nil})
					add(decideCase{"malformed path", atStep(i), s.Agency, req("no_such_field_anywhere"), refusal.InvalidArgument, "no_such_field_anywhere", s.ID, nil, s.Consent != nil})
				}
				for _, leaf := range fieldmask.Leaves(r.Message) {
					if !fieldmask.Covers(r.Fields, leaf) {
						add(decideCase{"field not allowed", atStep(i), s.Agency, req(leaf), refusal.PermissionDenied,
							fmt.Sprintf("field %q of %s is not released", leaf, ds), s.ID, nil, s.Consent != nil})
						break
					}
				}
				if s.Consent != nil {
					add(decideCase{"consent step", atStep(i), s.Agency, req(), refusal.Internal, "", s.ID, r.Fields, true})
				}
				for _, a := range b.Registry.Agencies {
					if !involved[a.ID] {
						add(decideCase{"agency not in the case", atStep(i), a.ID, req(), refusal.PermissionDenied,
							fmt.Sprintf("agency %q takes no part in case", a.ID), "", nil, false})
						break
					}
				}
				for _, other := range j.Steps {
					if other.Agency != s.Agency {
						add(decideCase{"not the step's agency", atStep(i), other.Agency, req(), refusal.PermissionDenied,
							fmt.Sprintf("is for agency %q, not %q", s.Agency, other.Agency), s.ID, nil, s.Consent != nil})
						break
					}
				}
				add(decideCase{"closed case", atStep(len(j.Steps)), s.Agency, req(), refusal.FailedPrecondition, "is closed", "", nil, false})
			}
		}
	}
	return out
}

// TestDecide covers each way the policy part of a release ends, on the shipped journeys.
func TestDecide(t *testing.T) {
	b := realBundle(t)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tests := decideCases(t, b, now)
	for _, name := range []string{"allowed", "agency not in the case", "not the step's agency", "field not allowed", "malformed path", "closed case", "consent step"} {
		if _, ok := tests[name]; !ok {
			t.Errorf("the shipped policies have no example of %q", name)
		}
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
