// Package pagetoken encodes the page tokens of the broker's list calls. Tokens are opaque to callers;
// a token this API did not return — or one returned for another query — is bad input.
//
// A token is a keyset cursor (Keyset) that names the last key shown and the query it belongs to. A page
// starts after its key whatever was added or removed meanwhile, so paging never shows an item twice and
// never skips one that existed when paging began. (An offset token did not have that property, and
// went when the last listing that used it, the citizen's cases, moved to a keyset.)
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
