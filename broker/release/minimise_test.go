package release

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/aperture-gov/aperture/broker/policy"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
)

// TestMinimise covers what the broker forwards of an authority's answer: exactly-masked bytes pass
// through; anything more — a field outside the mask, bytes the schema does not know, even an explicitly
// encoded default value of a field outside the mask — is stripped and named as a violation.
func TestMinimise(t *testing.T) {
	md := (&populationv1.Person{}).ProtoReflect().Descriptor()
	rule := &policy.Rule{Authority: "population", Dataset: "person", Message: md, Fields: []string{"name.given_names"}}
	grant := policy.Grant{Rule: rule, Fields: rule.Fields}
	masked, _ := proto.Marshal(&populationv1.Person{Name: &populationv1.Name{GivenNames: "A"}})
	over, _ := proto.Marshal(&populationv1.Person{Name: &populationv1.Name{GivenNames: "A", FamilyName: "B"}, CivilStatus: populationv1.CivilStatus_CIVIL_STATUS_MARRIED})
	// civil_status (field 5) explicitly encoded as 0: decodes as "unset" but says the value is 0.
	explicitZero := protowire.AppendVarint(protowire.AppendTag(append([]byte{}, masked...), 5, protowire.VarintType), 0)
	unknown := protowire.AppendVarint(protowire.AppendTag(append([]byte{}, masked...), 99, protowire.VarintType), 7)

	for _, tc := range []struct {
		name           string
		value          []byte
		passThrough    bool
		wantViolations int
	}{
		{"exactly the mask", masked, true, 0},
		{"over-shared fields", over, false, 2},
		{"explicit default outside the mask", explicitZero, false, 0},
		{"unknown field", unknown, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &anypb.Any{TypeUrl: "type.googleapis.com/" + string(md.FullName()), Value: tc.value}
			out, violations, err := (&Service{}).minimise(rule, grant, &authorityv1.FetchResponse{Record: in})
			if err != nil {
				t.Fatal(err)
			}
			if (out == in) != tc.passThrough {
				t.Fatalf("pass-through = %v, want %v", out == in, tc.passThrough)
			}
			if len(violations) != tc.wantViolations {
				t.Fatalf("violations %v, want %d", violations, tc.wantViolations)
			}
			if string(out.GetValue()) != string(masked) {
				t.Fatalf("forwarded %x, want exactly the masked record %x", out.GetValue(), masked)
			}
		})
	}
}
