package citizen_test

import (
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// splitReveals separates the early reveals of covert steps (ACCESS_KIND_COVERT_REVEALED) from the rest.
func splitReveals(as []*citizenv1.Access) (rest, reveals []*citizenv1.Access) {
	for _, a := range as {
		if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED {
			reveals = append(reveals, a)
		} else {
			rest = append(rest, a)
		}
	}
	return rest, reveals
}
