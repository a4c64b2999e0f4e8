// Package labels reads the citizen-facing display names an authority declares in its protos
// (aperture.authority.v1 message_label, field_label and value_label options): the names of its
// datasets, of their fields and of their enum values, in English and Danish. The options travel with
// the descriptors an authority sends in Describe, so the broker reads them from there; tools read them
// from the generated types. Nothing here holds citizen data.
package labels

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// Complete reports whether l names its thing in every language the citizen can read.
func Complete(l *authorityv1.Label) bool {
	return strings.TrimSpace(l.GetEn()) != "" && strings.TrimSpace(l.GetDa()) != ""
}

// Message returns the label of a dataset or nested record; nil when it has none.
func Message(md protoreflect.MessageDescriptor) *authorityv1.Label {
	return option(md.Options(), authorityv1.E_MessageLabel)
}

// Field returns the label of a field; nil when it has none.
func Field(fd protoreflect.FieldDescriptor) *authorityv1.Label {
	return option(fd.Options(), authorityv1.E_FieldLabel)
}

// Value returns the label of an enum value; nil when it has none.
func Value(ev protoreflect.EnumValueDescriptor) *authorityv1.Label {
	return option(ev.Options(), authorityv1.E_ValueLabel)
}

// option reads one label extension from descriptor options. Options decoded without the extension
// known to the decoder (a descriptor set parsed by a program that does not link this package) keep it
// as unknown bytes: those are decoded again with the extension registered.
func option(opts proto.Message, xt protoreflect.ExtensionType) *authorityv1.Label {
	if opts == nil || !opts.ProtoReflect().IsValid() {
		return nil
	}
	if proto.HasExtension(opts, xt) {
		l, _ := proto.GetExtension(opts, xt).(*authorityv1.Label)
		return l
	}
	raw := opts.ProtoReflect().GetUnknown()
	if len(raw) == 0 {
		return nil
	}
	again := opts.ProtoReflect().New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(raw, again); err != nil {
		return nil
	}
	if !proto.HasExtension(again, xt) {
		return nil
	}
	l, _ := proto.GetExtension(again, xt).(*authorityv1.Label)
	return l
}

// Fields resolves a field path of md ("address.municipality_code") to the field of each segment, as
// fieldmask.Validate does: through singular and repeated message fields and map values.
func Fields(md protoreflect.MessageDescriptor, path string) ([]protoreflect.FieldDescriptor, error) {
	if err := fieldmask.Validate(md, path); err != nil {
		return nil, err
	}
	var out []protoreflect.FieldDescriptor
	cur := md
	for seg := range strings.SplitSeq(path, ".") {
		fd := cur.Fields().ByName(protoreflect.Name(seg))
		out = append(out, fd)
		if fd.IsMap() {
			cur = fd.MapValue().Message()
		} else {
			cur = fd.Message()
		}
	}
	return out, nil
}

// Enum returns the enum a field holds (also as a list element or map value); nil for other fields.
func Enum(fd protoreflect.FieldDescriptor) protoreflect.EnumDescriptor {
	if fd.IsMap() {
		return fd.MapValue().Enum()
	}
	return fd.Enum()
}

// Missing lists what a citizen would read as a field path or an enum constant when a policy releases
// path of md: every field on the path without a complete label, and, when the path ends in an enum or
// a record, every enum value and field below it without one. Each entry names the field path or the
// enum value ("civil_status = CIVIL_STATUS_MARRIED") and the languages it lacks.
func Missing(md protoreflect.MessageDescriptor, path string) ([]string, error) {
	fds, err := Fields(md, path)
	if err != nil {
		return nil, err
	}
	var out []string
	prefix := ""
	for _, fd := range fds {
		prefix += string(fd.Name())
		if l := Field(fd); !Complete(l) {
			out = append(out, fmt.Sprintf("field %s (%s)", prefix, lacking(l)))
		}
		prefix += "."
	}
	below(fds[len(fds)-1], path, 0, &out)
	return out, nil
}

// below adds what lacks a label under fd: its enum values, or the fields of the record it holds.
func below(fd protoreflect.FieldDescriptor, path string, depth int, out *[]string) {
	if ed := Enum(fd); ed != nil {
		vals := ed.Values()
		for i := range vals.Len() {
			ev := vals.Get(i)
			if l := Value(ev); !Complete(l) {
				*out = append(*out, fmt.Sprintf("enum value %s = %s (%s)", path, ev.Name(), lacking(l)))
			}
		}
		return
	}
	md := fd.Message()
	if fd.IsMap() {
		md = fd.MapValue().Message()
	}
	if md == nil || fieldmask.IsWellKnown(md) || depth >= 8 {
		return
	}
	fields := md.Fields()
	for i := range fields.Len() {
		sub := fields.Get(i)
		p := path + "." + string(sub.Name())
		if l := Field(sub); !Complete(l) {
			*out = append(*out, fmt.Sprintf("field %s (%s)", p, lacking(l)))
		}
		below(sub, p, depth+1, out)
	}
}

func lacking(l *authorityv1.Label) string {
	var no []string
	if strings.TrimSpace(l.GetEn()) == "" {
		no = append(no, "no English label")
	}
	if strings.TrimSpace(l.GetDa()) == "" {
		no = append(no, "no Danish label")
	}
	return strings.Join(no, ", ")
}
