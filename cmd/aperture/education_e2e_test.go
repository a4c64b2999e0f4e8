package main

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestEducationAuthorityEndToEnd releases data of the sixth authority, added as the guide
// services/ADDING_AN_AUTHORITY.md describes (proto/aperture/education, services/education listed in
// services/catalog, its registry entry and journeys/school-change.yaml). The broker learns the
// dataset's schema from the authority's Describe and decides with the policy alone: no broker code
// knows about education.
func TestEducationAuthorityEndToEnd(t *testing.T) {
	ts := newTestStack(t)
	citizen := ts.Population.Featured()[1].ID // Sofie: her son Oscar is in grade 1 at Trøjborg Skole
	md, err := ts.Broker.Descriptors().Dataset("education", "enrolment")
	if err != nil {
		t.Fatalf("the broker does not know the education dataset: %v", err)
	}
	c := ts.open("municipality", "school-change", citizen)
	client := ts.agency("municipality")
	release := func(fields ...string) (*brokerv1.ReleaseResponse, error) {
		return client.Release(cw("cw-edu"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: "education", Dataset: "enrolment", Fields: fields})
	}

	resp, err := release()
	if err != nil {
		t.Fatalf("release education.enrolment: %v", err)
	}
	rec := decode(t, md, resp)
	children := rec.Get(md.Fields().ByName("children")).List()
	if children.Len() != 1 {
		t.Fatalf("%d children enrolled, want 1", children.Len())
	}
	child := children.Get(0).Message()
	cmd := child.Descriptor()
	got := map[string]protoreflect.Value{}
	child.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		got[string(fd.Name())] = v
		return true
	})
	if got["school_name"].String() != "Trøjborg Skole" || got["grade"].Int() != 1 || got["school_id"].String() == "" {
		t.Errorf("released child enrolment %v", child)
	}
	for _, private := range []protoreflect.Name{"marks", "special_needs_support", "child_citizen_id"} {
		if child.Has(cmd.Fields().ByName(private)) {
			t.Errorf("field %s was released", private)
		}
	}

	// The marks are refused whole, by name; the support needs a later step and the parents' consent.
	_, err = release("children.grade", "children.marks.mark")
	wantCode(t, err, codes.PermissionDenied, "children.marks.mark", "education.enrolment")
	if _, err := client.CompleteStep(cw("cw-edu"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: "find-school-place"}); err != nil {
		t.Fatal(err)
	}
	_, err = release()
	wantCode(t, err, codes.FailedPrecondition, "consent")
	ts.grantConsent(citizen, "school-change", "continue-support")
	resp, err = release()
	if err != nil {
		t.Fatalf("release with consent: %v", err)
	}
	if len(resp.GetDerived()) != 1 || resp.GetDerived()[0].GetName() != "receives_special_needs_support" {
		t.Fatalf("derived facts %v", resp.GetDerived())
	}
	if _, ok := resp.GetDerived()[0].GetValue().GetKind().(*structpb.Value_BoolValue); !ok {
		t.Errorf("fact value %v is not a bool", resp.GetDerived()[0].GetValue())
	}
	if n := decode(t, md, resp).Get(md.Fields().ByName("children")).List().Len(); n != 0 {
		t.Errorf("the consent step released %d children's records; it releases only the fact", n)
	}

	// Every decision is in the citizen's access log, with field paths only.
	var released, refused int
	for _, r := range ts.accessRecords(citizen) {
		if r.GetAuthority() != "education" {
			continue
		}
		switch r.GetDecision() {
		case auditv1.Decision_DECISION_RELEASED:
			released++
		case auditv1.Decision_DECISION_REFUSED:
			refused++
		}
	}
	if released != 2 || refused != 2 {
		t.Errorf("access log: %d education releases and %d refusals, want 2 and 2", released, refused)
	}
}
