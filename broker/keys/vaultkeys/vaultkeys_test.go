package vaultkeys_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/keys/vaultkeys"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/services/kit/vault"
	"github.com/aperture-gov/aperture/services/kit/vault/vaulttest"
)

const origin = "test.aperture/log"

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// provider is a Provider that also owns its Vault client, as a broker process does.
type provider struct {
	*vaultkeys.Provider
	c *vault.Client
}

func (p provider) Close() error {
	p.Provider.Close()
	return p.c.Close()
}

// openProvider opens the broker's keys as a starting process would: log in, then open the keys.
func openProvider(t testing.TB, e *vaulttest.Env, js jetstream.JetStream) (provider, error) {
	c, err := vault.Open(ctx(t), e.Config("broker"), nil)
	if err != nil {
		return provider{}, err
	}
	p, err := vaultkeys.Open(ctx(t), c, js, vaultkeys.Options{Origin: origin})
	if err != nil {
		c.Close()
		return provider{}, err
	}
	return provider{p, c}, nil
}

func mustOpen(t testing.TB, e *vaulttest.Env, js jetstream.JetStream) provider {
	t.Helper()
	p, err := openProvider(t, e, js)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestConformance(t *testing.T) {
	vaulttest.EachBackend(t, vaulttest.Options{}, func(t *testing.T, newEnv func(testing.TB) *vaulttest.Env) {
		keystest.Run(t, func(t *testing.T) keystest.Opener {
			e, js := newEnv(t), natstest.JetStream(t)
			return func(t *testing.T) keys.Provider {
				p, err := openProvider(t, e, js)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
		})
	})
}

func checkpoint(t *testing.T, s note.Signer, size string) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: origin + "\n" + size + "\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestRotation: after the checkpoint key and the data keys rotate, old signatures and old
// ciphertexts stay valid, and the pseudonym key is not rotated (ErrPseudonymRotation).
func TestRotation(t *testing.T) {
	vaulttest.Each(t, vaulttest.Options{}, func(t *testing.T, e *vaulttest.Env) {
		js := natstest.JetStream(t)
		p1 := mustOpen(t, e, js)
		oldCP := checkpoint(t, p1.Checkpoints(), "1")
		oldCT, err := p1.Sealer().Seal([]byte("0101901234"), []byte("case/1"))
		if err != nil {
			t.Fatal(err)
		}
		oldPseudonym := p1.Pseudonyms().Pseudonym("0101901234")

		// The operator rotates the checkpoint key and the key that wraps the data keys.
		e.RotateTransitKey(t, e.Transit.CheckpointKey)
		e.RotateTransitKey(t, e.Transit.DataKey)
		// A running signer keeps its pinned version: its Name/KeyHash/signatures stay coherent.
		if p1.Signer().Version() != 1 {
			t.Fatal("running signer changed version")
		}
		if _, err := note.Open(checkpoint(t, p1.Checkpoints(), "2"), note.VerifierList(p1.Checkpoints().Verifier())); err != nil {
			t.Fatalf("running signer after rotation: %v", err)
		}

		p2 := mustOpen(t, e, js) // a restart
		s2 := p2.Signer()
		if s2.Version() != 2 || s2.KeyHash() == p1.Checkpoints().KeyHash() || len(s2.Verifiers()) != 2 {
			t.Fatalf("after rotation: version %d, %d verifiers", s2.Version(), len(s2.Verifiers()))
		}
		newCP := checkpoint(t, s2, "3")
		for name, msg := range map[string][]byte{"old": oldCP, "new": newCP} {
			if _, err := note.Open(msg, keys.VerifierList(s2)); err != nil {
				t.Errorf("%s checkpoint does not verify with the published verifiers: %v", name, err)
			}
		}
		if _, err := tlog.OpenCheckpoint(newCP, s2.Verifier()); err != nil {
			t.Errorf("tlog does not accept the new checkpoint: %v", err)
		}
		for i, vk := range s2.VerifierKeys() {
			if _, err := note.NewVerifier(vk); err != nil {
				t.Errorf("verifier key %d: %v", i, err)
			}
		}

		// The data keys were wrapped by KEK v1 and still unwrap after the KEK rotated.
		if got := p2.Pseudonyms().Pseudonym("0101901234"); got != oldPseudonym {
			t.Fatalf("pseudonym changed across KEK rotation: %+v -> %+v", oldPseudonym, got)
		}
		// Rotate the sealing key: new values use v2, v1 values still open, on every replica.
		id, err := p2.RotateDataKey(ctx(t), vaultkeys.PurposeSeal)
		if err != nil || id != "vault:seal:v2" {
			t.Fatalf("RotateDataKey = %q, %v", id, err)
		}
		newCT, err := p2.Sealer().Seal([]byte("3112991234"), []byte("case/2"))
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := keys.SealedVersion(newCT); v != 2 {
			t.Fatalf("sealed with version %d, want 2", v)
		}
		for name, p := range map[string]keys.Provider{"rotating replica": p2, "other replica": p1} {
			if pt, err := p.Sealer().Open(oldCT, []byte("case/1")); err != nil || string(pt) != "0101901234" {
				t.Errorf("%s: old ciphertext: %q, %v", name, pt, err)
			}
			if pt, err := p.Sealer().Open(newCT, []byte("case/2")); err != nil || string(pt) != "3112991234" {
				t.Errorf("%s: new ciphertext: %q, %v", name, pt, err)
			}
		}

		// The pseudonym key is not rotated: every store is keyed by it. KEYS is left as it was, so a
		// restart keeps every citizen's pseudonym.
		if id, err := p2.RotateDataKey(ctx(t), vaultkeys.PurposePseudonym); !errors.Is(err, vaultkeys.ErrPseudonymRotation) {
			t.Fatalf("RotateDataKey(pseudonym) = %q, %v; want ErrPseudonymRotation", id, err)
		}
		if got := mustOpen(t, e, js).Pseudonyms().Pseudonym("0101901234"); got != oldPseudonym {
			t.Fatalf("pseudonym after a refused rotation and a restart: %+v, want %+v", got, oldPseudonym)
		}
	})
}

// TestSecondPseudonymKeyRefused: a KEYS bucket with a second pseudonym key version (written by
// something other than this broker) stops Open with ErrPseudonymRotation, rather than switching every
// citizen to pseudonyms under which nothing of theirs is stored.
func TestSecondPseudonymKeyRefused(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	js := natstest.JetStream(t)
	mustOpen(t, e, js)
	kv, err := js.KeyValue(ctx(t), vaultkeys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := kv.Get(ctx(t), vaultkeys.PurposePseudonym+".1")
	if err != nil {
		t.Fatal(err)
	}
	// Version 1's wrapped key relabelled as version 2: it unwraps, so only the version count refuses.
	v2 := strings.Replace(string(v1.Value()), `"version":1`, `"version":2`, 1)
	if v2 == string(v1.Value()) {
		t.Fatalf("entry %s has no version field: %s", v1.Key(), v1.Value())
	}
	if _, err := kv.Create(ctx(t), vaultkeys.PurposePseudonym+".2", []byte(v2)); err != nil {
		t.Fatal(err)
	}
	if p, err := openProvider(t, e, js); !errors.Is(err, vaultkeys.ErrPseudonymRotation) {
		if err == nil {
			p.Close()
		}
		t.Fatalf("Open with two pseudonym keys: %v, want ErrPseudonymRotation", err)
	}
}

// TestReplicasAgree: replicas starting together on an empty bucket end up with one data key.
func TestReplicasAgree(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	js := natstest.JetStream(t)
	const n = 5
	got := make([]keys.Pseudonym, n)
	cts := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p := mustOpen(t, e, js)
			got[i] = p.Pseudonyms().Pseudonym("0101901234")
			cts[i], _ = p.Sealer().Seal([]byte("x"), nil)
		})
	}
	wg.Wait()
	check := mustOpen(t, e, js)
	for i := range n {
		if got[i] != got[0] {
			t.Fatalf("replica %d pseudonym %+v, replica 0 %+v", i, got[i], got[0])
		}
		if _, err := check.Sealer().Open(cts[i], nil); err != nil {
			t.Fatalf("replica %d sealed with a key the others do not have: %v", i, err)
		}
	}
}

// TestFailClosed: no Vault at start means no keys (no fallback); Vault failing while running means
// no checkpoint signature, while the hot path (pseudonyms, sealing) keeps working from memory.
func TestFailClosed(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	js := natstest.JetStream(t)

	t.Run("unwrap refused at start", func(t *testing.T) {
		e.Double.Fail(e.Transit.Mount+"/decrypt/", http.StatusForbidden)
		defer e.Double.Fail(e.Transit.Mount+"/decrypt/", 0)
		if _, err := openProvider(t, e, js); err == nil || !strings.Contains(err.Error(), "unwrap") {
			t.Fatalf("Open = %v, want an unwrap error", err)
		}
	})

	p := mustOpen(t, e, js)
	s := p.Checkpoints()
	signs := e.Double.Count("sign")
	ct, _ := p.Sealer().Seal([]byte("0101901234"), nil)

	tests := []struct {
		name  string
		fault func()
		clear func()
	}{
		{"vault 503", func() { e.Double.Fail(e.Transit.Mount+"/sign/", http.StatusServiceUnavailable) }, func() { e.Double.Fail(e.Transit.Mount+"/sign/", 0) }},
		{"permission denied", func() { e.Double.Fail(e.Transit.Mount+"/sign/", http.StatusForbidden) }, func() { e.Double.Fail(e.Transit.Mount+"/sign/", 0) }},
		{"unreachable", func() { e.Double.SetDown(true) }, func() { e.Double.SetDown(false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fault()
			if _, err := note.Sign(&note.Note{Text: origin + "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, s); err == nil {
				t.Fatal("checkpoint signed while Vault cannot sign")
			}
			// The hot path does not touch Vault.
			p.Pseudonyms().Pseudonym("0101901234")
			if _, err := p.Sealer().Open(ct, nil); err != nil {
				t.Fatalf("open while Vault is failing: %v", err)
			}
			if _, err := p.Sealer().Seal([]byte("x"), nil); err != nil {
				t.Fatalf("seal while Vault is failing: %v", err)
			}
			tt.clear()
			checkpoint(t, s, "1")
		})
	}
	if n := e.Double.Count("sign"); n != signs+len(tests) {
		t.Fatalf("%d signatures made, want %d", n-signs, len(tests))
	}

	e.Double.Close()
	if _, err := openProvider(t, e, js); err == nil || !strings.Contains(err.Error(), "not usable") {
		t.Fatalf("Open with Vault down = %v, want a clear error", err)
	}
}

// TestNoVaultCallsOnHotPath counts Vault requests around many pseudonyms and seal/open calls.
func TestNoVaultCallsOnHotPath(t *testing.T) {
	e := vaulttest.NewDoubleEnv(t, vaulttest.Options{})
	p := mustOpen(t, e, natstest.JetStream(t))
	before := e.Double.Count("decrypt") + e.Double.Count("datakey") + e.Double.Count("sign")
	for i := range 1000 {
		p.Pseudonyms().Pseudonym("0101901234")
		ct, err := p.Sealer().Seal([]byte{byte(i)}, nil)
		if err == nil {
			_, err = p.Sealer().Open(ct, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if after := e.Double.Count("decrypt") + e.Double.Count("datakey") + e.Double.Count("sign"); after != before {
		t.Fatalf("%d Vault calls on the hot path", after-before)
	}
	if _, err := p.Sealer().Open([]byte{1, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28}, nil); !errors.Is(err, keys.ErrOpen) {
		t.Fatalf("unknown version: %v", err)
	}
}

func BenchmarkHotPath(b *testing.B) {
	e := vaulttest.NewDoubleEnv(b, vaulttest.Options{})
	p := mustOpen(b, e, natstest.JetStream(b))
	ps, s := p.Pseudonyms(), p.Sealer()
	pt, ad := []byte("0101901234"), []byte("case/01J9ZK3M8Q")
	b.Run("Pseudonym", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ps.Pseudonym("0101901234")
		}
	})
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
	b.Run("SignCheckpoint(double)", func(b *testing.B) {
		msg := []byte(origin + "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
		for b.Loop() {
			if _, err := p.Checkpoints().Sign(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
