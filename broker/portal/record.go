package portal

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// recordNode is one entry of a record as the portal shows it: a label and either a plain value or
// the entries below it (an object or a list).
type recordNode struct {
	Label string
	Value string
	Kids  []recordNode
	List  bool // the kids are the items of a list
	Empty bool // no value at all
}

type nodeData struct {
	V *view
	N recordNode
}

// recordNodes turns a record of an authority's dataset (the fields below prefix, a path ending in
// ".") into labelled entries, in the order the authority declares its fields. Values are written
// the reader's way: enum values by their label, dates and numbers as the page language writes them.
// A yes/no field the record leaves out (protobuf does not send a false) is shown as "No".
func (v *view) recordNodes(authority, dataset, prefix string, s *structpb.Struct) []recordNode {
	fields := s.GetFields()
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	order := v.declaredOrder(authority, dataset, prefix)
	for name := range order {
		fl := v.fieldLabel(authority, dataset, prefix+name)
		if _, set := fields[name]; !set && fl.GetKind() == citizenv1.FieldKind_FIELD_KIND_BOOL && !fl.GetList() {
			keys = append(keys, name)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		ia, oka := order[a]
		ib, okb := order[b]
		if oka && okb {
			return cmp.Compare(ia, ib)
		}
		if oka != okb {
			if oka {
				return -1
			}
			return 1
		}
		return cmp.Compare(a, b)
	})
	var out []recordNode
	for _, k := range keys {
		fl := v.fieldLabel(authority, dataset, prefix+k)
		val, ok := fields[k]
		if !ok {
			val = structpb.NewBoolValue(false)
		}
		n := v.valueNode(authority, dataset, prefix+k, fl, val, true)
		n.Label = v.Tx(fl.GetLabel())
		if n.Label == "" {
			n.Label = humanKey(k)
		}
		out = append(out, n)
	}
	return out
}

// declaredOrder ranks the direct fields below prefix in the order ListDatasets listed them.
func (v *view) declaredOrder(authority, dataset, prefix string) map[string]int {
	dl := v.lab[labelKey(authority, dataset)]
	if dl == nil {
		return nil
	}
	out := map[string]int{}
	for _, fl := range dl.order {
		rest, ok := strings.CutPrefix(fl.GetPath(), prefix)
		if !ok || rest == "" || strings.Contains(rest, ".") {
			continue
		}
		out[rest] = len(out)
	}
	return out
}

// valueNode writes one value of field path (described by fl, nil when unknown); top is false for
// the items of a list.
func (v *view) valueNode(authority, dataset, path string, fl *citizenv1.FieldLabel, val *structpb.Value, top bool) recordNode {
	switch k := val.GetKind().(type) {
	case *structpb.Value_StringValue:
		switch {
		case k.StringValue == "":
			return recordNode{Empty: true, Value: v.T("data.empty")}
		case fl.GetKind() == citizenv1.FieldKind_FIELD_KIND_ENUM:
			return recordNode{Value: v.ValueName(fl, k.StringValue)}
		case fl.GetKind() == citizenv1.FieldKind_FIELD_KIND_TIME:
			if t, err := time.Parse(time.RFC3339Nano, k.StringValue); err == nil {
				return recordNode{Value: v.Moment(t)}
			}
		case fl.GetKind() == citizenv1.FieldKind_FIELD_KIND_NUMBER:
			// 64-bit integers travel as JSON strings.
			if f, err := strconv.ParseFloat(k.StringValue, 64); err == nil {
				return recordNode{Value: v.Number(f)}
			}
		}
		return recordNode{Value: k.StringValue}
	case *structpb.Value_NumberValue:
		return recordNode{Value: v.Number(k.NumberValue)}
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return recordNode{Value: v.T("data.yes")}
		}
		return recordNode{Value: v.T("data.no")}
	case *structpb.Value_StructValue:
		var kids []recordNode
		if fl == nil || (fl.GetKind() == citizenv1.FieldKind_FIELD_KIND_RECORD && !(top && fl.GetList())) {
			kids = v.recordNodes(authority, dataset, path+".", k.StructValue)
		} else {
			// A map: its keys are data, not field names.
			keys := slices.Sorted(func(yield func(string) bool) {
				for key := range k.StructValue.GetFields() {
					if !yield(key) {
						return
					}
				}
			})
			for _, key := range keys {
				n := v.valueNode(authority, dataset, path, fl, k.StructValue.GetFields()[key], false)
				n.Label = key
				kids = append(kids, n)
			}
		}
		if len(kids) == 0 {
			return recordNode{Empty: true, Value: v.T("data.empty")}
		}
		return recordNode{Kids: kids}
	case *structpb.Value_ListValue:
		var kids []recordNode
		for i, item := range k.ListValue.GetValues() {
			n := v.valueNode(authority, dataset, path, fl, item, false)
			n.Label = strconv.Itoa(i + 1)
			kids = append(kids, n)
		}
		if len(kids) == 0 {
			return recordNode{Empty: true, Value: v.T("data.none")}
		}
		return recordNode{Kids: kids, List: true}
	default:
		return recordNode{Empty: true, Value: v.T("data.empty")}
	}
}

// Moment writes a timestamp from a record: a date when it is midnight UTC (how registers store a
// day: "2. december 1990"), else the date and time in the portal's time zone.
func (v *view) Moment(t time.Time) string {
	u := t.UTC()
	if u.Hour() == 0 && u.Minute() == 0 && u.Second() == 0 && u.Nanosecond() == 0 {
		m := monthNames[v.Lang][u.Month()-1]
		if v.Lang == "da" {
			return strconv.Itoa(u.Day()) + ". " + m + " " + strconv.Itoa(u.Year())
		}
		return strconv.Itoa(u.Day()) + " " + m + " " + strconv.Itoa(u.Year())
	}
	return v.When(t)
}

// Number writes a number the page language's way: "1,234,567.5" / "1.234.567,5".
func (v *view) Number(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	var s string
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		s = strconv.FormatInt(int64(f), 10)
	} else {
		s = strconv.FormatFloat(f, 'f', -1, 64)
	}
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, hasFrac := strings.Cut(s, ".")
	group, point := ",", "."
	if v.Lang == "da" {
		group, point = ".", ","
	}
	var b strings.Builder
	for i, r := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteString(group)
		}
		b.WriteRune(r)
	}
	out := sign + b.String()
	if hasFrac {
		out += point + frac
	}
	return out
}
