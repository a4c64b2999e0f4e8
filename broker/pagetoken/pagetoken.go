// Package pagetoken encodes the page tokens of the broker's list calls. Tokens are opaque to callers;
// a token this API did not return — or one returned for another query — is bad input.
//
// Two kinds: an offset into an in-memory, ordered result (Offset), and a keyset cursor (Keyset) that
// names the last key shown and the query it belongs to. A keyset page starts after its key whatever was
// added or removed meanwhile, so paging never shows an item twice and never skips one that existed
// when paging began.
package pagetoken

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"unicode"

	"github.com/aperture-gov/aperture/broker/refusal"
)

// Offset returns the token that continues a listing at position n.
func Offset(n int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("o" + strconv.Itoa(n)))
}

// ParseOffset returns the position a token continues at; "" is the start. Anything else than a token
// made by Offset is refused with InvalidArgument.
func ParseOffset(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil && len(b) > 1 && b[0] == 'o' {
		if n, err := strconv.Atoi(string(b[1:])); err == nil && n >= 0 {
			return n, nil
		}
	}
	return 0, errInvalid
}

var errInvalid = refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned")

// errOtherQuery is kept apart from errInvalid so a caller learns why its token is refused.
var errOtherQuery = refusal.New(refusal.InvalidArgument, "page_token belongs to another query: repeat the request that returned it, with the same filters")

// maxKeyLen bounds the key a keyset token carries.
const maxKeyLen = 256

// Query names a listing: every parameter that selects what is listed (the caller, the filters) but
// not the page size. A keyset token is valid only for the query it was made for.
type Query []string

// hash is the query's fingerprint in a token: it binds the token without spelling the query out.
func (q Query) hash() string {
	h := sha256.New()
	for _, p := range q {
		h.Write([]byte(strconv.Itoa(len(p))))
		h.Write([]byte{':'})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Keyset returns the token that continues listing q after key.
func Keyset(q Query, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("k" + q.hash() + ":" + key))
}

// ParseKeyset returns the key a token of q continues after; "" is the start. A token of another query
// or not made by Keyset is refused with InvalidArgument.
func ParseKeyset(tok string, q Query) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != 'k' {
		return "", errInvalid
	}
	hash, key, ok := strings.Cut(string(b[1:]), ":")
	if !ok || len(hash) != 16 || key == "" || len(key) > maxKeyLen || strings.ContainsFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "", errInvalid
	}
	if hash != q.hash() {
		return "", errOtherQuery
	}
	return key, nil
}
