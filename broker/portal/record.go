package portal

import (
	"math"
	"slices"
	"strconv"

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

// recordNodes turns a record into labelled entries, fields in name order.
func (v *view) recordNodes(s *structpb.Struct) []recordNode {
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []recordNode
	for _, k := range keys {
		n := v.valueNode(s.GetFields()[k])
		n.Label = humanKey(k)
		out = append(out, n)
	}
	return out
}

func (v *view) valueNode(val *structpb.Value) recordNode {
	switch k := val.GetKind().(type) {
	case *structpb.Value_StringValue:
		if k.StringValue == "" {
			return recordNode{Empty: true, Value: v.T("data.empty")}
		}
		return recordNode{Value: k.StringValue}
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if f == math.Trunc(f) && math.Abs(f) < 1e15 {
			return recordNode{Value: strconv.FormatInt(int64(f), 10)}
		}
		return recordNode{Value: strconv.FormatFloat(f, 'f', -1, 64)}
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return recordNode{Value: v.T("data.yes")}
		}
		return recordNode{Value: v.T("data.no")}
	case *structpb.Value_StructValue:
		kids := v.recordNodes(k.StructValue)
		if len(kids) == 0 {
			return recordNode{Empty: true, Value: v.T("data.empty")}
		}
		return recordNode{Kids: kids}
	case *structpb.Value_ListValue:
		var kids []recordNode
		for i, item := range k.ListValue.GetValues() {
			n := v.valueNode(item)
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
