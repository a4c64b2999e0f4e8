// Package keystest is the conformance suite of keys.Provider: every implementation (local files,
// Vault) must pass Run unchanged.
package keystest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/keys"
)

// Opener opens a provider over one persistent key store. Every call made with the same Opener must
// see the same keys, as a restarted process or another replica would.
type Opener func(t *testing.T) keys.Provider

// Run runs the suite. setup is called once per subtest and returns a fresh key store's Opener; the
// providers it opens are closed by the suite.
func Run(t *testing.T, setup func(t *testing.T) Opener) {
	open := func(t *testing.T, o Opener) keys.Provider {
		t.Helper()
		p := o(t)
		t.Cleanup(func() {
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return p
	}
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)

	t.Run("PseudonymDeterministic", func(t *testing.T) {
		p := open(t, setup(t)).Pseudonyms()
		for _, id := range []string{"0101901234", "3112991234", ""} {
			a, b := p.Pseudonym(id), p.Pseudonym(id)
			if a != b {
				t.Fatalf("Pseudonym(%q) differs between calls: %+v, %+v", id, a, b)
			}
			if !hex32.MatchString(a.Value) || a.KeyID == "" {
				t.Fatalf("Pseudonym(%q) = %+v: want 32 lowercase hex and a key id", id, a)
			}
			if strings.Contains(a.Value, id) && id != "" || strings.Contains(a.KeyID, id) && id != "" {
				t.Fatalf("pseudonym carries the citizen id")
			}
		}
		if p.Pseudonym("0101901234").Value == p.Pseudonym("0101901235").Value {
			t.Fatal("two citizens share a pseudonym")
		}
	})

	t.Run("PseudonymStableAcrossReopen", func(t *testing.T) {
		o := setup(t)
		a := open(t, o).Pseudonyms().Pseudonym("0101901234")
		b := open(t, o).Pseudonyms().Pseudonym("0101901234")
		if a != b {
			t.Fatalf("pseudonym changed across reopen: %+v then %+v", a, b)
		}
	})

	t.Run("PseudonymDiffersBetweenStores", func(t *testing.T) {
		a := open(t, setup(t)).Pseudonyms().Pseudonym("0101901234")
		b := open(t, setup(t)).Pseudonyms().Pseudonym("0101901234")
		if a.Value == b.Value {
			t.Fatal("two key stores give the same pseudonym")
		}
	})

	t.Run("SignerSignsNotes", func(t *testing.T) {
		s := open(t, setup(t)).Checkpoints()
		if s.Name() == "" || s.Verifier().Name() != s.Name() || s.Verifier().KeyHash() != s.KeyHash() {
			t.Fatalf("signer %q/%08x has verifier %q/%08x", s.Name(), s.KeyHash(), s.Verifier().Name(), s.Verifier().KeyHash())
		}
		text := s.Name() + "\n42\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
		msg, err := note.Sign(&note.Note{Text: text}, s)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		n, err := note.Open(msg, note.VerifierList(s.Verifier()))
		if err != nil || n.Text != text {
			t.Fatalf("open signed note: %v", err)
		}
		// The published verifier keys are standard note keys (what auditors and citizens use).
		vkeys := s.VerifierKeys()
		if len(vkeys) == 0 || len(vkeys) != len(s.Verifiers()) {
			t.Fatalf("%d verifier keys for %d verifiers", len(vkeys), len(s.Verifiers()))
		}
		v, err := note.NewVerifier(vkeys[len(vkeys)-1])
		if err != nil {
			t.Fatalf("published verifier key: %v", err)
		}
		if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
			t.Fatalf("published verifier key does not verify: %v", err)
		}
		if _, err := note.Open(msg, keys.VerifierList(s)); err != nil {
			t.Fatalf("VerifierList does not verify: %v", err)
		}
		forged := bytes.Replace(msg, []byte("\n42\n"), []byte("\n43\n"), 1)
		if _, err := note.Open(forged, note.VerifierList(s.Verifier())); err == nil {
			t.Fatal("an altered checkpoint verifies")
		}
	})

	t.Run("SignerStableAcrossReopen", func(t *testing.T) {
		o := setup(t)
		s1 := open(t, o).Checkpoints()
		msg, err := note.Sign(&note.Note{Text: s1.Name() + "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, s1)
		if err != nil {
			t.Fatal(err)
		}
		s2 := open(t, o).Checkpoints()
		if s2.Name() != s1.Name() || s2.KeyHash() != s1.KeyHash() {
			t.Fatalf("checkpoint key changed across reopen")
		}
		if _, err := note.Open(msg, note.VerifierList(s2.Verifier())); err != nil {
			t.Fatalf("a checkpoint signed before reopen does not verify after: %v", err)
		}
	})

	t.Run("SealOpen", func(t *testing.T) {
		s := open(t, setup(t)).Sealer()
		for _, pt := range [][]byte{[]byte("0101901234"), {}, bytes.Repeat([]byte{7}, 4096)} {
			ad := []byte("case/42")
			ct, err := s.Seal(pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			if len(pt) > 0 && bytes.Contains(ct, pt) {
				t.Fatal("ciphertext contains the plaintext")
			}
			got, err := s.Open(ct, ad)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Open = %q, %v; want %q", got, err, pt)
			}
			ct2, _ := s.Seal(pt, ad)
			if bytes.Equal(ct, ct2) {
				t.Fatal("sealing twice gives the same ciphertext (nonce reuse)")
			}
		}
	})

	t.Run("OpenRejects", func(t *testing.T) {
		s := open(t, setup(t)).Sealer()
		ct, err := s.Seal([]byte("0101901234"), []byte("case/42"))
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			ct   []byte
			ad   string
		}{
			{"other associated data", ct, "case/43"},
			{"empty", nil, "case/42"},
			{"truncated", ct[:len(ct)-1], "case/42"},
			{"short", ct[:8], "case/42"},
		}
		for i := range ct {
			bad := bytes.Clone(ct)
			bad[i] ^= 0x01
			tests = append(tests, struct {
				name string
				ct   []byte
				ad   string
			}{fmt.Sprintf("bit flipped at %d", i), bad, "case/42"})
		}
		for _, tt := range tests {
			got, err := s.Open(tt.ct, []byte(tt.ad))
			if err == nil {
				t.Fatalf("%s: Open succeeded", tt.name)
			}
			if !errors.Is(err, keys.ErrOpen) || got != nil {
				t.Fatalf("%s: Open = %q, %v; want nil and keys.ErrOpen", tt.name, got, err)
			}
			if strings.Contains(err.Error(), "0101901234") {
				t.Fatalf("%s: error carries the plaintext", tt.name)
			}
		}
	})

	t.Run("OpenAcrossReopen", func(t *testing.T) {
		o := setup(t)
		ct, err := open(t, o).Sealer().Seal([]byte("0101901234"), []byte("case/42"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := open(t, o).Sealer().Open(ct, []byte("case/42"))
		if err != nil || string(got) != "0101901234" {
			t.Fatalf("Open after reopen = %q, %v", got, err)
		}
		if _, err := open(t, setup(t)).Sealer().Open(ct, []byte("case/42")); err == nil {
			t.Fatal("another key store opens the ciphertext")
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		p := open(t, setup(t))
		ps, s := p.Pseudonyms(), p.Sealer()
		want := ps.Pseudonym("0101901234")
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 200 {
					if got := ps.Pseudonym("0101901234"); got != want {
						t.Errorf("concurrent Pseudonym = %+v, want %+v", got, want)
						return
					}
					ct, err := s.Seal([]byte("x"), nil)
					if err == nil {
						_, err = s.Open(ct, nil)
					}
					if err != nil {
						t.Errorf("concurrent seal/open: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// Sealer is a fresh random data key (AES-256) for tests that need the broker's sealing key — the
// access log MACs every batch with it, the stores seal their records with it — but test something else.
func Sealer(t testing.TB) *keys.AEADRing {
	t.Helper()
	key := make([]byte, keys.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	r := keys.NewAEADRing()
	if err := r.Add(1, key); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCurrent(1); err != nil {
		t.Fatal(err)
	}
	return r
}
