package labels_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/kit/labels"
)

// A descriptor set decoded by a reader that does not know the label extensions keeps them as unknown
// option bytes; the labels are read from those all the same.
func TestLabelsSurviveAnUnawareDecoder(t *testing.T) {
	md := (&populationv1.Person{}).ProtoReflect().Descriptor()
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range []protoreflect.FileDescriptor{
		authorityv1.File_aperture_authority_v1_labels_proto.Imports().Get(0).FileDescriptor,
		authorityv1.File_aperture_authority_v1_labels_proto,
		md.ParentFile().Imports().Get(1).FileDescriptor,
		md.ParentFile(),
	} {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var decoded descriptorpb.FileDescriptorSet
	if err := (proto.UnmarshalOptions{Resolver: new(protoregistry.Types)}).Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&decoded)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName(md.FullName())
	if err != nil {
		t.Fatal(err)
	}
	got := d.(protoreflect.MessageDescriptor)
	fds, err := labels.Fields(got, "address.moved_in_on")
	if err != nil {
		t.Fatal(err)
	}
	want := labels.Field(md.Fields().ByName("address").Message().Fields().ByName("moved_in_on"))
	if l := labels.Field(fds[1]); !labels.Complete(l) || !proto.Equal(l, want) {
		t.Errorf("label of address.moved_in_on = %v, want %v", l, want)
	}
	if !proto.Equal(labels.Message(got), labels.Message(md)) || !labels.Complete(labels.Message(got)) {
		t.Errorf("dataset label = %v", labels.Message(got))
	}
	ev := labels.Enum(got.Fields().ByName("civil_status")).Values().Get(2)
	if l := labels.Value(ev); !labels.Complete(l) {
		t.Errorf("label of %s = %v", ev.Name(), l)
	}
	missing, err := labels.Missing(got, "civil_status")
	if err != nil || len(missing) != 0 {
		t.Errorf("Missing(civil_status) = %v, %v", missing, err)
	}
}

// Missing names every field on and below a path, and every enum value, that lacks a label, with the
// language it lacks; a bad path is an error.
func TestMissing(t *testing.T) {
	md := (&authorityv1.FetchRequest{}).ProtoReflect().Descriptor() // the contract itself has no labels
	got, err := labels.Missing(md, "context")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"field context (no English label, no Danish label)", "field context.access_id (no English label, no Danish label)"} {
		if !slices.Contains(got, want) {
			t.Errorf("Missing(context) lacks %q: %v", want, got)
		}
	}
	got, err = labels.Missing((&authorityv1.DescribeResponse{}).ProtoReflect().Descriptor(), "descriptors.file.syntax")
	if err == nil {
		t.Errorf("a path into a well-known type: %v, want an error", got)
	}
	if _, err := labels.Missing(md, "contxt"); err == nil || !strings.Contains(err.Error(), "context") {
		t.Errorf("misspelt path: %v", err)
	}
	got, err = labels.Missing((&auditv1.AccessRecord{}).ProtoReflect().Descriptor(), "decision")
	if err != nil || !slices.Contains(got, "enum value decision = DECISION_RELEASED (no English label, no Danish label)") {
		t.Errorf("Missing(decision) = %v, %v", got, err)
	}
	if labels.Complete(&authorityv1.Label{En: "Date of birth", Da: " "}) {
		t.Error("a label without Danish is complete")
	}
}
