package keys

import (
	"errors"

	"golang.org/x/mod/sumdb/note"
)

// Provider bundles the broker's three keys. Implementations: [OpenLocalProvider] (files in the data
// directory) and vaultkeys.Open (Vault transit).
type Provider interface {
	// Pseudonyms keys citizen pseudonyms. It never does I/O: the hot path must not wait for a key
	// server.
	Pseudonyms() Pseudonymizer
	// Checkpoints signs the access log's checkpoints. Its method set includes tlog.Signer's, so it can
	// be assigned to broker.Deps.Checkpoints.
	Checkpoints() Signer
	// Sealer encrypts sensitive state at rest (for example the raw citizen id in a case record). It
	// never does I/O on the hot path.
	Sealer() Sealer
	// Close releases background work (token renewal, watchers). The keys must not be used afterwards.
	Close() error
}

// Signer signs checkpoints as C2SP signed notes with Ed25519. Its Name is the log's origin.
//
// Sign may fail (for example when a remote key server is unreachable); callers must then not publish
// the checkpoint: there is no fallback to another key.
type Signer interface {
	note.Signer
	// Verifier verifies the signatures Sign makes now.
	Verifier() note.Verifier
	// Verifiers verifies every key version that ever signed, oldest first; the last one is Verifier.
	// After a key rotation old checkpoints verify with an earlier entry.
	Verifiers() []note.Verifier
	// VerifierKeys are the note verifier keys ("<name>+<hash>+<key>") of Verifiers, in the same
	// order, for publishing next to the checkpoints.
	VerifierKeys() []string
}

// Sealer encrypts small values at rest with AES-256-GCM. The ciphertext names the key version that
// sealed it, so values sealed before a key rotation still open. associatedData is authenticated but
// not encrypted: bind a ciphertext to where it is stored (for example the case id), so that it cannot
// be moved to another record.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(ciphertext, associatedData []byte) ([]byte, error)
}

// ErrOpen is returned (wrapped) by Sealer.Open for a ciphertext that is malformed, was altered, was
// sealed with other associated data, or names a key version this Sealer does not hold.
var ErrOpen = errors.New("cannot open sealed value")

// VerifierList returns the note.Verifiers of every version of s, for note.Open and for checkpoints
// signed before a key rotation.
func VerifierList(s Signer) note.Verifiers { return note.VerifierList(s.Verifiers()...) }
