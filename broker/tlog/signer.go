package tlog

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Signer signs checkpoints. Its Name is the log's origin: the first line of every checkpoint. The
// local implementation keeps an Ed25519 key in the data directory; a Vault transit implementation
// signs without the key leaving Vault.
type Signer interface {
	note.Signer
	// Verifier returns the verifier of this signer's signatures.
	Verifier() note.Verifier
}

// Verifier checks checkpoint signatures; its Name is the origin.
type Verifier = note.Verifier

// Key file names in the data directory.
const (
	// SignerKeyFile holds the private note key (keep it secret).
	SignerKeyFile = "checkpoint.key"
	// VerifierKeyFile holds the public note verifier key, for auditors and citizens.
	VerifierKeyFile = "checkpoint.vkey"
)

// DefaultOrigin is the origin of logs whose key was generated without one by earlier versions; such
// keys keep it (the key file records its name). A key generated without an origin now gets
// DefaultOrigin + "/" + the first 8 hex digits of the SHA-256 of its public key, so that two
// installations never publish checkpoints under the same origin.
const DefaultOrigin = "aperture.local/access-log"

// generateKey returns a new Ed25519 note key pair named origin, or named after the key itself when
// origin is empty.
func generateKey(origin string) (skey, vkey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	if origin == "" {
		sum := sha256.Sum256(pub)
		origin = DefaultOrigin + "/" + hex.EncodeToString(sum[:4])
	}
	vkey, err = note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return "", "", err
	}
	// A note private key is "PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>": the verifier key's
	// name and hash with the seed in place of the public key.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return "", "", errors.New("unexpected verifier key format")
	}
	skey = "PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...))
	return skey, vkey, nil
}

type localSigner struct {
	note.Signer
	verifier note.Verifier
	vkey     string
}

func (s localSigner) Verifier() note.Verifier { return s.verifier }

// VerifierKey returns the note verifier key ("<name>+<hash>+<key>") of the signer, as written to
// VerifierKeyFile. It is not part of Signer; callers type-assert for it.
func (s localSigner) VerifierKey() string { return s.vkey }

// OpenLocalSigner loads the checkpoint key from dir, or creates one named origin (if empty, a name
// of this installation's own derived from the key: see DefaultOrigin) and writes its verifier key
// next to it. An existing key keeps its name: the origin of a log never changes.
func OpenLocalSigner(dir, origin string) (Signer, error) {
	path := filepath.Join(dir, SignerKeyFile)
	skey, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create key directory: %w", err)
		}
		sk, vk, gerr := generateKey(origin)
		if gerr != nil {
			return nil, fmt.Errorf("generate checkpoint key: %w", gerr)
		}
		// O_EXCL: two processes starting on one data dir must not each write a key.
		f, oerr := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if oerr != nil {
			return nil, fmt.Errorf("create checkpoint key: %w", oerr)
		}
		_, werr := f.WriteString(sk + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("write checkpoint key: %w", werr)
		}
		if err := os.WriteFile(filepath.Join(dir, VerifierKeyFile), []byte(vk+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("write checkpoint verifier key: %w", err)
		}
		skey = []byte(sk)
	} else if err != nil {
		return nil, fmt.Errorf("read checkpoint key: %w", err)
	}
	return NewSigner(strings.TrimSpace(string(skey)))
}

// NewSigner returns a signer for a note private key ("PRIVATE+KEY+name+hash+key").
func NewSigner(skey string) (Signer, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	vkey, err := verifierKeyOf(skey)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	return localSigner{Signer: s, verifier: v, vkey: vkey}, nil
}

// LoadVerifier reads a note verifier key file and returns its first key.
func LoadVerifier(path string) (Verifier, error) {
	vs, err := LoadVerifiers(path)
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

// LoadVerifiers reads a note verifier key file with one key per line, the current key first and
// then the keys of earlier versions (a Vault transit key that was rotated publishes one per version).
func LoadVerifiers(path string) ([]Verifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read verifier key: %w", err)
	}
	var vs []Verifier
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := note.NewVerifier(line)
		if err != nil {
			return nil, fmt.Errorf("verifier key %s line %d: %w", path, i+1, err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("verifier key %s: no key in the file", path)
	}
	return vs, nil
}

// verifierKeyOf derives the verifier key from a note Ed25519 private key, whose key data is the
// algorithm byte followed by the Ed25519 seed.
func verifierKeyOf(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("checkpoint key is not a note private key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("checkpoint key is not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}
