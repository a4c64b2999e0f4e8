// Package derive is the CEL environment of derived facts: expressions over one citizen's record that
// an authority evaluates so that a step learns a fact ("earned above the threshold in 6 of the last 12
// months") instead of the values behind it.
//
// The broker and the authorities MUST use the same environment: the broker type-checks every policy
// expression when it loads the policies, against the schema the authority describes (a dynamic
// descriptor), and the authority evaluates the same expression against its concrete Go message. An
// expression that passes the broker's check therefore cannot fail to compile at the authority.
//
// The variables are `record` (the dataset message) and `now` (google.protobuf.Timestamp, the
// evaluator's clock). Programs run under a cost limit so that a policy cannot make an authority spin.
package derive

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// CostLimit bounds the runtime cost of one evaluation (roughly, CEL operations; reaching it takes
	// tens of milliseconds). A fact with one comprehension over a record of a few thousand elements
	// stays below it (the sickness-benefit threshold over 24 months costs a few hundred); a policy that
	// nests comprehensions over large lists hits it and fails instead of stalling the authority.
	CostLimit = 100_000
	// interruptEvery is how many comprehension iterations run between checks of the context.
	interruptEvery = 100
)

// ErrEvaluation is wrapped by every runtime failure of a derived fact. Its messages name a category
// (e.g. "index out of range"), never a value of the record.
var ErrEvaluation = errors.New("derived fact evaluation failed")

// NewEnv returns a CEL environment with variables `record` (message type md) and `now`
// (google.protobuf.Timestamp). md may be a dynamic descriptor; the types known to the environment are
// those of md's file and its transitive imports.
//
// Note that CEL resolves a file that is also linked into the binary to the linked copy (matched by
// path), so a process that links the generated code checks against that version of the schema.
func NewEnv(md protoreflect.MessageDescriptor) (*cel.Env, error) {
	if md == nil || md.ParentFile() == nil {
		return nil, errors.New("derive: message descriptor without a file")
	}
	var files []any
	seen := map[string]bool{}
	var walk func(fd protoreflect.FileDescriptor)
	walk = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			walk(imports.Get(i).FileDescriptor)
		}
		files = append(files, fd)
	}
	walk(md.ParentFile())
	env, err := cel.NewEnv(
		cel.TypeDescs(files...),
		cel.Variable("record", cel.ObjectType(string(md.FullName()))),
		cel.Variable("now", cel.TimestampType),
	)
	if err != nil {
		return nil, fmt.Errorf("derive: environment for %s: %w", md.FullName(), err)
	}
	return env, nil
}

// Checked is a parsed and type-checked expression: what a reviewer needs to know about a fact
// without running it.
type Checked struct {
	AST *cel.Ast
	// Type is the result type CEL infers from the schema ("bool", "int", "string", "list(…)").
	Type *cel.Type
	// Reads are the field paths of the record the expression reads, sorted, each as a policy would
	// write it (a path through a repeated field names the element's field: "months.gross_dkk"). A
	// path read only on the way to a deeper one is not listed on its own.
	Reads []string
}

// Check parses and type-checks expr against env and reports its result type and the record fields it
// reads. It puts no limit on the result type; Compile does.
func Check(env *cel.Env, expr string) (*Checked, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("compile derived fact: %w", iss.Err())
	}
	return &Checked{AST: ast, Type: ast.OutputType(), Reads: reads(ast)}, nil
}

// Scalar reports whether t is one of the scalar result types: bool, int, uint, double or string.
func Scalar(t *cel.Type) bool {
	return t.IsExactType(cel.BoolType) || t.IsExactType(cel.IntType) || t.IsExactType(cel.UintType) ||
		t.IsExactType(cel.DoubleType) || t.IsExactType(cel.StringType)
}

// Record reports whether t is a record-valued result: a list, a map or a message, returned as JSON.
// Such a fact discloses values, not a fact; the broker's policy loader refuses it unless the policy
// says why the step needs it.
func Record(t *cel.Type) bool {
	switch t.Kind() {
	case types.ListKind, types.MapKind, types.StructKind:
		return true
	}
	return false
}

// Compile parses and type-checks expr; the output type must be bool, int, uint, double or string, or
// a list, map or message (see Record). Errors are CEL's messages (they name line:column inside the
// expression).
func Compile(env *cel.Env, expr string) (cel.Program, error) {
	c, err := Check(env, expr)
	if err != nil {
		return nil, err
	}
	if !Scalar(c.Type) && !Record(c.Type) {
		return nil, fmt.Errorf("compile derived fact: result type is %s, want bool, int, uint, double or string, or a list, map or message", c.Type)
	}
	prg, err := env.Program(c.AST,
		cel.CostLimit(CostLimit),
		cel.InterruptCheckFrequency(interruptEvery),
	)
	if err != nil {
		return nil, fmt.Errorf("compile derived fact: %w", err)
	}
	return prg, nil
}

// reads walks a checked expression for selections rooted at `record`, following comprehension
// variables to the path they iterate over.
func reads(a *cel.Ast) []string {
	seen := map[string]bool{}
	var path func(e celast.Expr, scope map[string]string) (string, bool)
	path = func(e celast.Expr, scope map[string]string) (string, bool) {
		switch e.Kind() {
		case celast.IdentKind:
			if e.AsIdent() == "record" {
				return "", true
			}
			p, ok := scope[e.AsIdent()]
			return p, ok
		case celast.SelectKind:
			s := e.AsSelect()
			if p, ok := path(s.Operand(), scope); ok {
				if p == "" {
					return s.FieldName(), true
				}
				return p + "." + s.FieldName(), true
			}
		}
		return "", false
	}
	var walk func(e celast.Expr, scope map[string]string)
	walk = func(e celast.Expr, scope map[string]string) {
		if e == nil {
			return
		}
		switch e.Kind() {
		case celast.SelectKind:
			if p, ok := path(e, scope); ok {
				seen[p] = true
				return
			}
			walk(e.AsSelect().Operand(), scope)
		case celast.CallKind:
			c := e.AsCall()
			if c.IsMemberFunction() {
				walk(c.Target(), scope)
			}
			for _, arg := range c.Args() {
				walk(arg, scope)
			}
		case celast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, scope)
			}
		case celast.MapKind:
			for _, en := range e.AsMap().Entries() {
				walk(en.AsMapEntry().Key(), scope)
				walk(en.AsMapEntry().Value(), scope)
			}
		case celast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), scope)
			}
		case celast.ComprehensionKind:
			c := e.AsComprehension()
			walk(c.IterRange(), scope)
			walk(c.AccuInit(), scope)
			inner := maps.Clone(scope)
			delete(inner, c.AccuVar())
			delete(inner, c.IterVar())
			delete(inner, c.IterVar2())
			if p, ok := path(c.IterRange(), scope); ok {
				// One variable: the element (list) or key (map). Two: index or key, then the value.
				if c.HasIterVar2() {
					inner[c.IterVar2()] = p
				} else {
					inner[c.IterVar()] = p
				}
			}
			walk(c.LoopCondition(), inner)
			walk(c.LoopStep(), inner)
			result := maps.Clone(scope)
			delete(result, c.AccuVar())
			walk(c.Result(), result)
		}
	}
	walk(a.NativeRep().Expr(), map[string]string{})
	var out []string
	for p := range seen {
		covered := false
		for q := range seen {
			if strings.HasPrefix(q, p+".") {
				covered = true
				break
			}
		}
		if p != "" && !covered {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Eval evaluates prg for record at now and returns the value as a structpb.Value (ints as numbers). A
// runtime error (e.g. index out of range) is returned wrapped in ErrEvaluation; its message never
// includes record values. Cancellation of ctx stops the evaluation.
func Eval(ctx context.Context, prg cel.Program, record proto.Message, now time.Time) (v *structpb.Value, err error) {
	// A record whose type differs from the environment's can make field selection panic inside CEL;
	// that is a caller error, and must not take the authority down.
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: record does not match the expression's type", ErrEvaluation)
		}
	}()
	out, _, err := prg.ContextEval(ctx, map[string]any{
		"record": record,
		"now":    timestamppb.New(now),
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%w: %w", ErrEvaluation, ctxErr)
		}
		return nil, fmt.Errorf("%w: %s", ErrEvaluation, category(err))
	}
	return toValue(out)
}

// toValue converts a CEL result of one of the allowed output types.
func toValue(out ref.Val) (*structpb.Value, error) {
	switch o := out.(type) {
	case types.Bool:
		return structpb.NewBoolValue(bool(o)), nil
	case types.Int:
		return structpb.NewNumberValue(float64(o)), nil
	case types.Uint:
		return structpb.NewNumberValue(float64(o)), nil
	case types.Double:
		// JSON, and so google.protobuf.Value in JSON form, cannot carry these.
		if math.IsNaN(float64(o)) || math.IsInf(float64(o), 0) {
			return nil, fmt.Errorf("%w: result is not a finite number", ErrEvaluation)
		}
		return structpb.NewNumberValue(float64(o)), nil
	case types.String:
		return structpb.NewStringValue(string(o)), nil
	}
	if k := out.Type().(*types.Type).Kind(); k == types.ListKind || k == types.MapKind || k == types.StructKind {
		v, err := out.ConvertToNative(reflect.TypeFor[*structpb.Value]())
		if err != nil {
			return nil, fmt.Errorf("%w: result cannot be represented as JSON", ErrEvaluation)
		}
		if pv, ok := v.(*structpb.Value); ok {
			return pv, nil
		}
	}
	return nil, fmt.Errorf("%w: result type %s, want bool, int, uint, double or string, or a list, map or message", ErrEvaluation, out.Type().TypeName())
}

// safeCategories are fragments of CEL runtime errors that describe what went wrong without quoting
// data. CEL's own messages can embed values (a missing map key, a string that failed to parse), so
// only the category is kept.
var safeCategories = []string{
	"actual cost limit exceeded",
	"out of range",
	"out of bounds",
	"no such key",
	"no such field",
	"no such attribute",
	"no such overload",
	"division by zero",
	"modulus by zero",
	"overflow",
	"range error",
	"type conversion error",
	"invalid timestamp",
	"invalid duration",
}

func category(err error) string {
	msg := err.Error()
	for _, c := range safeCategories {
		if strings.Contains(msg, c) {
			switch c {
			case "actual cost limit exceeded":
				return "cost limit exceeded"
			case "out of range", "out of bounds":
				return "index out of range"
			}
			return c
		}
	}
	return "runtime error"
}
