package citizen_test

import (
	"context"

	"testing"

	"google.golang.org/grpc/codes"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestListDatasets: every dataset of the registry is named, and every field path a journey releases
// has a label in English and Danish, read from the schema the authority described; an enum field
// names each of its values. It is derived from the policies, so a new authority is checked as well.
func TestListDatasets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	_, err := c.ListDatasets(context.Background(), &citizenv1.ListDatasetsRequest{})
	wantCode(t, err, codes.Unauthenticated)

	res, err := c.ListDatasets(as(tokAnna), &citizenv1.ListDatasetsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]*citizenv1.FieldLabel{}
	for _, d := range res.GetDatasets() {
		key := d.GetAuthority().GetId() + "." + d.GetDataset()
		if d.GetLabel().GetEn() == "" || d.GetLabel().GetDa() == "" || d.GetAuthority().GetName().GetEn() == "" {
			t.Errorf("dataset %s: label %v, authority %v", key, d.GetLabel(), d.GetAuthority())
		}
		got[key] = map[string]*citizenv1.FieldLabel{}
		for _, f := range d.GetFields() {
			got[key][f.GetPath()] = f
		}
	}
	b := e.b.Bundle()
	for _, a := range b.Registry.Authorities {
		for _, ds := range a.Datasets {
			if got[a.ID+"."+ds] == nil {
				t.Errorf("dataset %s.%s is not listed", a.ID, ds)
			}
		}
	}
	released := 0
	for _, j := range b.Journeys() {
		for _, st := range j.Steps {
			for _, r := range st.Rules {
				for _, path := range r.Fields {
					released++
					f := got[r.Authority+"."+r.Dataset][path]
					if f.GetLabel().GetEn() == "" || f.GetLabel().GetDa() == "" || f.GetKind() == citizenv1.FieldKind_FIELD_KIND_UNSPECIFIED {
						t.Errorf("%s: step %s releases %s.%s %s, listed as %v", j.ID, st.ID, r.Authority, r.Dataset, path, f)
					}
					if f.GetKind() == citizenv1.FieldKind_FIELD_KIND_ENUM {
						if len(f.GetValues()) == 0 {
							t.Errorf("enum field %s.%s %s lists no values", r.Authority, r.Dataset, path)
						}
						for _, v := range f.GetValues() {
							if v.GetName() == "" || v.GetLabel().GetEn() == "" || v.GetLabel().GetDa() == "" {
								t.Errorf("enum field %s.%s %s: value %v", r.Authority, r.Dataset, path, v)
							}
						}
					}
				}
			}
		}
	}
	if released == 0 {
		t.Fatal("no journey releases a field: the test checks nothing")
	}
}
