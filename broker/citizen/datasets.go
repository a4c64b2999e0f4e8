package citizen

import (
	"context"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/refusal"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
	"github.com/aperture-gov/aperture/services/kit/labels"
)

// maxLabelDepth stops the walk of a self-referencing record type, as field masks do.
const maxLabelDepth = 8

// ListDatasets implements CitizenService: every registry dataset with the labels its authority
// declared in the schema it described, so that a reader sees names, not field paths and constants.
func (s *Service) ListDatasets(ctx context.Context, _ *citizenv1.ListDatasetsRequest) (*citizenv1.ListDatasetsResponse, error) {
	if _, err := citizenOf(ctx); err != nil {
		return nil, err
	}
	b := s.cfg.Policies()
	n := names{b}
	resp := &citizenv1.ListDatasetsResponse{}
	for _, a := range b.Registry.Authorities {
		for _, ds := range a.Datasets {
			md, err := s.cfg.Authorities.Dataset(a.ID, ds)
			if err != nil {
				return nil, refusal.Wrap(refusal.Unavailable, err, "the schema of %s.%s is unavailable", a.ID, ds)
			}
			resp.Datasets = append(resp.Datasets, &citizenv1.DatasetLabels{
				Authority: n.authority(a.ID),
				Dataset:   ds,
				Label:     labelText(labels.Message(md)),
				Fields:    fieldLabels(md, "", 0, nil),
			})
		}
	}
	return resp, nil
}

// fieldLabels lists the fields of md and below, in field-number order, parents first.
func fieldLabels(md protoreflect.MessageDescriptor, prefix string, depth int, out []*citizenv1.FieldLabel) []*citizenv1.FieldLabel {
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		fl := &citizenv1.FieldLabel{
			Path:  prefix + string(fd.Name()),
			Label: labelText(labels.Field(fd)),
			Kind:  fieldKind(fd),
			List:  fd.IsList() || fd.IsMap(),
		}
		if ed := labels.Enum(fd); ed != nil {
			vals := ed.Values()
			for j := range vals.Len() {
				ev := vals.Get(j)
				fl.Values = append(fl.Values, &citizenv1.ValueLabel{Name: string(ev.Name()), Label: labelText(labels.Value(ev))})
			}
		}
		out = append(out, fl)
		if fl.Kind == citizenv1.FieldKind_FIELD_KIND_RECORD && depth+1 < maxLabelDepth {
			out = fieldLabels(recordOf(fd), fl.Path+".", depth+1, out)
		}
	}
	return out
}

func recordOf(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	if fd.IsMap() {
		return fd.MapValue().Message()
	}
	return fd.Message()
}

// fieldKind is what fd holds (its values, for a list or map).
func fieldKind(fd protoreflect.FieldDescriptor) citizenv1.FieldKind {
	if fd.IsMap() {
		fd = fd.MapValue()
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return citizenv1.FieldKind_FIELD_KIND_BOOL
	case protoreflect.EnumKind:
		return citizenv1.FieldKind_FIELD_KIND_ENUM
	case protoreflect.StringKind, protoreflect.BytesKind:
		return citizenv1.FieldKind_FIELD_KIND_TEXT
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		switch {
		case md.FullName() == "google.protobuf.Timestamp":
			return citizenv1.FieldKind_FIELD_KIND_TIME
		case fieldmask.IsWellKnown(md):
			return citizenv1.FieldKind_FIELD_KIND_TEXT
		default:
			return citizenv1.FieldKind_FIELD_KIND_RECORD
		}
	default:
		return citizenv1.FieldKind_FIELD_KIND_NUMBER
	}
}

func labelText(l *authorityv1.Label) *citizenv1.Text {
	if l == nil {
		return nil
	}
	return &citizenv1.Text{En: l.GetEn(), Da: l.GetDa()}
}
