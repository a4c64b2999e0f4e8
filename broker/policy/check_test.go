package policy_test

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
)

// checkJourney is the journey the Check tests decide on: a fixture, so that a change to a shipped
// journey is proved by its own policy tests and never breaks these.
const checkJourney = `id: check-fixture
title: {en: Fixture}
description: {en: A journey for tests.}
steps:
  - id: register-absence
    title: {en: Register}
    agency: municipality
    role: caseworker
    purpose: {en: Because.}
    legal_basis: Testloven § 1
    releases:
      - dataset: employment.history
        fields: [employments.employer_name, employments.start_date]
        derived:
          - name: currently_employed
            description: {en: Employed.}
            type: bool
            expression: record.employments.exists(e, !has(e.end_date) || e.end_date > now)
      - dataset: population.person
        fields: [name.given_names]
  - id: check-employment-requirement
    title: {en: Check}
    agency: municipality
    role: caseworker
    purpose: {en: Because.}
    legal_basis: Testloven § 2
    releases:
      - dataset: tax.income
        derived:
          - name: earned_above_threshold_6_of_12
            description: {en: Earned.}
            type: bool
            expression: record.months.filter(m, m.gross_dkk >= 20000).size() >= 6
  - id: assess-work-capacity
    title: {en: Assess}
    agency: municipality
    role: caseworker
    purpose: {en: Because.}
    legal_basis: Testloven § 3
    consent: {required: true, default_days: 30, max_days: 90}
    releases:
      - dataset: health.patient
        fields: [sick_notes.issued_on, sick_notes.expected_duration_days, sick_notes.work_capacity_percent]
`

// checkFixture loads checkJourney against the shipped registry and the catalog's schemas.
func checkFixture() (*policy.Journey, error) {
	reg, err := fs.ReadFile(policies.Files(), "registry.yaml")
	if err != nil {
		return nil, err
	}
	fsys := fstest.MapFS{"registry.yaml": {Data: reg}, "journeys/check-fixture.yaml": {Data: []byte(checkJourney)}}
	r, err := policy.LoadRegistry(fsys, "registry.yaml")
	if err != nil {
		return nil, err
	}
	b, err := policy.LoadBundle(fsys, r, exampleDescriptors())
	if err != nil {
		return nil, err
	}
	j, _ := b.Journey("check-fixture")
	return j, nil
}

func TestCheck(t *testing.T) {
	j, err := checkFixture()
	if err != nil {
		t.Fatal(err)
	}
	assess, _, _ := j.Step("assess-work-capacity")
	register, _, _ := j.Step("register-absence")
	eligibility, _, _ := j.Step("check-employment-requirement")
	tests := []struct {
		name               string
		step               *policy.Step
		authority, dataset string
		fields, derived    []string
		wantErr            error
		wantMsg            string
		wantFields         []string
		wantDerived        []string
	}{
		{
			name: "nothing named: everything allowed", step: assess, authority: "health", dataset: "patient",
			wantFields: []string{"sick_notes.expected_duration_days", "sick_notes.issued_on", "sick_notes.work_capacity_percent"},
		},
		{
			name: "a subset", step: assess, authority: "health", dataset: "patient",
			fields:     []string{"sick_notes.work_capacity_percent", "sick_notes.issued_on", "sick_notes.issued_on"},
			wantFields: []string{"sick_notes.issued_on", "sick_notes.work_capacity_percent"},
		},
		{
			name: "diagnosis refused", step: assess, authority: "health", dataset: "patient",
			fields:  []string{"sick_notes.issued_on", "sick_notes.diagnosis_code"},
			wantErr: policy.ErrNotAllowed,
			wantMsg: `field "sick_notes.diagnosis_code" of health.patient is not released at step "assess-work-capacity" of journey "check-fixture"`,
		},
		{
			name: "parent of allowed paths refused", step: assess, authority: "health", dataset: "patient",
			fields: []string{"sick_notes"}, wantErr: policy.ErrNotAllowed,
			wantMsg: `field "sick_notes" of health.patient is not released at step "assess-work-capacity" of journey "check-fixture"`,
		},
		{
			name: "dataset not in step", step: register, authority: "health", dataset: "patient",
			wantErr: policy.ErrDatasetNotAllowed,
			wantMsg: `dataset health.patient is not released at step "register-absence" of journey "check-fixture"`,
		},
		{
			name: "typo is invalid, not refused", step: assess, authority: "health", dataset: "patient",
			fields: []string{"sick_notes.diagnosis_code", "sick_notes.isued_on"}, wantErr: policy.ErrInvalidPath,
			wantMsg: `health.patient: field path "sick_notes.isued_on": no field "isued_on" in aperture.health.v1.SickNote (did you mean "issued_on"?)`,
		},
		{
			name: "malformed path", step: assess, authority: "health", dataset: "patient",
			fields: []string{"sick_notes..issued_on"}, wantErr: policy.ErrInvalidPath,
			wantMsg: `health.patient: field path "sick_notes..issued_on": empty segment`,
		},
		{
			name: "derived only", step: eligibility, authority: "tax", dataset: "income",
			derived: []string{"earned_above_threshold_6_of_12"}, wantFields: []string{},
			wantDerived: []string{"earned_above_threshold_6_of_12"},
		},
		{
			name: "raw income refused where only the fact is released", step: eligibility, authority: "tax", dataset: "income",
			fields: []string{"months.gross_dkk"}, wantErr: policy.ErrNotAllowed,
			wantMsg: `field "months.gross_dkk" of tax.income is not released at step "check-employment-requirement" of journey "check-fixture"`,
		},
		{
			name: "unknown derived fact", step: eligibility, authority: "tax", dataset: "income",
			derived: []string{"earned_above_threshold_6_of_12", "annual_income"}, wantErr: policy.ErrNotAllowed,
			wantMsg: `derived fact "annual_income" of tax.income is not released at step "check-employment-requirement" of journey "check-fixture"`,
		},
		{
			name: "fields without the facts", step: register, authority: "employment", dataset: "history",
			fields: []string{"employments.employer_name"}, wantFields: []string{"employments.employer_name"},
		},
		{
			name: "facts without the fields", step: register, authority: "employment", dataset: "history",
			derived: []string{"currently_employed", "currently_employed"}, wantFields: []string{}, wantDerived: []string{"currently_employed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := tt.step.Check(tt.authority, tt.dataset, tt.fields, tt.derived)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Check = %v, want %v", err, tt.wantErr)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("Check error\n%q\nwant\n%q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.Rule == nil || g.Rule.Authority != tt.authority || g.Rule.Dataset != tt.dataset {
				t.Errorf("grant rule %+v", g.Rule)
			}
			if !slices.Equal(g.Fields, tt.wantFields) {
				t.Errorf("fields %q, want %q", g.Fields, tt.wantFields)
			}
			var names []string
			for _, d := range g.Derived {
				names = append(names, d.Name)
			}
			want := tt.wantDerived
			if tt.fields == nil && tt.derived == nil {
				for _, d := range g.Rule.Derived {
					want = append(want, d.Name)
				}
			}
			if !slices.Equal(names, want) {
				t.Errorf("derived %q, want %q", names, want)
			}
		})
	}
}

// A grant must not alias the policy: a caller that appends to it cannot widen the rule.
func TestGrantDoesNotAliasRule(t *testing.T) {
	j, err := checkFixture()
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := j.Step("assess-work-capacity")
	g, err := s.Check("health", "patient", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Fields[0] = "sick_notes.diagnosis_code"
	r, _ := s.Rule("health", "patient")
	if slices.Contains(r.Fields, "sick_notes.diagnosis_code") {
		t.Fatal("changing a grant changed the rule")
	}
}

// TestLookups finds what the registry and the bundle hold, whatever the shipped policies contain.
func TestLookups(t *testing.T) {
	b := loadReal(t)
	reg := b.Registry
	for _, want := range reg.Authorities {
		if a, ok := reg.Authority(want.ID); !ok || a != want || a.Address == "" || len(a.Datasets) == 0 {
			t.Errorf("Authority(%s) = %+v, %v", want.ID, a, ok)
		}
	}
	if _, ok := reg.Authority("nope"); ok {
		t.Error("Authority(nope) found")
	}
	for _, want := range reg.Agencies {
		if a, ok := reg.Agency(want.ID); !ok || a != want || a.Name.In("da") == "" {
			t.Errorf("Agency(%s) = %+v, %v", want.ID, a, ok)
		}
		if a, ok := reg.AgencyByIdentity(want.Identity); !ok || a != want {
			t.Errorf("AgencyByIdentity(%s) = %+v, %v", want.Identity, a, ok)
		}
		if _, ok := reg.AuditorByIdentity(want.Identity); ok {
			t.Errorf("agency %s is an auditor", want.ID)
		}
	}
	if len(reg.Auditors) == 0 {
		t.Fatal("no auditors in the registry")
	}
	for _, want := range reg.Auditors {
		if a, ok := reg.AuditorByIdentity(want.Identity); !ok || a != want {
			t.Errorf("AuditorByIdentity(%s) = %+v, %v", want.Identity, a, ok)
		}
		if _, ok := reg.AgencyByIdentity(want.Identity); ok {
			t.Errorf("auditor %s is an agency", want.ID)
		}
	}
	for _, id := range []string{"", reg.Authorities[0].Identity} {
		if _, ok := reg.AgencyByIdentity(id); ok {
			t.Errorf("AgencyByIdentity(%q) found an agency", id)
		}
	}
	if _, ok := b.Journey("nope"); ok {
		t.Error("Journey(nope) found")
	}
	for _, want := range b.Journeys() {
		j, ok := b.Journey(want.ID)
		if !ok || j != want || j.File != "journeys/"+j.ID+".yaml" {
			t.Fatalf("Journey(%s) = %+v", want.ID, j)
		}
		last := len(j.Steps) - 1
		if s, i, ok := j.Step(j.Steps[last].ID); !ok || i != last || s != j.Steps[last] {
			t.Errorf("Step = %v, %d, %v", s, i, ok)
		}
		if _, i, ok := j.Step("nope"); ok || i != -1 {
			t.Errorf("Step(nope) = %d, %v", i, ok)
		}
	}
	js := b.Journeys()
	js[0] = nil
	if b.Journeys()[0] == nil {
		t.Error("Journeys returns the bundle's own slice")
	}
}

func TestTextIn(t *testing.T) {
	for _, tt := range []struct {
		text       policy.Text
		lang, want string
	}{
		{policy.Text{EN: "Moving house", DA: "Flytning"}, "da", "Flytning"},
		{policy.Text{EN: "Moving house", DA: "Flytning"}, "en", "Moving house"},
		{policy.Text{EN: "Moving house"}, "da", "Moving house"},
		{policy.Text{EN: "Moving house", DA: "Flytning"}, "de", "Moving house"},
	} {
		if got := tt.text.In(tt.lang); got != tt.want {
			t.Errorf("%+v.In(%q) = %q, want %q", tt.text, tt.lang, got, tt.want)
		}
	}
}

// The refusal a caseworker sees when asking for a diagnosis.
func ExampleStep_Check() {
	j, err := checkFixture()
	if err != nil {
		panic(err)
	}
	step, _, _ := j.Step("assess-work-capacity")
	_, err = step.Check("health", "patient", []string{"sick_notes.diagnosis_code"}, nil)
	fmt.Println(err)
	fmt.Println(errors.Is(err, policy.ErrNotAllowed))
	// Output:
	// field "sick_notes.diagnosis_code" of health.patient is not released at step "assess-work-capacity" of journey "check-fixture"
	// true
}
