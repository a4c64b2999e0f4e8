// Package vaultdeploy holds the Vault policies of deploy/vault as data, so that the tests enforce
// (against the HTTP double) and install (against a real Vault) exactly what setup.sh installs.
package vaultdeploy

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed policies/*.hcl
var policies embed.FS

// Vars fill the @NAME@ placeholders of the policy templates.
type Vars struct {
	Transit, CheckpointKey, DataKey, PKI string
	// Name is the authority or agency slug (unused for the broker).
	Name string
}

// Policy renders the policy template of a component kind: "broker", "authority" or "agency".
func Policy(kind string, v Vars) (string, error) {
	b, err := policies.ReadFile("policies/" + kind + ".hcl")
	if err != nil {
		return "", fmt.Errorf("no Vault policy for %q", kind)
	}
	return strings.NewReplacer(
		"@TRANSIT@", v.Transit, "@CHECKPOINT_KEY@", v.CheckpointKey, "@DATA_KEY@", v.DataKey,
		"@PKI@", v.PKI, "@NAME@", v.Name,
	).Replace(string(b)), nil
}
