package pagetoken

import (
	"errors"
	"testing"

	"github.com/aperture-gov/aperture/broker/refusal"
)

func TestOffset(t *testing.T) {
	for _, n := range []int{0, 1, 50, 123456} {
		got, err := ParseOffset(Offset(n))
		if err != nil || got != n {
			t.Errorf("ParseOffset(Offset(%d)) = %d, %v", n, got, err)
		}
	}
	if n, err := ParseOffset(""); n != 0 || err != nil {
		t.Errorf(`ParseOffset("") = %d, %v`, n, err)
	}
	for _, bad := range []string{"x", "eDE", Offset(1) + "!", "by0x"} {
		_, err := ParseOffset(bad)
		var ref *refusal.Error
		if !errors.As(err, &ref) || ref.Kind != refusal.InvalidArgument {
			t.Errorf("ParseOffset(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}
