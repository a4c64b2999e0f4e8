package policy_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
	educationv1 "github.com/aperture-gov/aperture/proto/aperture/education/v1"
	employmentv1 "github.com/aperture-gov/aperture/proto/aperture/employment/v1"
	healthv1 "github.com/aperture-gov/aperture/proto/aperture/health/v1"
	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	taxv1 "github.com/aperture-gov/aperture/proto/aperture/tax/v1"
)

// generated resolves the example datasets to their generated message types, as the example
// authorities describe them.
type generated map[string]protoreflect.MessageDescriptor

func (g generated) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	md, ok := g[authority+"."+dataset]
	if !ok {
		return nil, fmt.Errorf("authority %q does not describe dataset %q", authority, dataset)
	}
	return md, nil
}

func exampleDescriptors() generated {
	return generated{
		"population.person":     (&populationv1.Person{}).ProtoReflect().Descriptor(),
		"tax.income":            (&taxv1.Income{}).ProtoReflect().Descriptor(),
		"health.patient":        (&healthv1.Patient{}).ProtoReflect().Descriptor(),
		"employment.history":    (&employmentv1.EmploymentHistory{}).ProtoReflect().Descriptor(),
		"municipality.services": (&municipalityv1.Services{}).ProtoReflect().Descriptor(),
		"education.enrolment":   (&educationv1.Enrolment{}).ProtoReflect().Descriptor(),
	}
}

// loadReal loads the real policy tree.
func loadReal(t testing.TB) *policy.Bundle {
	t.Helper()
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatalf("registry:\n%v", err)
	}
	b, err := policy.LoadBundle(policies.Files(), reg, exampleDescriptors())
	if err != nil {
		t.Fatalf("policies:\n%v", err)
	}
	return b
}

func mustLoadReal() *policy.Bundle {
	reg, err := policy.LoadRegistry(policies.Files(), "registry.yaml")
	if err != nil {
		panic(err)
	}
	b, err := policy.LoadBundle(policies.Files(), reg, exampleDescriptors())
	if err != nil {
		panic(err)
	}
	return b
}
