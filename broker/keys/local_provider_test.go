package keys_test

import (
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/tlog"
)

func TestLocalProviderConformance(t *testing.T) {
	keystest.Run(t, func(t *testing.T) keystest.Opener {
		dir := t.TempDir()
		return func(t *testing.T) keys.Provider {
			p, err := keys.OpenLocalProvider(dir, "test.aperture/log")
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
	})
}

// TestLocalProviderCompatible: the provider uses the very keys existing callers use, so switching a
// deployment to it changes no pseudonym and no checkpoint key.
func TestLocalProviderCompatible(t *testing.T) {
	dir := t.TempDir()
	old, err := keys.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	oldSigner, err := tlog.OpenLocalSigner(dir, "test.aperture/log")
	if err != nil {
		t.Fatal(err)
	}
	p, err := keys.OpenLocalProvider(dir, "other.origin/ignored")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Pseudonyms().Pseudonym("0101901234"), old.Pseudonym("0101901234"); got != want {
		t.Fatalf("pseudonym %+v, want %+v", got, want)
	}
	if p.Local().KeyID() != old.KeyID() {
		t.Fatal("Local() is another key")
	}
	s := p.Checkpoints()
	if s.Name() != "test.aperture/log" || s.KeyHash() != oldSigner.KeyHash() {
		t.Fatalf("checkpoint key %s/%08x, want the existing one", s.Name(), s.KeyHash())
	}
	var _ tlog.Signer = s // assignable to broker.Deps.Checkpoints
	msg, err := note.Sign(&note.Note{Text: "test.aperture/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, oldSigner)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tlog.LoadVerifier(dir + "/" + tlog.VerifierKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if s.VerifierKeys()[0] == "" || v.KeyHash() != s.Verifier().KeyHash() {
		t.Fatal("published verifier key differs from checkpoint.vkey")
	}
	if _, err := note.Open(msg, keys.VerifierList(s)); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkLocalSeal(b *testing.B) {
	p, err := keys.OpenLocalProvider(b.TempDir(), "")
	if err != nil {
		b.Fatal(err)
	}
	s := p.Sealer()
	pt, ad := []byte("0101901234"), []byte("case/01J9ZK3M8Q")
	b.Run("Seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Seal(pt, ad)
		}
	})
	ct, _ := s.Seal(pt, ad)
	b.Run("Open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Open(ct, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}
