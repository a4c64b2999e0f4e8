package fieldmask_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"", ".", "address", "address.city", "adress.cty", "birth_date.seconds",
		"household.relation", "household..relation", "a.b.c.d.e.f.g.h.i", "previous_addresses.moved_in_on"} {
		f.Add(s)
	}
	mds := append(fieldmaskMDs(), recursiveMD(f))
	f.Fuzz(func(t *testing.T, path string) {
		for _, md := range mds {
			err := fieldmask.Validate(md, path)
			if err != nil && !strings.Contains(err.Error(), "field path") {
				t.Errorf("error %q does not name the path", err)
			}
			// A valid path covers at least one leaf, or lies under one (never both empty).
			if err == nil {
				leaves := fieldmask.Leaves(md)
				found := fieldmask.Covers(leaves, path)
				for _, l := range leaves {
					if fieldmask.Covers([]string{path}, l) {
						found = true
						break
					}
				}
				if !found {
					t.Errorf("valid path %q of %s covers no leaf", path, md.FullName())
				}
			}
		}
	})
}

func FuzzApply(f *testing.F) {
	f.Add("address.city,household.relation")
	f.Add("sick_notes.issued_on,gp")
	f.Add("benefit_cases.status,schools")
	f.Add("birth_date.seconds,citizen_id.x")
	f.Add("")
	f.Add(",,.,address..city")
	f.Fuzz(func(t *testing.T, joined string) {
		paths := strings.Split(joined, ",")
		for _, mk := range []func() proto.Message{
			func() proto.Message { return person() },
			func() proto.Message { return services() },
			func() proto.Message { return patient() },
		} {
			m := mk()
			projected := m.ProtoReflect().New()
			fieldmask.Project(projected, mk().ProtoReflect(), paths)
			_ = fieldmask.Extra(m.ProtoReflect(), paths)
			fieldmask.Apply(m.ProtoReflect(), paths)
			if extra := fieldmask.Extra(m.ProtoReflect(), paths); len(extra) != 0 {
				t.Fatalf("Extra after Apply(%q) = %q", paths, extra)
			}
			if !proto.Equal(projected.Interface(), m) {
				t.Fatalf("Project(%q) differs from Apply", paths)
			}
			once := proto.Clone(m)
			fieldmask.Apply(m.ProtoReflect(), paths)
			if !proto.Equal(once, m) {
				t.Fatalf("Apply(%q) is not idempotent", paths)
			}
			// Normalizing the paths does not change the result.
			n := mk()
			fieldmask.Apply(n.ProtoReflect(), fieldmask.Normalize(paths))
			if !proto.Equal(n, m) {
				t.Fatalf("Apply(Normalize(%q)) differs from Apply", paths)
			}
		}
	})
}
