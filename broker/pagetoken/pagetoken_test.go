package pagetoken

import (
	"errors"
	"testing"

	"github.com/aperture-gov/aperture/broker/refusal"
)

func TestKeyset(t *testing.T) {
	q := Query{"agency", "municipality", "only_current=false"}
	key := "case_01m83t4cm05rpqtpw37pm02gp6"
	if got, err := ParseKeyset(Keyset(q, key), q); err != nil || got != key {
		t.Fatalf("ParseKeyset(Keyset(%q)) = %q, %v", key, got, err)
	}
	if got, err := ParseKeyset("", q); got != "" || err != nil {
		t.Fatalf(`ParseKeyset("") = %q, %v`, got, err)
	}
	tok := Keyset(q, key)
	for name, tc := range map[string]struct {
		tok string
		q   Query
	}{
		"another caller":              {tok, Query{"agency", "tax", "only_current=false"}},
		"another filter":              {tok, Query{"agency", "municipality", "only_current=true"}},
		"parameters shifted":          {Keyset(Query{"ab", "c"}, key), Query{"a", "bc"}},
		"an offset token":             {"bzM", q}, // what the offset tokens of earlier releases looked like
		"garbage":                     {"!!", q},
		"empty key":                   {Keyset(q, ""), q},
		"control character in key":    {Keyset(q, "case\n"), q},
		"key longer than any case id": {Keyset(q, string(make([]byte, 300))), q},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseKeyset(tc.tok, tc.q)
			var ref *refusal.Error
			if !errors.As(err, &ref) || ref.Kind != refusal.InvalidArgument {
				t.Errorf("ParseKeyset = %v, want InvalidArgument", err)
			}
		})
	}
}
