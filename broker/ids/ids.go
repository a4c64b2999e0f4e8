// Package ids makes the broker's identifiers: a prefix, then 26 lowercase Crockford base32 characters —
// 48 bits of millisecond time (so ids sort by creation) and 80 random bits (so they cannot be guessed).
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// New returns prefix + "_" + a time-ordered random id, e.g. "case_01jd3x0m6k9w2e5r7t8y4b1c0a".
func New(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	return FromBytes(prefix, b)
}

// FromBytes returns prefix + "_" + b in the same 26 base32 digits as New: for ids derived from
// something else (a hash) that must look and validate like any other.
func FromBytes(prefix string, b [16]byte) string {
	var sb strings.Builder
	sb.Grow(len(prefix) + 27)
	sb.WriteString(prefix)
	sb.WriteByte('_')
	// 128 bits → 26 base32 digits (130 bits, top two are zero).
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	sb.Write(out[:])
	return sb.String()
}

// Valid reports whether id has the form New(prefix, …) produces.
func Valid(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(alphabet, rest[i]) < 0 {
			return false
		}
	}
	return true
}

// Time returns the creation time New wrote into id, and false if id does not have the form
// Valid(prefix, id) accepts. For an id made by FromBytes it is whatever the bytes say.
func Time(prefix, id string) (time.Time, bool) {
	if !Valid(prefix, id) {
		return time.Time{}, false
	}
	// The first ten digits are 50 bits: two zero bits, then the 48 bits of Unix milliseconds.
	var ms int64
	for i := range 10 {
		ms = ms<<5 | int64(strings.IndexByte(alphabet, id[len(prefix)+1+i]))
	}
	return time.UnixMilli(ms), true
}
