package policy_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
	"github.com/aperture-gov/aperture/services/catalog"
)

// generated resolves datasets to their generated message types, as the authorities describe them.
type generated map[string]protoreflect.MessageDescriptor

func (g generated) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	md, ok := g[authority+"."+dataset]
	if !ok {
		return nil, fmt.Errorf("authority %q does not describe dataset %q", authority, dataset)
	}
	return md, nil
}

// exampleDescriptors describes every dataset of every authority in services/catalog, so that the tests
// know each authority an architect adds without being edited.
func exampleDescriptors() generated {
	g := generated{}
	for _, a := range catalog.Examples(nil) { // the lookups are never called
		for _, ds := range a.Datasets {
			g[a.ID+"."+ds.Name] = ds.Message.ProtoReflect().Descriptor()
		}
	}
	return g
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
