package server

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// handCheckedRules is ReleaseRequest's validation rules as releaseRequestValid implements them (the text
// format without spaces: prototext's spacing varies on purpose). A change of the rules in the proto
// must change the hand check too.
const handCheckedRules = `case_id: [buf.validate.field]:{string:{pattern:"^case_[0-9a-z]{26}$"}}
authority: [buf.validate.field]:{string:{pattern:"^[a-z][a-z0-9_]{0,31}$"}}
dataset: [buf.validate.field]:{string:{pattern:"^[a-z][a-z0-9_]{0,62}$"}}
fields: [buf.validate.field]:{repeated:{max_items:256unique:trueitems:{string:{max_len:256pattern:"^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*$"}}}}
derived: [buf.validate.field]:{repeated:{max_items:64unique:trueitems:{string:{pattern:"^[a-z][a-z0-9_]{0,62}$"}}}}
hidden_until: <nil>
message: <nil>
`

func rulesOf(md protoreflect.MessageDescriptor) string {
	opts := prototext.MarshalOptions{}
	var sb strings.Builder
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		fmt.Fprintf(&sb, "%s: %s\n", fd.Name(), strings.Join(strings.Fields(opts.Format(fd.Options())), ""))
	}
	fmt.Fprintf(&sb, "message: %s\n", strings.Join(strings.Fields(opts.Format(md.Options())), ""))
	return sb.String()
}

func TestHandCheckedRulesUnchanged(t *testing.T) {
	got := rulesOf((&brokerv1.ReleaseRequest{}).ProtoReflect().Descriptor())
	if got != handCheckedRules {
		t.Fatalf("ReleaseRequest's rules changed; update releaseRequestValid and handCheckedRules:\n%s", got)
	}
}

func newFullValidator(t testing.TB) protovalidate.Validator {
	v, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// agree fails unless the hand check and protovalidate agree on m.
func agree(t testing.TB, full protovalidate.Validator, m *brokerv1.ReleaseRequest) bool {
	t.Helper()
	hand := releaseRequestValid(m)
	err := full.Validate(m)
	if hand != (err == nil) {
		t.Fatalf("hand check %v, protovalidate %v, for %v", hand, err, m)
	}
	return hand
}

// TestHandChecksAcceptOnlyValid compares the hand check with protovalidate on edge cases and on many
// random requests built from pieces near the rules' boundaries.
func TestHandChecksAcceptOnlyValid(t *testing.T) {
	full := newFullValidator(t)
	id := "case_" + strings.Repeat("0a", 13)
	valid := &brokerv1.ReleaseRequest{CaseId: id, Authority: "population", Dataset: "person", Fields: []string{"name.given_names", "address.municipality_code"}, Derived: []string{"earned_above_threshold_6_of_12"}}
	if !agree(t, full, valid) {
		t.Fatal("a valid request is not on the fast path")
	}
	long := func(n int) string { return "a" + strings.Repeat("b", n-1) }
	many := func(n int, f func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	cases := []func(m *brokerv1.ReleaseRequest){
		func(m *brokerv1.ReleaseRequest) { m.CaseId = "" },
		func(m *brokerv1.ReleaseRequest) { m.CaseId = id[:len(id)-1] },
		func(m *brokerv1.ReleaseRequest) { m.CaseId = id + "a" },
		func(m *brokerv1.ReleaseRequest) { m.CaseId = strings.ToUpper(id) },
		func(m *brokerv1.ReleaseRequest) { m.CaseId = "case-" + id[5:] },
		func(m *brokerv1.ReleaseRequest) { m.Authority = "" },
		func(m *brokerv1.ReleaseRequest) { m.Authority = long(32) },
		func(m *brokerv1.ReleaseRequest) { m.Authority = long(33) },
		func(m *brokerv1.ReleaseRequest) { m.Authority = "1tax" },
		func(m *brokerv1.ReleaseRequest) { m.Authority = "_tax" },
		func(m *brokerv1.ReleaseRequest) { m.Authority = "t" },
		func(m *brokerv1.ReleaseRequest) { m.Dataset = long(63) },
		func(m *brokerv1.ReleaseRequest) { m.Dataset = long(64) },
		func(m *brokerv1.ReleaseRequest) { m.Dataset = "in-come" },
		func(m *brokerv1.ReleaseRequest) { m.Fields = nil; m.Derived = nil },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{""} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"a."} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{".a"} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"a..b"} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"a.1b"} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"a._b"} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"a.b_1.c"} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{long(256)} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{long(257)} },
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"a", "b", "a"} },
		func(m *brokerv1.ReleaseRequest) {
			m.Fields = many(256, func(i int) string { return fmt.Sprintf("f%d", i) })
		},
		func(m *brokerv1.ReleaseRequest) {
			m.Fields = many(257, func(i int) string { return fmt.Sprintf("f%d", i) })
		},
		func(m *brokerv1.ReleaseRequest) {
			m.Fields = many(40, func(i int) string { return fmt.Sprintf("f%d", i%39) })
		},
		func(m *brokerv1.ReleaseRequest) {
			m.Fields = many(40, func(i int) string { return fmt.Sprintf("f%d", i) })
		},
		func(m *brokerv1.ReleaseRequest) { m.Fields = []string{"naïve"} },
		func(m *brokerv1.ReleaseRequest) { m.Derived = []string{long(63)} },
		func(m *brokerv1.ReleaseRequest) { m.Derived = []string{long(64)} },
		func(m *brokerv1.ReleaseRequest) { m.Derived = []string{"a.b"} },
		func(m *brokerv1.ReleaseRequest) { m.Derived = []string{"x", "x"} },
		func(m *brokerv1.ReleaseRequest) {
			m.Derived = many(64, func(i int) string { return fmt.Sprintf("d%d", i) })
		},
		func(m *brokerv1.ReleaseRequest) {
			m.Derived = many(65, func(i int) string { return fmt.Sprintf("d%d", i) })
		},
	}
	for _, change := range cases {
		m := &brokerv1.ReleaseRequest{CaseId: valid.CaseId, Authority: valid.Authority, Dataset: valid.Dataset, Fields: valid.Fields, Derived: valid.Derived}
		change(m)
		agree(t, full, m)
	}

	// Random requests from an alphabet around the rules' classes.
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abz09_.A-é"
	str := func(max int) string {
		var sb strings.Builder
		for range rng.IntN(max + 1) {
			sb.WriteString(string([]rune(alphabet)[rng.IntN(len([]rune(alphabet)))]))
		}
		return sb.String()
	}
	accepted := 0
	for range 20000 {
		m := &brokerv1.ReleaseRequest{CaseId: id, Authority: "a" + str(3), Dataset: "b" + str(3)}
		if rng.IntN(4) == 0 {
			m.CaseId = "case_" + str(27)
		}
		for range rng.IntN(4) {
			m.Fields = append(m.Fields, "c"+str(6))
		}
		for range rng.IntN(3) {
			m.Derived = append(m.Derived, "d"+str(3))
		}
		if agree(t, full, m) {
			accepted++
		}
	}
	if accepted == 0 {
		t.Fatal("no random request was valid: the comparison proves nothing")
	}
}

func FuzzReleaseRequestCheck(f *testing.F) {
	f.Add("case_0a0a0a0a0a0a0a0a0a0a0a0a0a", "population", "person", "name.given_names", "address.municipality_code", "x")
	f.Add("case_", "a", "b", "a..b", "a.", "_")
	full := newFullValidator(f)
	f.Fuzz(func(t *testing.T, caseID, authority, dataset, f1, f2, d1 string) {
		for _, s := range []string{caseID, authority, dataset, f1, f2, d1} {
			if !utf8.ValidString(s) {
				return // proto strings are UTF-8 (gRPC refuses anything else before validation)
			}
		}
		agree(t, full, &brokerv1.ReleaseRequest{CaseId: caseID, Authority: authority, Dataset: dataset, Fields: []string{f1, f2}, Derived: []string{d1}})
	})
}

// BenchmarkValidateReleaseRequest compares the edge's validator with protovalidate alone on a valid
// request (the hot path's case).
func BenchmarkValidateReleaseRequest(b *testing.B) {
	m := &brokerv1.ReleaseRequest{CaseId: "case_" + strings.Repeat("0a", 13), Authority: "population", Dataset: "person",
		Fields: []string{"address.municipality_code", "name.family_name", "name.given_names"}}
	full := newFullValidator(b)
	for name, v := range map[string]protovalidate.Validator{"protovalidate": full, "edge": fastValidator{full: full}} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := v.Validate(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestValidCaseworker holds the hand check of the caseworker header to its documented pattern.
func TestValidCaseworker(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)
	check := func(s string) {
		t.Helper()
		if got, want := validCaseworker(s), pattern.MatchString(s); got != want {
			t.Fatalf("validCaseworker(%q) = %v, the pattern says %v", s, got, want)
		}
	}
	for _, s := range []string{"", "a", "jane.doe@kommune.dk", "-a", ".a", "a-", "A9_.@-", "æ", "a b", "a\n",
		strings.Repeat("a", 64), strings.Repeat("a", 65), "a" + strings.Repeat("-", 63), "a/b", "a+b", "Z"} {
		check(s)
	}
	rng := rand.New(rand.NewPCG(5, 8))
	const alphabet = "aZ09._@- /+\x00ø"
	for range 20000 {
		b := make([]byte, rng.IntN(70))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
