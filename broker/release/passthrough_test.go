package release

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/aperture-gov/aperture/broker/policy"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"

	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// datasets are the message types of every dataset in the catalog.
func datasets() []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	for _, a := range catalog.Examples(nil) {
		for _, ds := range a.Datasets {
			out = append(out, ds.Message.ProtoReflect().Descriptor())
		}
	}
	return out
}

// fill sets random fields of m, nested up to depth.
func fill(rng *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if rng.IntN(2) == 0 || fd.ContainingOneof() != nil && rng.IntN(2) == 0 {
			continue
		}
		switch {
		case fd.IsMap():
			if depth <= 0 {
				continue
			}
			mp := m.Mutable(fd).Map()
			for range rng.IntN(3) {
				k := scalar(rng, fd.MapKey()).MapKey()
				if fd.MapValue().Message() != nil {
					v := mp.NewValue()
					fill(rng, v.Message(), depth-1)
					mp.Set(k, v)
				} else {
					mp.Set(k, scalar(rng, fd.MapValue()))
				}
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range rng.IntN(3) {
				if fd.Message() != nil {
					if depth <= 0 {
						break
					}
					v := l.NewElement()
					fill(rng, v.Message(), depth-1)
					l.Append(v)
				} else {
					l.Append(scalar(rng, fd))
				}
			}
		case fd.Message() != nil:
			if depth > 0 {
				fill(rng, m.Mutable(fd).Message(), depth-1)
			}
		default:
			m.Set(fd, scalar(rng, fd))
		}
	}
}

func scalar(rng *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	n := rng.Int64N(5) - 1
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(n > 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n + 1))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(n * math.MaxInt32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n + 1))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n) / 2)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n) / 3)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString([]string{"", "a", "Nørgaard", "x.y", "0"}[n+1])
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{byte(n)})
	}
	panic(fd.Kind())
}

// mutate damages b now and then: a byte changed, cut short, or a field appended.
func mutate(rng *rand.Rand, b []byte) []byte {
	b = slices.Clone(b)
	switch rng.IntN(6) {
	case 0:
		if len(b) > 0 {
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
		}
	case 1:
		if len(b) > 0 {
			b = b[:rng.IntN(len(b))]
		}
	case 2:
		b = protowire.AppendTag(b, protowire.Number(rng.IntN(20)+1), protowire.Type(rng.IntN(6)))
		b = protowire.AppendVarint(b, uint64(rng.IntN(3)))
	case 3:
		b = protowire.AppendTag(b, protowire.Number(rng.IntN(20)+1), protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0xff, 0xfe})
	}
	return b
}

// TestExactlyMaskedImpliesNoExtra holds the wire-level fast path to the slow path's judgement: over
// random records of every catalog dataset, random masks and damaged encodings, whenever exactlyMasked
// says the bytes can be forwarded as they are, the decoded record has no field outside the mask
// (fieldmask.Extra) and no unknown field, and decoding succeeds.
func TestExactlyMaskedImpliesNoExtra(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	fast := 0
	for _, md := range datasets() {
		leaves := fieldmask.Leaves(md)
		for range 3000 {
			m := dynamicpb.NewMessage(md)
			fill(rng, m, 3)
			b, err := proto.MarshalOptions{Deterministic: rng.IntN(2) == 0}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if rng.IntN(3) == 0 {
				b = mutate(rng, b)
			}
			var mask []string
			for _, l := range leaves {
				if rng.IntN(3) > 0 {
					mask = append(mask, l)
				}
			}
			if rng.IntN(4) == 0 { // a covering parent path instead of its leaves
				mask = append(mask, string(md.Fields().Get(rng.IntN(md.Fields().Len())).Name()))
			}
			if !exactlyMasked(md, b, mask) {
				continue
			}
			fast++
			got := dynamicpb.NewMessage(md)
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatalf("%s: fast path took bytes that do not decode (%v)", md.FullName(), err)
			}
			if extra := fieldmask.Extra(got, mask); len(extra) > 0 {
				t.Fatalf("%s: fast path took a record with %v outside the mask %v", md.FullName(), extra, mask)
			}
			if hasUnknown(got) {
				t.Fatalf("%s: fast path took a record with unknown fields", md.FullName())
			}
		}
	}
	if fast == 0 {
		t.Fatal("the fast path never applied: the test proves nothing")
	}
	t.Logf("%d records on the fast path", fast)
}

// TestExactlyMaskedTakesTheMaskedRecord: the authority's usual answer, exactly the mask, takes the fast
// path for every leaf of every catalog dataset.
func TestExactlyMaskedTakesTheMaskedRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for _, md := range datasets() {
		leaves := fieldmask.Leaves(md)
		m := dynamicpb.NewMessage(md)
		fill(rng, m, 3)
		fieldmask.Apply(m, leaves)
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !exactlyMasked(md, b, leaves) {
			t.Fatalf("%s: a record masked to all its leaves is not on the fast path", md.FullName())
		}
	}
}

// BenchmarkMinimise is the broker's check of an authority's answer that is exactly the mask (the usual
// case), for the first dataset of the catalog masked to all its leaves.
func BenchmarkMinimise(b *testing.B) {
	md := datasets()[0]
	leaves := fieldmask.Leaves(md)
	m := dynamicpb.NewMessage(md)
	fill(rand.New(rand.NewPCG(1, 1)), m, 3)
	fieldmask.Apply(m, leaves)
	rec, err := anypb.New(m)
	if err != nil {
		b.Fatal(err)
	}
	rule := &policy.Rule{Message: md, Fields: leaves}
	grant := policy.Grant{Rule: rule, Fields: leaves}
	resp := &authorityv1.FetchResponse{Record: rec}
	b.ReportAllocs()
	for b.Loop() {
		if out, _, err := (&Service{}).minimise(rule, grant, resp); err != nil || out != rec {
			b.Fatal("not passed through", err)
		}
	}
}
