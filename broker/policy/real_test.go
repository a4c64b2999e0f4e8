package policy_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// TestRealPolicies checks the promises the real policies make to citizens, beyond what the loader
// enforces for every policy.
func TestRealPolicies(t *testing.T) {
	b := loadReal(t)
	var ids []string
	for _, j := range b.Journeys() {
		ids = append(ids, j.ID)
	}
	if want := []string{"moving-house", "new-child", "sickness-benefit"}; !slices.Equal(ids, want) {
		t.Fatalf("journeys %v, want %v", ids, want)
	}

	usedAuthorities := map[string]bool{}
	for _, j := range b.Journeys() {
		authorities := map[string]bool{}
		for _, s := range j.Steps {
			if s.Purpose.DA == "" || s.Title.DA == "" {
				t.Errorf("%s/%s: no Danish title or purpose", j.ID, s.ID)
			}
			for _, r := range s.Rules {
				authorities[r.Authority] = true
				usedAuthorities[r.Authority] = true
				for _, leaf := range fieldmask.Leaves(r.Message) {
					if !fieldmask.Covers(r.Fields, leaf) {
						continue
					}
					// Diagnoses (GDPR art. 9) and CPR numbers are never released; a caseworker's notes
					// are internal to the municipality.
					if leaf == "sick_notes.diagnosis_code" || strings.HasSuffix(leaf, "citizen_id") || leaf == "benefit_cases.notes" {
						t.Errorf("%s/%s releases %s.%s %s", j.ID, s.ID, r.Authority, r.Dataset, leaf)
					}
				}
			}
		}
		if len(j.Steps) < 3 || len(authorities) < 3 {
			t.Errorf("%s: %d steps across %d authorities, want at least 3 and 3", j.ID, len(j.Steps), len(authorities))
		}
		if j.Steps[0].Consent != nil {
			t.Errorf("%s: the first step needs consent, so a case cannot start", j.ID)
		}
	}
	for _, a := range b.Registry.Authorities {
		if !usedAuthorities[a.ID] {
			t.Errorf("no journey uses authority %q", a.ID)
		}
	}

	j, _ := b.Journey("sickness-benefit")
	first := j.Steps[0]
	if first.Agency != "municipality" || first.Consent != nil || len(first.Rules) == 0 || len(first.Rules[0].Fields) == 0 {
		t.Errorf("sickness-benefit must open at the municipality, without consent, releasing fields: %+v", first)
	}
	if _, ok := first.Rule("health", "patient"); ok {
		t.Error("sickness-benefit releases health data at its first step")
	}
	if last := j.Steps[len(j.Steps)-1]; last.Agency == "municipality" {
		t.Error("sickness-benefit: the last step should be another agency's (payments)")
	}
	s, _, ok := j.Step("assess-work-capacity")
	if !ok {
		t.Fatal("sickness-benefit has no step assess-work-capacity")
	}
	if s.Agency != "municipality" || s.Consent == nil || *s.Consent != (policy.Consent{DefaultDays: 30, MaxDays: 90}) {
		t.Errorf("assess-work-capacity: agency %q consent %+v", s.Agency, s.Consent)
	}
	r, ok := s.Rule("health", "patient")
	if want := []string{"sick_notes.expected_duration_days", "sick_notes.issued_on", "sick_notes.work_capacity_percent"}; !ok || !slices.Equal(r.Fields, want) {
		t.Errorf("assess-work-capacity releases %v, want %v", r, want)
	}
	var threshold *policy.Derived
	for _, s := range j.Steps {
		if r, ok := s.Rule("tax", "income"); ok {
			if len(r.Fields) > 0 {
				t.Errorf("sickness-benefit/%s releases raw income fields %v", s.ID, r.Fields)
			}
			for _, d := range r.Derived {
				if d.Name == "earned_above_threshold_6_of_12" {
					threshold = d
				}
			}
		}
	}
	if threshold == nil || !strings.Contains(threshold.Expression, "m.gross_dkk >= 20000") {
		t.Errorf("sickness-benefit: threshold fact %+v", threshold)
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
