// Package fieldmask implements the protobuf field-path semantics that Aperture's authorities and broker
// share: which paths name a field of a dataset message, which paths a set of allowed paths covers, and
// how a message is reduced to a set of paths.
//
// A path is a dot-separated list of field names ("address.municipality_code"). It may pass through
// singular message fields, repeated message fields and maps with message values; through a repeated or
// map field it selects the sub-field in every element or value. Well-known types (google.protobuf.*,
// e.g. Timestamp) are leaves: a path may name them but never go inside them, because their inner
// fields (seconds, nanos) are an encoding detail, not a piece of information a policy can reason about.
//
// Both sides must agree exactly: the authority applies a mask with [Apply], and the broker checks the
// answer with [Extra]; a record reduced by Apply never has Extra paths, so any Extra path in an
// authority's answer is an over-share.
package fieldmask

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxDepth bounds the recursion of Leaves through self-referencing message types.
const maxDepth = 8

// PathError is a path that does not name a field of a message. It never contains field values, only
// schema names, so it is safe to log and to return to callers.
type PathError struct {
	// Path is the whole path as given.
	Path string
	// Segment is the first segment that could not be resolved (may be empty for an empty segment).
	Segment string
	// Message is the full name of the message in which Segment was looked up.
	Message protoreflect.FullName
	// Reason says, in plain words, why the segment is wrong.
	Reason string
	// Suggestion is the closest field name of Message, or empty when none is close.
	Suggestion string
}

func (e *PathError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "field path %q: %s", e.Path, e.Reason)
	if e.Suggestion != "" {
		fmt.Fprintf(&b, " (did you mean %q?)", e.Suggestion)
	}
	return b.String()
}

// IsWellKnown reports whether md is a google.protobuf well-known type, which paths treat as a leaf.
func IsWellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile() != nil && md.ParentFile().Package() == "google.protobuf"
}

// descend returns the message a path continues into after fd, or nil when fd is a leaf (a scalar,
// enum, bytes, well-known type, repeated scalar, or a map with non-message values).
func descend(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	var md protoreflect.MessageDescriptor
	switch {
	case fd.IsMap():
		md = fd.MapValue().Message()
	default:
		md = fd.Message()
	}
	if md == nil || IsWellKnown(md) {
		return nil
	}
	return md
}

// Validate reports whether path names a field of md. A path may pass through singular message fields,
// repeated message fields and map fields with message values (then it selects that sub-field in every
// element/value). Well-known types (google.protobuf.*) are leaves: no path into them. Errors are
// *PathError; they name the path and the first bad segment, and suggest the closest field name when one
// is close.
func Validate(md protoreflect.MessageDescriptor, path string) error {
	if path == "" {
		return &PathError{Path: path, Message: md.FullName(), Reason: "empty path"}
	}
	// Segment by segment with Cut: a broker and an authority validate every requested path of every
	// call, and splitting allocated a slice each time.
	cur, rest := md, path
	for {
		seg, tail, more := strings.Cut(rest, ".")
		if seg == "" {
			return &PathError{Path: path, Message: cur.FullName(), Reason: "empty segment"}
		}
		fd := cur.Fields().ByName(protoreflect.Name(seg))
		if fd == nil {
			return &PathError{
				Path: path, Segment: seg, Message: cur.FullName(),
				Reason:     fmt.Sprintf("no field %q in %s", seg, cur.FullName()),
				Suggestion: suggest(cur, seg),
			}
		}
		if !more {
			return nil
		}
		next := descend(fd)
		if next == nil {
			sub, _, _ := strings.Cut(tail, ".")
			return &PathError{
				Path: path, Segment: sub, Message: cur.FullName(),
				Reason: fmt.Sprintf("field %q of %s is %s and has no sub-field %q", seg, cur.FullName(), leafKind(fd), sub),
			}
		}
		cur, rest = next, tail
	}
}

// leafKind describes why a field cannot be descended into, for error messages.
func leafKind(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "a map with " + fd.MapValue().Kind().String() + " values"
	case fd.Message() != nil:
		return "a well-known type (" + string(fd.Message().FullName()) + ")"
	case fd.IsList():
		return "a repeated " + fd.Kind().String()
	default:
		return "a " + fd.Kind().String()
	}
}

// suggest returns the field name of md closest to seg, or "" when none is close enough to be a likely
// typo. A JSON (camelCase) spelling of a field is always matched.
func suggest(md protoreflect.MessageDescriptor, seg string) string {
	fields := md.Fields()
	names := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		if fd.JSONName() == seg || strings.EqualFold(name, seg) {
			return name
		}
		names = append(names, name)
	}
	if best := Closest(seg, names); best != "" {
		return best
	}
	// A truncated name ("gross" for "gross_dkk") is far by edit distance but an obvious intent.
	prefixed := ""
	for i := range fields.Len() {
		if name := string(fields.Get(i).Name()); len(seg) >= 3 && strings.HasPrefix(name, seg) &&
			(prefixed == "" || len(name) < len(prefixed)) {
			prefixed = name
		}
	}
	return prefixed
}

// Closest returns the option nearest to s by edit distance, or "" when none is close enough to be a
// likely typo (roughly one typo per three characters, at least one). Policy findings use it for their
// "did you mean" too, so every suggestion follows the same rule.
func Closest(s string, options []string) string {
	best, bestDist := "", -1
	for _, o := range options {
		if d := editDistance(s, o); bestDist < 0 || d < bestDist {
			best, bestDist = o, d
		}
	}
	if bestDist >= 0 && bestDist <= max(1, len(s)/3) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b (bytes; field names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Leaves lists every leaf path of md in field-number order (scalars, enums, bytes, well-known types,
// repeated scalars, maps with scalar values; recursing into message fields, repeated messages and
// map-of-message values). Recursion through self-referencing types stops at depth 8, where the message
// field itself is listed as a leaf. A message type without fields is listed as a leaf too.
func Leaves(md protoreflect.MessageDescriptor) []string {
	var out []string
	leaves(md, "", 0, &out)
	return out
}

func leaves(md protoreflect.MessageDescriptor, prefix string, depth int, out *[]string) {
	fields := md.Fields()
	fds := make([]protoreflect.FieldDescriptor, fields.Len())
	for i := range fds {
		fds[i] = fields.Get(i)
	}
	slices.SortFunc(fds, func(a, b protoreflect.FieldDescriptor) int { return cmp.Compare(a.Number(), b.Number()) })
	for _, fd := range fds {
		path := prefix + string(fd.Name())
		next := descend(fd)
		if next == nil || next.Fields().Len() == 0 || depth+1 >= maxDepth {
			*out = append(*out, path)
			continue
		}
		leaves(next, path+".", depth+1, out)
	}
}

// Covers reports whether path is allowed by the set: equal to an allowed path or below one ("address"
// covers "address.city").
func Covers(allowed []string, path string) bool {
	for _, a := range allowed {
		if a == "" {
			continue
		}
		if path == a || (len(path) > len(a) && path[len(a)] == '.' && strings.HasPrefix(path, a)) {
			return true
		}
	}
	return false
}

// Normalize sorts, dedups and drops paths covered by a shorter path in the same set. Empty paths are
// dropped. The input is not modified.
func Normalize(paths []string) []string {
	s := slices.Clone(paths)
	s = slices.DeleteFunc(s, func(p string) bool { return p == "" })
	slices.Sort(s)
	s = slices.Compact(s)
	// A covering path sorts before the paths it covers, but not necessarily right before them
	// ("a" < "a-b" < "a.c"), so each path is checked against all kept ones.
	out := s[:0:0]
	for _, p := range s {
		if !Covers(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// node is one level of a path tree: keep is set when the path ends here (the whole field is covered).
type node struct {
	keep     bool
	children map[string]*node
}

func tree(paths []string) *node {
	root := &node{}
	for _, p := range paths {
		if p == "" {
			continue
		}
		n := root
		for seg := range strings.SplitSeq(p, ".") {
			if n.keep {
				break
			}
			if n.children == nil {
				n.children = map[string]*node{}
			}
			c := n.children[seg]
			if c == nil {
				c = &node{}
				n.children[seg] = c
			}
			n = c
		}
		n.keep = true
		n.children = nil
	}
	return root
}

// child returns the subtree for field name, or nil when nothing under it is covered.
func (n *node) child(name protoreflect.Name) *node {
	if n == nil {
		return nil
	}
	return n.children[string(name)]
}

// Apply clears, in place, every field of m not covered by paths (through nested, repeated and map
// values). An empty paths clears everything. Unknown fields are cleared in every message that is not
// covered as a whole, since no path can name them. A singular sub-message left empty by the reduction
// is cleared too, so its mere presence is not released. Paths that do not name a field cover nothing.
func Apply(m protoreflect.Message, paths []string) {
	apply(m, tree(paths))
}

func apply(m protoreflect.Message, n *node) {
	if n.keep {
		return
	}
	if len(m.GetUnknown()) > 0 {
		m.SetUnknown(nil)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		c := n.child(fd.Name())
		switch {
		case c == nil || fd.IsExtension():
			m.Clear(fd)
		case c.keep:
		case descend(fd) == nil:
			// A path below a leaf names nothing; the leaf itself is not covered.
			m.Clear(fd)
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				apply(mv.Message(), c)
				return true
			})
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				apply(l.Get(i).Message(), c)
			}
		default:
			sub := v.Message()
			apply(sub, c)
			if isEmpty(sub) {
				m.Clear(fd)
			}
		}
		return true
	})
}

// Project sets in dst, an empty message of src's type, exactly what Apply would leave of a copy of
// src: the covered parts. It copies only those, where Apply needs the whole record copied first, and
// so costs in proportion to what a mask releases, not to the record. dst shares covered values with
// src (lists, maps and messages are not copied): neither may be modified while the other is used.
func Project(dst, src protoreflect.Message, paths []string) {
	project(dst, src, tree(paths))
}

// Mask is a set of paths prepared once for Project, for a caller that projects the same paths many
// times (an authority serves each step's mask over and over). It is read-only and safe for
// concurrent use.
type Mask struct{ root *node }

// NewMask prepares paths for Project.
func NewMask(paths []string) Mask { return Mask{root: tree(paths)} }

// Project is Project(dst, src, paths) for the mask's paths.
func (m Mask) Project(dst, src protoreflect.Message) { project(dst, src, m.root) }

func project(dst, src protoreflect.Message, n *node) {
	if n.keep {
		// Only a root can be wholly covered here (below it a covered field is set whole), and tree
		// never makes one; should it, everything is covered, unknown fields included.
		proto.Merge(dst.Interface(), src.Interface())
		return
	}
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		c := n.child(fd.Name())
		switch {
		case c == nil || fd.IsExtension() || !c.keep && descend(fd) == nil:
			// Not covered (or a path below a leaf, which names nothing).
		case c.keep:
			dst.Set(fd, v)
		case fd.IsMap():
			out := dst.Mutable(fd).Map()
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				e := out.NewValue()
				project(e.Message(), mv.Message(), c)
				out.Set(k, e)
				return true
			})
		case fd.IsList():
			in, out := v.List(), dst.Mutable(fd).List()
			for i := range in.Len() {
				e := out.NewElement()
				project(e.Message(), in.Get(i).Message(), c)
				out.Append(e)
			}
		default:
			sub := dst.Mutable(fd).Message()
			project(sub, v.Message(), c)
			if isEmpty(sub) {
				dst.Clear(fd)
			}
		}
		return true
	})
}

// isEmpty reports whether m has no field and no unknown bytes. It asks field by field rather than with
// Range, whose closure was an allocation per reduced sub-message. Extensions are not asked about: Apply
// and Project never leave one set below a partly covered path, which is where isEmpty is used.
func isEmpty(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return false
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if m.Has(fields.Get(i)) {
			return false
		}
	}
	return true
}

// Extra returns the paths of fields set in m that paths do not cover (leaf-most set paths, sorted,
// deduped), so a caller can report what an authority over-shared. It names fields, never values.
// Unknown fields are not reported (no path names them); callers that forward messages must check
// or drop them separately. A set but empty message below a covered path is not an over-share (its
// presence is implied by the covered path); one with nothing covered below it is reported.
func Extra(m protoreflect.Message, paths []string) []string {
	var out []string
	extra(m, tree(paths), "", &out)
	slices.Sort(out)
	return slices.Compact(out)
}

func extra(m protoreflect.Message, n *node, prefix string, out *[]string) {
	if n != nil && n.keep {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		if fd.IsExtension() {
			name = "[" + string(fd.FullName()) + "]"
		}
		path := prefix + name
		c := n.child(fd.Name())
		if fd.IsExtension() {
			c = nil
		}
		if c != nil && c.keep {
			return true
		}
		if descend(fd) == nil {
			*out = append(*out, path)
			return true
		}
		before := len(*out)
		switch {
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				extra(mv.Message(), c, path+".", out)
				return true
			})
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				extra(l.Get(i).Message(), c, path+".", out)
			}
		default:
			extra(v.Message(), c, path+".", out)
		}
		// Nothing inside is set, but the field is and nothing under it is covered: its presence (or the
		// number of its elements) is itself information.
		if len(*out) == before && c == nil {
			*out = append(*out, path)
		}
		return true
	})
}
