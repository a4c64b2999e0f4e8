// Package policies holds Aperture's policy files as data: the authority registry (registry.yaml) and
// one journey per life event (journeys/*.yaml). The broker loads and checks them with broker/policy;
// this package only embeds them so that the binary carries a working policy set.
package policies

import (
	"embed"
	"io/fs"
)

// files is the embedded policy tree. embed needs a package variable; it is read-only.
//
//go:embed registry.yaml events.yaml journeys tests
var files embed.FS

// Files returns the embedded policy tree: registry.yaml, journeys/*.yaml and the policy tests,
// tests/*.yaml (which the broker does not load, but its tests run).
func Files() fs.FS { return files }
