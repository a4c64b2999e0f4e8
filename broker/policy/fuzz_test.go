package policy_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
)

// FuzzLoadJourney loads random YAML as a journey: the loader never panics, and every finding names
// the file it is in.
func FuzzLoadJourney(f *testing.F) {
	names, err := fs.Glob(policies.Files(), "journeys/*.yaml")
	if err != nil || len(names) == 0 {
		f.Fatalf("no journeys to seed from: %v", err)
	}
	for _, name := range names {
		data, err := fs.ReadFile(policies.Files(), name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.Replace(string(data), "id: "+strings.TrimSuffix(strings.TrimPrefix(name, "journeys/"), ".yaml"), "id: fuzz", 1))
	}
	f.Add(header + step)
	f.Add("")
	f.Add("- [")
	f.Add("steps: *a")
	f.Add("a: &a [*a]")
	f.Add("steps:\n  - releases:\n      - derived:\n          - expression: \"record.\"\n")
	regData, err := fs.ReadFile(policies.Files(), "registry.yaml")
	if err != nil {
		f.Fatal(err)
	}
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		f.Fatal(err)
	}
	descs := exampleDescriptors()
	f.Fuzz(func(t *testing.T, journey string) {
		fsys := fstest.MapFS{"registry.yaml": {Data: regData}, "journeys/fuzz.yaml": {Data: []byte(journey)}}
		b, err := policy.LoadBundle(fsys, reg, descs)
		if err == nil {
			if _, ok := b.Journey("fuzz"); !ok {
				t.Fatal("loaded without the journey")
			}
			return
		}
		var le *policy.LoadError
		if !errors.As(err, &le) || len(le.Findings) == 0 {
			t.Fatalf("error %v is not a LoadError with findings", err)
		}
		for _, fd := range le.Findings {
			if fd.File != "journeys/fuzz.yaml" || fd.Message == "" || strings.Contains(fd.Message, "\n") {
				t.Fatalf("finding %#v", fd)
			}
		}
	})
}

// FuzzLoadRegistry does the same for the registry.
func FuzzLoadRegistry(f *testing.F) {
	data, err := fs.ReadFile(policies.Files(), "registry.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(data))
	f.Add(registryBase)
	f.Add("authorities: {}")
	f.Fuzz(func(t *testing.T, registry string) {
		_, err := policy.LoadRegistry(fstest.MapFS{"registry.yaml": {Data: []byte(registry)}}, "registry.yaml")
		if err == nil {
			return
		}
		var le *policy.LoadError
		if !errors.As(err, &le) || len(le.Findings) == 0 {
			t.Fatalf("error %v is not a LoadError with findings", err)
		}
		for _, fd := range le.Findings {
			if fd.File != "registry.yaml" || fd.Message == "" {
				t.Fatalf("finding %#v", fd)
			}
		}
	})
}
