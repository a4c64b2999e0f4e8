// Package keys holds the broker's keys behind small interfaces: the citizen pseudonym key (the keyed
// HMAC that replaces a citizen id in the access log and on NATS subjects, so neither ever carries the
// id itself), the checkpoint signing key, and the data key that encrypts sensitive state at rest.
//
// A [Provider] bundles the three. [OpenLocalProvider] keeps them in files in the data directory
// (embedded deployments, development); package vaultkeys implements the same interfaces with Vault
// transit for scaled-out deployments. Package keystest is the conformance suite both pass.
package keys

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Pseudonymizer turns a citizen id into the keyed pseudonym used in the access log and on NATS
// subjects. Implementations MUST be deterministic for a given key and safe for concurrent use.
type Pseudonymizer interface {
	Pseudonym(citizenID string) Pseudonym
}

// Pseudonym is a citizen's pseudonym under one key.
type Pseudonym struct {
	// Value is 32 lowercase hex characters: the first 16 bytes of HMAC-SHA256(key, citizen id).
	Value string
	// KeyID names the key, so pseudonyms stay resolvable after the key is rotated.
	KeyID string
}

// KeyFile is the name of the key file inside the directory given to OpenLocal.
const KeyFile = "pseudonym.key"

const keySize = 32

// Local is a Pseudonymizer with the key in a local file.
type Local struct {
	keyID string
	// Pooled HMAC states: hmac.New hashes the key into fresh inner and outer states on every call,
	// a pooled one only needs Reset.
	pool sync.Pool
}

var _ Pseudonymizer = (*Local)(nil)

// OpenLocal loads the key from <dir>/pseudonym.key, creating the directory and a random 32-byte key
// (mode 0600) if absent. It refuses a key file that others can read.
func OpenLocal(dir string) (*Local, error) {
	key, err := loadOrCreateKey(dir, KeyFile, "pseudonym key")
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(key)
	l := &Local{keyID: "local:" + hex.EncodeToString(sum[:4])}
	l.pool.New = func() any { return hmac.New(sha256.New, key) }
	return l, nil
}

// KeyID is the id of the key, as in every Pseudonym this Local returns.
func (l *Local) KeyID() string { return l.keyID }

// Pseudonym implements Pseudonymizer.
func (l *Local) Pseudonym(citizenID string) Pseudonym {
	h := l.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(citizenID))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	l.pool.Put(h)
	return Pseudonym{Value: hex.EncodeToString(sum[:16]), KeyID: l.keyID}
}

// loadOrCreateKey loads the 32-byte key <dir>/<file>, creating it if absent. what names the key in
// errors.
func loadOrCreateKey(dir, file, what string) ([]byte, error) {
	path := filepath.Join(dir, file)
	key, err := loadKey(path, what)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKey(dir, path, what)
	}
	return key, err
}

func loadKey(path, what string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %#o: others can read it; chmod 600 it", what, path, perm)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("%s %s has %d bytes, want %d", what, path, len(key), keySize)
	}
	return key, nil
}

// createKey writes a new key to a temporary file and links it into place, so a crash never leaves a
// half-written key and two processes racing to create it end up with the same one.
func createKey(dir, path, what string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate %s: %w", what, err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create %s: %w", what, err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", what, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("sync %s: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", what, err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return loadKey(path, what) // another process created it first
	} else if err != nil {
		return nil, fmt.Errorf("install %s: %w", what, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Make the new directory entry durable too; losing the key would orphan every pseudonym.
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("sync key directory: %w", err)
		}
	}
	return key, nil
}
