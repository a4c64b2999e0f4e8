package release

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aperture-gov/aperture/broker/policy"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
)

// TestMatchDerivedChecksDeclaredType: a fact outside its declared type (an int out of range, a string
// outside an enum, a string where a bool was declared) is not released, nor is a missing fact.
func TestMatchDerivedChecksDeclaredType(t *testing.T) {
	types := map[string]policy.FactType{
		"bool":  {Kind: policy.FactBool},
		"int":   {Kind: policy.FactInt, Min: 0, Max: 3},
		"enum":  {Kind: policy.FactEnum, Values: []string{"diesel", "electric"}},
		"str":   {Kind: policy.FactString},
		"rec":   {Kind: policy.FactRecord},
		"other": {Kind: policy.FactBool},
	}
	list, _ := structpb.NewList([]any{"a"})
	for _, tc := range []struct {
		name, fact string
		value      *structpb.Value
		ok         bool
	}{
		{"bool", "bool", structpb.NewBoolValue(true), true},
		{"bool given a string", "bool", structpb.NewStringValue("true"), false},
		{"int in range", "int", structpb.NewNumberValue(3), true},
		{"int above range", "int", structpb.NewNumberValue(4), false},
		{"int not whole", "int", structpb.NewNumberValue(1.5), false},
		{"enum value", "enum", structpb.NewStringValue("electric"), true},
		{"not an enum value", "enum", structpb.NewStringValue("AB 12 345"), false},
		{"string", "str", structpb.NewStringValue("AB 12 345"), true},
		{"record", "rec", structpb.NewListValue(list), true},
		{"record given a bool", "rec", structpb.NewBoolValue(true), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &policy.Derived{Name: tc.fact, Type: types[tc.fact]}
			grant := policy.Grant{Derived: []*policy.Derived{d}}
			facts, extra, err := matchDerived(grant, []*authorityv1.DerivedValue{
				{Name: tc.fact, Value: tc.value}, {Name: "other", Value: structpb.NewBoolValue(false)},
			})
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				if strings.Contains(err.Error(), tc.value.String()) {
					t.Errorf("error %q quotes the value", err)
				}
				return
			}
			if len(facts) != 1 || facts[0].GetName() != tc.fact || len(extra) != 1 || extra[0] != "derived:other" {
				t.Fatalf("facts %v, extra %v", facts, extra)
			}
		})
	}
	if _, _, err := matchDerived(policy.Grant{Derived: []*policy.Derived{{Name: "bool", Type: types["bool"]}}}, nil); err == nil {
		t.Fatal("a missing fact was not an error")
	}
}

// TestShownAnswers: the answers kept for the citizen are those of bool facts whose policy shows them,
// with the value the authority computed; an int fact's value and a fact the policy hides are not kept.
func TestShownAnswers(t *testing.T) {
	grant := policy.Grant{Derived: []*policy.Derived{
		{Name: "yes", Type: policy.FactType{Kind: policy.FactBool}, CitizenSeesAnswer: true},
		{Name: "no", Type: policy.FactType{Kind: policy.FactBool}, CitizenSeesAnswer: true},
		{Name: "hidden", Type: policy.FactType{Kind: policy.FactBool}, CitizenSeesAnswer: false},
		{Name: "count", Type: policy.FactType{Kind: policy.FactInt, Max: 9}, CitizenSeesAnswer: true},
	}}
	facts, _, err := matchDerived(grant, []*authorityv1.DerivedValue{
		{Name: "yes", Value: structpb.NewBoolValue(true)}, {Name: "no", Value: structpb.NewBoolValue(false)},
		{Name: "hidden", Value: structpb.NewBoolValue(true)}, {Name: "count", Value: structpb.NewNumberValue(3)},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := shownAnswers(grant, facts)
	if len(got) != 2 || !got["yes"] || got["no"] {
		t.Fatalf("shownAnswers = %v, want yes: true, no: false", got)
	}
	if _, ok := got["no"]; !ok {
		t.Fatal("a false answer was not kept")
	}
}
