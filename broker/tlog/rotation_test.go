package tlog_test

import (
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

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

// TestDefaultOrigin: a key made without an origin is named after itself, so two installations
// differ; an explicit origin wins; an existing key keeps its name.
func TestDefaultOrigin(t *testing.T) {
	a, err := tlog.OpenLocalSigner(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tlog.OpenLocalSigner(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Name(), tlog.DefaultOrigin+"/") || len(a.Name()) != len(tlog.DefaultOrigin)+9 || a.Name() == b.Name() {
		t.Fatalf("default origins %q and %q: want distinct %s/<8 hex digits>", a.Name(), b.Name(), tlog.DefaultOrigin)
	}
	dir := t.TempDir()
	c, err := tlog.OpenLocalSigner(dir, "gov.example/access-log")
	if err != nil || c.Name() != "gov.example/access-log" {
		t.Fatalf("explicit origin: %v %v", c, err)
	}
	again, err := tlog.OpenLocalSigner(dir, "")
	if err != nil || again.Name() != c.Name() || again.Verifier().KeyHash() != c.Verifier().KeyHash() {
		t.Fatalf("reopened key: %v %v", again, err)
	}
	// The generated key signs notes its published verifier key accepts.
	cp, err := note.Sign(&note.Note{Text: "hello\n"}, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(cp, note.VerifierList(a.Verifier())); err != nil {
		t.Fatalf("a signature of the generated key does not verify: %v", err)
	}
}
