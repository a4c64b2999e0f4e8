package release

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// exactlyMasked reports whether the encoded record b of type md certainly holds nothing beyond paths
// (a field mask as fieldmask.Apply reads it), reading the wire bytes alone: every field it carries is a
// known field of the schema, covered by paths (a covered message field's whole content; a partially
// covered message field, list element or map value recursively), with the wire type its kind encodes
// to, well formed, and every string valid UTF-8. Such bytes can be forwarded as they are without
// decoding them into a dynamic message, which was most of the release path's allocations.
//
// It is only a fast path: false means "not shown cheaply", and the caller then decodes, checks and
// re-encodes as before. It returns true only for bytes whose decoded message fieldmask.Extra finds
// nothing extra in and that carry no unknown fields (TestExactlyMaskedImpliesNoExtra).
func exactlyMasked(md protoreflect.MessageDescriptor, b []byte, paths []string) bool {
	return walkMasked(md, b, paths, false)
}

// walkMasked checks message bytes b of type md; whole means everything in it is covered (unknown
// fields still are not), otherwise paths are the covered paths relative to it.
func walkMasked(md protoreflect.MessageDescriptor, b []byte, paths []string, whole bool) bool {
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		fd := fields.ByNumber(num)
		if fd == nil {
			return false // unknown: dropped and reported by the slow path
		}
		fieldWhole, sub := whole, []string(nil)
		if !whole {
			fieldWhole, sub = covered(paths, fd.Name())
			if !fieldWhole && sub == nil {
				return false // not covered: an over-share
			}
		}
		if fd.Kind() == protoreflect.GroupKind {
			return false
		}
		if fd.Message() != nil { // a message, a list of messages, or a map (of entries)
			if typ != protowire.BytesType {
				return false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			var ok bool
			if fd.IsMap() {
				ok = walkMapEntry(fd, v, sub, fieldWhole)
			} else {
				ok = walkMasked(fd.Message(), v, sub, fieldWhole)
			}
			if !ok {
				return false
			}
			continue
		}
		if !fieldWhole {
			return false // a path below a scalar names nothing, so the scalar is not covered
		}
		n = consumeScalar(fd, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// walkMapEntry checks one map entry of map field fd: the key, and the value as the mask's subject.
func walkMapEntry(fd protoreflect.FieldDescriptor, b []byte, paths []string, whole bool) bool {
	if !whole && fd.MapValue().Message() == nil {
		return false // a path below a scalar map value names nothing
	}
	entry := fd.Message()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		efd := entry.Fields().ByNumber(num)
		if efd == nil {
			return false
		}
		if efd.Message() != nil {
			if typ != protowire.BytesType || efd.Kind() == protoreflect.GroupKind {
				return false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !walkMasked(efd.Message(), v, paths, whole) {
				return false
			}
			b = b[n:]
			continue
		}
		n = consumeScalar(efd, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// covered says how paths cover the field named name: as a whole, or partly (the remaining paths
// below it), or not at all (false, nil).
func covered(paths []string, name protoreflect.Name) (whole bool, sub []string) {
	for _, p := range paths {
		if len(p) < len(name) || p[:len(name)] != string(name) {
			continue
		}
		switch {
		case len(p) == len(name):
			return true, nil
		case p[len(name)] == '.':
			sub = append(sub, p[len(name)+1:])
		}
	}
	return false, sub
}

// consumeScalar consumes one value (or a packed run) of scalar field fd encoded with wire type typ,
// returning its length, or -1 when it is not what fd's kind encodes to or is malformed.
func consumeScalar(fd protoreflect.FieldDescriptor, typ protowire.Type, b []byte) int {
	want, ok := wireType(fd.Kind())
	if !ok || fd.Kind() == protoreflect.EnumKind && fd.Enum().IsClosed() {
		return -1 // a closed enum's unknown values decode as unknown fields: left to the slow path
	}
	if typ == want {
		if want == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || fd.Kind() == protoreflect.StringKind && !utf8.Valid(v) {
				return -1
			}
			return n
		}
		return protowire.ConsumeFieldValue(0, typ, b)
	}
	// A packed run of a repeated number: every element must be whole.
	if typ != protowire.BytesType || !fd.IsList() || want == protowire.BytesType {
		return -1
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return -1
	}
	for len(v) > 0 {
		m := protowire.ConsumeFieldValue(0, want, v)
		if m < 0 {
			return -1
		}
		v = v[m:]
	}
	return n
}

// wireType is the wire type a scalar kind encodes to (unpacked).
func wireType(k protoreflect.Kind) (protowire.Type, bool) {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
		protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return protowire.VarintType, true
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type, true
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type, true
	case protoreflect.StringKind, protoreflect.BytesKind:
		return protowire.BytesType, true
	}
	return 0, false
}
