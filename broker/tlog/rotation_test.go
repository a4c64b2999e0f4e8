package tlog_test

import (
	"strings"
	"testing"

	"github.com/aperture-gov/aperture/broker/tlog"
)

// TestKeyRotation: after the checkpoint key is rotated (a new Vault transit key version), checkpoints
// signed with the old key still verify when its verifier is listed, and only then.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t)
	a := e.integrator(t, "replica-a")
	e.append(t, 100)
	e.waitCheckpoint(t, 100)
	a.Close()

	old := e.signer
	rotated, err := tlog.OpenLocalSigner(t.TempDir(), old.Name())
	if err != nil {
		t.Fatal(err)
	}
	tree, err := tlog.Open(ctx(t), e.js, rotated.Verifier(), tlog.Options{PreviousVerifiers: []tlog.Verifier{old.Verifier()}})
	if err != nil {
		t.Fatal(err)
	}
	e.tree, e.signer = tree, rotated
	e.integrator(t, "replica-b")
	e.append(t, 100)
	cp := e.waitCheckpoint(t, 200)

	// With the new key only, the old key's checkpoints do not verify: skipped and reported.
	if res, err := tlog.Verify(ctx(t), e.js, rotated.Verifier()); err != nil || len(res.Forged) == 0 || !strings.Contains(res.Forged[0].Error(), "message 1 ") {
		t.Fatalf("verify with the new key only: %v, %v; want checkpoint 1 reported as not verifying", err, res.Forged)
	}
	res, err := tlog.Verify(ctx(t), e.js, rotated.Verifier(), old.Verifier())
	if err != nil {
		t.Fatalf("verify with both key versions: %v", err)
	}
	if res.Records != 200 || res.Latest.Size != cp.Size {
		t.Fatalf("verify after rotation: %+v", res)
	}
	if _, err := tlog.OpenCheckpoint(cp.Note, old.Verifier()); err == nil {
		t.Fatal("a checkpoint signed with the new key verifies with the old key alone")
	}
}
