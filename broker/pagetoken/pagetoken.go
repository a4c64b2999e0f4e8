// Package pagetoken encodes the offset page tokens of the broker's list calls that page over an
// in-memory, ordered result (cases). Tokens are opaque to callers; a token this API did not return is
// bad input.
package pagetoken

import (
	"encoding/base64"
	"strconv"

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
	return 0, refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned")
}
