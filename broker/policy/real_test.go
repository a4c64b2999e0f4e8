package policy_test

import (
	"io/fs"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/policy/policytest"
	"github.com/aperture-gov/aperture/policies"
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

// TestRealPolicyTests runs the policy tests beside the journeys (policies/tests): every request they
// make decided as the broker decides it, and the truth table of every derived fact evaluated as the
// authority evaluates it. A fact without a truth table fails here, so a new fact needs a policy test,
// not an edit of this one.
func TestRealPolicyTests(t *testing.T) {
	results, err := policytest.Run(policies.Files(), exampleDescriptors(), time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	facts := 0
	for _, r := range results {
		if !r.Pass {
			t.Errorf("%s:%d %s: %s\n  got:  %s\n  want: %s", r.File, r.Line, r.Journey, r.Name, r.Got, r.Problem)
		}
		if strings.Contains(r.Got, " = ") {
			facts++
		}
	}
	if facts == 0 {
		t.Error("no fact was evaluated")
	}
}
