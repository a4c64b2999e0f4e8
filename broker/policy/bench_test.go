package policy_test

import (
	"testing"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
)

func BenchmarkLoadBundle(b *testing.B) {
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		b.Fatal(err)
	}
	descs := exampleDescriptors()
	for b.Loop() {
		if _, err := policy.LoadBundle(policies.Files(), reg, descs); err != nil {
			b.Fatal(err)
		}
	}
}
