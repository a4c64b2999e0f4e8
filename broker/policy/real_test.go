package policy_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
	educationv1 "github.com/aperture-gov/aperture/proto/aperture/education/v1"
	employmentv1 "github.com/aperture-gov/aperture/proto/aperture/employment/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	taxv1 "github.com/aperture-gov/aperture/proto/aperture/tax/v1"
	"github.com/aperture-gov/aperture/services/kit/derive"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// TestRealPolicies checks the promises every shipped journey makes to citizens, beyond what the loader
// enforces for every policy. It names no journey or authority: what one journey releases is proved by
// its own policy tests (policies/tests), so that adding an authority or a journey edits no broker test.
func TestRealPolicies(t *testing.T) {
	b := loadReal(t)
	names, err := fs.Glob(policies.Files(), "journeys/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Journeys()) == 0 || len(b.Journeys()) != len(names) {
		t.Fatalf("%d journeys loaded from %d files", len(b.Journeys()), len(names))
	}
	for _, j := range b.Journeys() {
		if j.Title.DA == "" || j.Description.DA == "" {
			t.Errorf("%s: no Danish title or description", j.ID)
		}
		for _, s := range j.Steps {
			if s.Purpose.DA == "" || s.Title.DA == "" {
				t.Errorf("%s/%s: no Danish title or purpose", j.ID, s.ID)
			}
			for _, r := range s.Rules {
				for _, leaf := range fieldmask.Leaves(r.Message) {
					// A national identity number is never released: the agency already knows whose
					// case it is, and a CPR number is the key to every other register.
					if fieldmask.Covers(r.Fields, leaf) && strings.HasSuffix(leaf, "citizen_id") {
						t.Errorf("%s/%s releases %s.%s %s", j.ID, s.ID, r.Authority, r.Dataset, leaf)
					}
				}
				for _, d := range r.Derived {
					if d.Description.DA == "" {
						t.Errorf("%s/%s: fact %s has no Danish description", j.ID, s.ID, d.Name)
					}
				}
			}
			// Covert steps are bounded: hidden for at most 90 days, and the citizen is told why in
			// their own language when the accesses become visible.
			if s.Covert != nil && (s.Covert.MaxDays > 90 || s.Covert.Reason.DA == "") {
				t.Errorf("%s/%s: covert for %d days (reason in Danish: %q)", j.ID, s.ID, s.Covert.MaxDays, s.Covert.Reason.DA)
			}
		}
		if j.Steps[0].Consent != nil {
			t.Errorf("%s: the first step needs consent, so a case cannot start", j.ID)
		}
	}
}

// TestRealPoliciesWithDynamicDescriptors loads the policies against descriptors rebuilt from a
// serialized FileDescriptorSet, as the broker gets them from the authorities' Describe answers.
func TestRealPoliciesWithDynamicDescriptors(t *testing.T) {
	gen := exampleDescriptors()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, md := range gen {
		add(md.ParentFile())
	}
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var back descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&back)
	if err != nil {
		t.Fatal(err)
	}
	dyn := generated{}
	for key, md := range gen {
		d, err := files.FindDescriptorByName(md.FullName())
		if err != nil {
			t.Fatal(err)
		}
		dyn[key] = d.(protoreflect.MessageDescriptor)
		if dyn[key] == md {
			t.Fatal("descriptor is the generated one")
		}
	}
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.LoadBundle(policies.Files(), reg, dyn)
	if err != nil {
		t.Fatalf("policies with dynamic descriptors:\n%v", err)
	}
	if b.Version != loadReal(t).Version {
		t.Error("the version depends on the descriptors")
	}
}

// TestRealDerivedFactsEvaluate evaluates every derived fact of the real policies over example records,
// as an authority would, and checks the answers for records built to be on either side of each fact.
func TestRealDerivedFactsEvaluate(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	day := func(y int, m time.Month, d int) *timestamppb.Timestamp {
		return timestamppb.New(time.Date(y, m, d, 0, 0, 0, 0, time.UTC))
	}
	months := func(gross ...int64) *taxv1.Income {
		in := &taxv1.Income{AssessedAnnualIncomeDkk: 950000}
		for i, g := range gross {
			in.Months = append(in.Months, &taxv1.MonthlyIncome{PeriodStart: day(2026, time.March-time.Month(i), 1), GrossDkk: g})
		}
		return in
	}
	child := func(born int) *populationv1.HouseholdMember {
		return &populationv1.HouseholdMember{Relation: populationv1.Relation_RELATION_CHILD, BirthDate: day(born, 6, 1)}
	}
	spouse := &populationv1.HouseholdMember{Relation: populationv1.Relation_RELATION_SPOUSE, BirthDate: day(1988, 1, 1)}
	cases := map[string][]struct {
		record proto.Message
		want   any
	}{
		"earned_above_threshold_6_of_12": {
			{months(25000, 25000, 25000, 25000, 25000, 25000), true},
			{months(25000, 25000, 25000, 25000, 25000, 19999), false},
			// Six good months, but the oldest is more than a year ago.
			{months(25000, 0, 0, 0, 0, 0, 0, 0, 0, 25000, 25000, 25000, 25000, 25000), false},
		},
		"income_reported_last_3_months": {
			{months(0, 0, 5000), true},
			// December 1st is more than 3 months (2190h) before March 10th.
			{months(0, 0, 0, 5000), false},
			{months(), false},
		},
		"income_above_reduction_threshold": {
			{&taxv1.Income{AssessedAnnualIncomeDkk: 903601}, true},
			{&taxv1.Income{AssessedAnnualIncomeDkk: 903600}, false},
		},
		"currently_employed": {
			{&employmentv1.EmploymentHistory{Employments: []*employmentv1.Employment{{StartDate: day(2020, 1, 1)}}}, true},
			{&employmentv1.EmploymentHistory{Employments: []*employmentv1.Employment{{StartDate: day(2020, 1, 1), EndDate: day(2026, 6, 30)}}}, true},
			{&employmentv1.EmploymentHistory{Employments: []*employmentv1.Employment{{StartDate: day(2020, 1, 1), EndDate: day(2025, 12, 31)}}}, false},
			{&employmentv1.EmploymentHistory{}, false},
		},
		"has_school_age_children": {
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{spouse, child(2018)}}, true},
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{spouse, child(2022)}}, false},
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{child(2008)}}, false},
		},
		"has_preschool_children": {
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{spouse, child(2022)}}, true},
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{spouse, child(2018)}}, false},
		},
		"receives_special_needs_support": {
			{&educationv1.Enrolment{Children: []*educationv1.ChildEnrolment{{Grade: 3}, {Grade: 1, SpecialNeedsSupport: true}}}, true},
			{&educationv1.Enrolment{Children: []*educationv1.ChildEnrolment{{Grade: 3}}}, false},
			{&educationv1.Enrolment{}, false},
		},
		"lives_alone_with_children": {
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{child(2026)}}, true},
			{&populationv1.Person{Household: []*populationv1.HouseholdMember{spouse, child(2026)}}, false},
			{&populationv1.Person{}, false},
		},
	}
	b := loadReal(t)
	evaluated := map[string]bool{}
	for _, j := range b.Journeys() {
		for _, s := range j.Steps {
			for _, r := range s.Rules {
				env, err := derive.NewEnv(r.Message)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range r.Derived {
					tcs, ok := cases[d.Name]
					if !ok {
						t.Errorf("%s/%s: derived fact %q has no test records", j.ID, s.ID, d.Name)
						continue
					}
					prg, err := derive.Compile(env, d.Expression)
					if err != nil {
						t.Fatal(err)
					}
					for i, tc := range tcs {
						got, err := derive.Eval(context.Background(), prg, tc.record, now)
						if err != nil {
							t.Errorf("%s #%d: %v", d.Name, i, err)
							continue
						}
						if got.AsInterface() != tc.want {
							t.Errorf("%s #%d = %v, want %v", d.Name, i, got.AsInterface(), tc.want)
						}
					}
					evaluated[d.Name] = true
				}
			}
		}
	}
	for name := range cases {
		if !evaluated[name] {
			t.Errorf("derived fact %q is not in the policies", name)
		}
	}
}
