package policy_test

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
)

// TestParentalCustodyRegister: the registry's custody register must name an authority and dataset of
// the registry, and a field of the dataset's schema shaped as the broker reads it; anything else is a
// finding, not a broker that silently lets no parent act. The cases are made from the real registry.
func TestParentalCustodyRegister(t *testing.T) {
	reg := loadReal(t).Registry
	pc := reg.ParentalCustody
	if pc == nil {
		t.Fatal("the example registry names no parental_custody register")
	}
	md, err := exampleDescriptors().Dataset(pc.Authority, pc.Dataset)
	if err != nil {
		t.Fatal(err)
	}
	var scalar string // a field of the dataset that is not a list of children
	for i := range md.Fields().Len() {
		if f := md.Fields().Get(i); !f.IsList() {
			scalar = string(f.Name())
			break
		}
	}
	data, err := fs.ReadFile(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	block := "parental_custody:\n  authority: " + pc.Authority + "\n  dataset: " + pc.Dataset + "\n  field: " + pc.Field + "\n"
	if !strings.Contains(string(data), block) {
		t.Fatalf("the registry's parental_custody block is not in the expected form:\n%s", block)
	}
	for _, tc := range []struct{ name, with, want string }{
		{"unknown authority", strings.Replace(block, "authority: "+pc.Authority, "authority: nowhere", 1), `authority "nowhere" is not in the registry`},
		{"unknown dataset", strings.Replace(block, "dataset: "+pc.Dataset, "dataset: nothing", 1), `serves no dataset "nothing"`},
		{"unknown field", strings.Replace(block, "field: "+pc.Field, "field: no_such_field", 1), `has no repeated message field "no_such_field"`},
		{"not a list", strings.Replace(block, "field: "+pc.Field, "field: "+scalar, 1), `has no repeated message field "` + scalar + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{"registry.yaml": {Data: []byte(strings.Replace(string(data), block, tc.with, 1))}}
			for name, f := range loadRealJourneys(t) {
				fsys[name] = f
			}
			r, err := policy.LoadRegistry(fsys, "registry.yaml")
			if err == nil {
				_, err = policy.LoadBundle(fsys, r, exampleDescriptors())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// loadRealJourneys are the real journey files, by path.
func loadRealJourneys(t *testing.T) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(policies.Files(), "journeys", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(policies.Files(), path)
		out[path] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
