package server

import (
	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// fastValidator answers the hot path's requests with a hand-written check of exactly their
// protovalidate rules, without CEL or regular expressions, and hands everything else, and every
// request the hand check does not accept, to protovalidate. A hand check only ever accepts a request
// protovalidate accepts (TestHandChecksAcceptOnlyValid, FuzzReleaseRequestCheck), so an invalid
// request is refused with protovalidate's own violations, and changing the rules in the proto fails
// TestHandCheckedRulesUnchanged until the hand check follows.
type fastValidator struct {
	full protovalidate.Validator
}

func (v fastValidator) Validate(msg proto.Message, opts ...protovalidate.ValidationOption) error {
	if len(opts) == 0 {
		if m, ok := msg.(*brokerv1.ReleaseRequest); ok && releaseRequestValid(m) {
			return nil
		}
	}
	return v.full.Validate(msg, opts...)
}

// releaseRequestValid reports whether m certainly satisfies ReleaseRequest's rules:
//
//	case_id    ^case_[0-9a-z]{26}$
//	authority  ^[a-z][a-z0-9_]{0,31}$
//	dataset    ^[a-z][a-z0-9_]{0,62}$
//	fields     at most 256, unique, each at most 256 characters and ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$
//	derived    at most 64, unique, each ^[a-z][a-z0-9_]{0,62}$
//	hidden_until (a Timestamp) has no rules.
func releaseRequestValid(m *brokerv1.ReleaseRequest) bool {
	id := m.GetCaseId()
	if len(id) != len("case_")+26 || id[:5] != "case_" {
		return false
	}
	for i := 5; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	if !slug(m.GetAuthority(), 32) || !slug(m.GetDataset(), 63) {
		return false
	}
	fields := m.GetFields()
	if len(fields) > 256 || !unique(fields) {
		return false
	}
	for _, f := range fields {
		if len(f) > 256 || !fieldPath(f) {
			return false
		}
	}
	derived := m.GetDerived()
	if len(derived) > 64 || !unique(derived) {
		return false
	}
	for _, d := range derived {
		if !slug(d, 63) {
			return false
		}
	}
	return true
}

// slug reports whether s matches ^[a-z][a-z0-9_]{0,max-1}$.
func slug(s string, max int) bool {
	if len(s) == 0 || len(s) > max || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// fieldPath reports whether s matches ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$: dot-separated segments,
// each a lower-case letter followed by letters, digits and underscores.
func fieldPath(s string) bool {
	start := true // at the first byte of a segment
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case start:
			if c < 'a' || c > 'z' {
				return false
			}
			start = false
		case c == '.':
			start = true
		case !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'):
			return false
		}
	}
	return !start // not empty, and no trailing dot
}

// unique reports whether no string occurs twice in ss (a map only for long lists).
func unique(ss []string) bool {
	if len(ss) <= 16 {
		for i := range ss {
			for j := i + 1; j < len(ss); j++ {
				if ss[i] == ss[j] {
					return false
				}
			}
		}
		return true
	}
	seen := make(map[string]struct{}, len(ss))
	for _, s := range ss {
		if _, dup := seen[s]; dup {
			return false
		}
		seen[s] = struct{}{}
	}
	return true
}
