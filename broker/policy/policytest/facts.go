package policytest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"buf.build/go/protoyaml"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/services/kit/derive"
)

// factRef is one derived fact of one step of a journey.
type factRef struct {
	journey, step string
	rule          *policy.Rule
	fact          *policy.Derived
}

func (f factRef) key() string { return f.journey + "/" + f.step + "/" + f.fact.Name }

// coverage records, per fact, the values its truth table expects.
type coverage map[string][]*structpb.Value

// findFact resolves a fact test's fact: by name within the journey, and by step when given.
func findFact(b *policy.Bundle, journey string, fc FactCase) ([]factRef, error) {
	j, ok := b.Journey(journey)
	if !ok {
		return nil, fmt.Errorf("journey %q is not in the policies", journey)
	}
	var refs []factRef
	for _, s := range j.Steps {
		if fc.Step != "" && s.ID != fc.Step {
			continue
		}
		for _, r := range s.Rules {
			for _, d := range r.Derived {
				if d.Name == fc.Fact {
					refs = append(refs, factRef{journey, s.ID, r, d})
				}
			}
		}
	}
	if len(refs) == 0 {
		where := "journey " + journey
		if fc.Step != "" {
			where = "step " + fc.Step + " of " + where
		}
		return nil, fmt.Errorf("no derived fact %q in %s", fc.Fact, where)
	}
	for _, r := range refs[1:] {
		if r.fact.Expression != refs[0].fact.Expression || r.rule.Message.FullName() != refs[0].rule.Message.FullName() {
			return nil, fmt.Errorf("steps %s and %s compute fact %q differently: name the step", refs[0].step, r.step, fc.Fact)
		}
	}
	return refs, nil
}

// newRecord returns an empty record of md: the generated type when this binary links it (what the
// authority holds), else a dynamic message of the described schema.
func newRecord(md protoreflect.MessageDescriptor) proto.Message {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil {
		return mt.New().Interface()
	}
	return dynamicpb.NewMessage(md)
}

// runFact evaluates one row of a truth table the way the authority does — derive.NewEnv over the
// dataset's schema, derive.Compile, derive.Eval over the full record — and checks the value against the
// row and against the fact's declared type.
func runFact(b *policy.Bundle, journey string, fc FactCase, now time.Time, cov coverage) (got, problem string) {
	refs, err := findFact(b, journey, fc)
	if err != nil {
		return "no such fact", err.Error()
	}
	ref := refs[0]
	rec := newRecord(ref.rule.Message)
	if fc.Record.Kind != 0 {
		data, err := yaml.Marshal(&fc.Record)
		if err != nil {
			return "bad record", err.Error()
		}
		if err := (protoyaml.UnmarshalOptions{Path: "record"}).Unmarshal(data, rec); err != nil {
			first, _, _ := strings.Cut(err.Error(), "\n")
			return "bad record", fmt.Sprintf("a record of %s (%s.%s): %s", ref.rule.Message.FullName(), ref.rule.Authority, ref.rule.Dataset, first)
		}
	}
	var want any
	if err := fc.Want.Decode(&want); err != nil {
		return "bad want", err.Error()
	}
	wantV, err := structpb.NewValue(want)
	if err != nil {
		return "bad want", fmt.Sprintf("want: %v", err)
	}
	for _, r := range refs {
		cov[r.key()] = append(cov[r.key()], wantV)
	}
	env, err := derive.NewEnv(ref.rule.Message)
	if err != nil {
		return "no environment", err.Error()
	}
	prg, err := derive.Compile(env, ref.fact.Expression)
	if err != nil {
		return "does not compile", err.Error()
	}
	v, err := derive.Eval(context.Background(), prg, rec, now)
	if err != nil {
		return "evaluation failed", err.Error()
	}
	got = fmt.Sprintf("%s = %s", fc.Fact, jsonText(v))
	switch {
	case !ref.fact.Type.Admits(v):
		return got, fmt.Sprintf("a value of the declared type %s (the broker would release nothing)", ref.fact.Type)
	case !proto.Equal(v, wantV):
		return got, fmt.Sprintf("%s = %s", fc.Fact, jsonText(wantV))
	}
	return got, ""
}

func jsonText(v *structpb.Value) string {
	b, err := protojson.Marshal(v)
	if err != nil {
		return v.String()
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// missing returns a failing result for every derived fact of the policies without a truth table:
// no row at all, or — for a bool — not both a true and a false row.
func (cov coverage) missing(b *policy.Bundle, fileOf map[string]string) []Result {
	var out []Result
	for _, j := range b.Journeys() {
		file := cmp.Or(fileOf[j.ID], "tests/"+j.ID+".yaml")
		for _, s := range j.Steps {
			for _, r := range s.Rules {
				for _, d := range r.Derived {
					ref := factRef{j.ID, s.ID, r, d}
					rows := cov[ref.key()]
					problem := ""
					switch {
					case len(rows) == 0:
						problem = fmt.Sprintf("a truth table: add rows for fact %q under facts: in %s", d.Name, file)
					case d.Type.Kind == policy.FactBool && !(slices.ContainsFunc(rows, isBool(true)) && slices.ContainsFunc(rows, isBool(false))):
						problem = fmt.Sprintf("a row where fact %q is true and one where it is false", d.Name)
					default:
						continue
					}
					out = append(out, Result{File: file, Journey: j.ID, Name: fmt.Sprintf("truth table of fact %s (step %s)", d.Name, s.ID),
						Got: fmt.Sprintf("%d rows", len(rows)), Problem: problem})
				}
			}
		}
	}
	return out
}

func isBool(b bool) func(*structpb.Value) bool {
	return func(v *structpb.Value) bool {
		x, ok := v.GetKind().(*structpb.Value_BoolValue)
		return ok && x.BoolValue == b
	}
}
