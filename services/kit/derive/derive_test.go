package derive_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	taxv1 "github.com/aperture-gov/aperture/proto/aperture/tax/v1"
	"github.com/aperture-gov/aperture/services/kit/derive"
)

// threshold is the sickness-benefit employment requirement (Sygedagpengeloven § 32): at least 20,000
// DKK gross in at least 6 of the last 12 months.
const threshold = `record.months.filter(m, m.period_start > now - duration('8760h') && m.gross_dkk >= 20000).size() >= 6`

var now = time.Date(2025, 6, 15, 10, 0, 0, 0, time.UTC)

// income returns 24 months of income, newest first; gross(i) is the gross of the month i months ago.
func income(gross func(i int) int64) *taxv1.Income {
	in := &taxv1.Income{CitizenId: "0101901234", EmployerIds: []string{"12345678"}, AssessedAnnualIncomeDkk: 420000}
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	for i := range 24 {
		in.Months = append(in.Months, &taxv1.MonthlyIncome{
			PeriodStart: timestamppb.New(first.AddDate(0, -i, 0)),
			GrossDkk:    gross(i), TaxWithheldDkk: gross(i) * 38 / 100, EmployerId: "12345678", Hours: 160.33,
		})
	}
	return in
}

// dynamicIncome returns the Income descriptor as the broker sees it: rebuilt from a FileDescriptorSet
// (what an authority's Describe sends), not the generated one.
func dynamicIncome(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	set := fileSet(taxv1.File_aperture_tax_v1_tax_proto)
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var back descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&back)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("aperture.tax.v1.Income")
	if err != nil {
		t.Fatal(err)
	}
	md := d.(protoreflect.MessageDescriptor)
	if md == (&taxv1.Income{}).ProtoReflect().Descriptor() {
		t.Fatal("descriptor is the generated one")
	}
	return md
}

func toDynamic(t testing.TB, md protoreflect.MessageDescriptor, m proto.Message) proto.Message {
	t.Helper()
	raw, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(raw, dyn); err != nil {
		t.Fatal(err)
	}
	return dyn
}

func TestEval(t *testing.T) {
	steady := income(func(int) int64 { return 32000 })
	// Earned well only 5, then 6, of the last 12 months (every other month from the newest).
	fiveOf12 := income(func(i int) int64 {
		if i < 10 && i%2 == 0 {
			return 25000
		}
		return 8000
	})
	sixOf12 := income(func(i int) int64 {
		if i < 12 && i%2 == 0 {
			return 25000
		}
		return 8000
	})
	// Earned well, but more than a year ago.
	longAgo := income(func(i int) int64 {
		if i >= 12 {
			return 40000
		}
		return 0
	})
	tests := []struct {
		name   string
		expr   string
		record *taxv1.Income
		want   *structpb.Value
	}{
		{"threshold/steady", threshold, steady, structpb.NewBoolValue(true)},
		{"threshold/5 of 12", threshold, fiveOf12, structpb.NewBoolValue(false)},
		{"threshold/6 of 12", threshold, sixOf12, structpb.NewBoolValue(true)},
		{"threshold/long ago", threshold, longAgo, structpb.NewBoolValue(false)},
		{"threshold/no income", threshold, &taxv1.Income{}, structpb.NewBoolValue(false)},
		{"int as number", `record.months.filter(m, m.period_start > now - duration('8760h')).map(m, m.gross_dkk).size()`, steady, structpb.NewNumberValue(12)},
		{"int64 field", `record.assessed_annual_income_dkk`, steady, structpb.NewNumberValue(420000)},
		{"uint", `uint(record.employer_ids.size())`, steady, structpb.NewNumberValue(1)},
		{"double", `record.months[0].hours`, steady, structpb.NewNumberValue(160.33)},
		{"string", `record.assessed_annual_income_dkk > 300000 ? "high" : "normal"`, steady, structpb.NewStringValue("high")},
	}
	genMD := (&taxv1.Income{}).ProtoReflect().Descriptor()
	dynMD := dynamicIncome(t)
	for _, tt := range tests {
		for _, mode := range []string{"generated", "dynamic"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				md, rec := genMD, proto.Message(tt.record)
				if mode == "dynamic" {
					md, rec = dynMD, toDynamic(t, dynMD, tt.record)
				}
				env, err := derive.NewEnv(md)
				if err != nil {
					t.Fatal(err)
				}
				prg, err := derive.Compile(env, tt.expr)
				if err != nil {
					t.Fatal(err)
				}
				got, err := derive.Eval(context.Background(), prg, rec, now)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, tt.want) {
					t.Errorf("Eval = %v, want %v", got, tt.want)
				}
			})
		}
	}
}

// TestCheckedByBrokerEvaluatedByAuthority compiles against the dynamic descriptor (the broker's view)
// and evaluates a generated message (the authority's), and the reverse.
func TestCheckedByBrokerEvaluatedByAuthority(t *testing.T) {
	dynEnv, err := derive.NewEnv(dynamicIncome(t))
	if err != nil {
		t.Fatal(err)
	}
	prg, err := derive.Compile(dynEnv, threshold)
	if err != nil {
		t.Fatal(err)
	}
	got, err := derive.Eval(context.Background(), prg, income(func(int) int64 { return 30000 }), now)
	if err != nil {
		t.Fatal(err)
	}
	if !got.GetBoolValue() {
		t.Errorf("Eval = %v, want true", got)
	}
}

func TestCompileErrors(t *testing.T) {
	env, err := derive.NewEnv((&taxv1.Income{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		expr string
		want string
	}{
		{`record.monts.size() > 0`, "1:7"},
		{`record.monts.size() > 0`, "undefined field 'monts'"},
		{"true &&\n  record.months[0].gross > 1", "2:19"},
		{`record.months[0].period_start`, "result type is google.protobuf.Timestamp"},
		{`dyn(record.citizen_id)`, "result type is dyn"},
		{`record.citizen_id +`, "Syntax error"},
		{`unknown_var == 1`, "undeclared reference to 'unknown_var'"},
		{`record.gross_dkk == "x"`, "undefined field"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := derive.Compile(env, tt.expr)
			if err == nil {
				t.Fatalf("Compile(%q) succeeded", tt.expr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile(%q) = %q, want it to contain %q", tt.expr, err, tt.want)
			}
		})
	}
}

// TestCheckReads: the fields an expression reads, found in the checked AST, through comprehension
// variables, presence tests and nested comprehensions; and its result type.
func TestCheckReads(t *testing.T) {
	env, err := derive.NewEnv((&taxv1.Income{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		expr, typ string
		reads     []string
	}{
		{threshold, "bool", []string{"months.gross_dkk", "months.period_start"}},
		{`record.assessed_annual_income_dkk > 903600`, "bool", []string{"assessed_annual_income_dkk"}},
		{`record.months.exists(m, !has(m.period_start))`, "bool", []string{"months.period_start"}},
		{`record.months.size()`, "int", []string{"months"}},
		{`record.months.all(a, record.months.all(b, a.gross_dkk >= b.hours))`, "bool", []string{"months.gross_dkk", "months.hours"}},
		{`record.employer_ids.exists(e, e == "1") ? "x" : record.citizen_id`, "string", []string{"citizen_id", "employer_ids"}},
		{`now.getFullYear() > 2000`, "bool", nil},
		{`record.months.map(m, m.gross_dkk)`, "list(int)", []string{"months.gross_dkk"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			c, err := derive.Check(env, tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			if c.Type.String() != tc.typ || strings.Join(c.Reads, ",") != strings.Join(tc.reads, ",") {
				t.Fatalf("type %s reads %v, want %s %v", c.Type, c.Reads, tc.typ, tc.reads)
			}
		})
	}
}

// TestRecordValued: a list or message result is returned as JSON (the broker allows it only when the
// policy says why).
func TestRecordValued(t *testing.T) {
	env, err := derive.NewEnv((&taxv1.Income{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	in := income(func(i int) int64 { return int64(1000 * (i + 1)) })
	for expr, want := range map[string]string{
		`record.months.map(m, m.gross_dkk).filter(g, g <= 2000)`: `[1000,2000]`,
		`record.employer_ids`: `["12345678"]`,
	} {
		prg, err := derive.Compile(env, expr)
		if err != nil {
			t.Fatal(err)
		}
		v, err := derive.Eval(context.Background(), prg, in, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := v.MarshalJSON(); strings.ReplaceAll(string(got), " ", "") != want {
			t.Errorf("%s = %s, want %s", expr, got, want)
		}
	}
}

func TestEvalErrorsDoNotLeakValues(t *testing.T) {
	const secret = "SECRETVALUE"
	rec := &municipalityv1.Services{
		CitizenId:        secret + "1",
		MunicipalityCode: secret + "2",
		BenefitCases:     map[string]*municipalityv1.BenefitCase{secret + "3": {Status: secret + "4"}},
	}
	env, err := derive.NewEnv(rec.ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		expr string
		want string
	}{
		{`record.daycare[3].weekly_hours`, "index out of range"},
		{`record.benefit_cases["` + "nope" + `"].status`, "no such key"},
		{`int(record.citizen_id) > 0`, ""},
		{`int(record.benefit_cases.map(k, record.benefit_cases[k].status)[0]) > 0`, ""},
		{`timestamp(record.municipality_code) > now`, ""},
		{`record.schools.size() / record.daycare.size() == 1`, "division by zero"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			prg, err := derive.Compile(env, tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			_, err = derive.Eval(context.Background(), prg, rec, now)
			if err == nil {
				t.Fatal("Eval succeeded")
			}
			if !errors.Is(err, derive.ErrEvaluation) {
				t.Errorf("error %q does not wrap ErrEvaluation", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks a record value", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestCostLimit(t *testing.T) {
	big := income(func(int) int64 { return 1 })
	for len(big.Months) < 3000 {
		big.Months = append(big.Months, big.Months[:24]...)
	}
	env, err := derive.NewEnv(big.ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	prg, err := derive.Compile(env, `record.months.all(a, record.months.all(b, a.gross_dkk >= b.gross_dkk))`)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = derive.Eval(context.Background(), prg, big, now)
	if err == nil || !strings.Contains(err.Error(), "cost limit exceeded") {
		t.Fatalf("Eval = %v, want cost limit exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cost limit stopped evaluation only after %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = derive.Eval(ctx, prg, big, now)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, derive.ErrEvaluation) {
		t.Errorf("Eval with cancelled context = %v, want context.Canceled", err)
	}
}

func TestEvalWrongRecordType(t *testing.T) {
	env, err := derive.NewEnv((&taxv1.Income{}).ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	prg, err := derive.Compile(env, threshold)
	if err != nil {
		t.Fatal(err)
	}
	_, err = derive.Eval(context.Background(), prg, &municipalityv1.Services{CitizenId: "x"}, now)
	if !errors.Is(err, derive.ErrEvaluation) {
		t.Errorf("Eval with a foreign record = %v, want ErrEvaluation", err)
	}
}

// TestRealisticCost keeps the cost limit honest: a one-comprehension fact over a large record passes.
func TestRealisticCost(t *testing.T) {
	big := income(func(i int) int64 { return int64(i) * 1000 })
	for len(big.Months) < 2400 {
		big.Months = append(big.Months, big.Months[:24]...)
	}
	env, err := derive.NewEnv(big.ProtoReflect().Descriptor())
	if err != nil {
		t.Fatal(err)
	}
	prg, err := derive.Compile(env, threshold)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := derive.Eval(context.Background(), prg, big, now); err != nil {
		t.Fatalf("threshold over %d months: %v", len(big.Months), err)
	}
}

// fileSet is fd and everything it imports, each file after its imports, as an authority's Describe
// sends it (an authority's proto imports the label options as well as the well-known types).
func fileSet(fd protoreflect.FileDescriptor) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(fd)
	return set
}
