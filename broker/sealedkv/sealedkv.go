// Package sealedkv authenticates the records the broker keeps in JetStream KV (consents, cases,
// questions), so that a record written by anyone but the broker — a client with write access to NATS, an
// operator's hand edit, a record copied from another key — never becomes an input to a decision.
//
// A record is stored as the broker's sealing key's ciphertext (AES-256-GCM via [Sealer], the same key as
// keys.Provider.Sealer) of its JSON encoding, with associated data naming the bucket and the key it is
// stored under. Sealing the whole record rather than MACing it also hides it: the citizen id of a case,
// a question's text and the answer are not readable from a copy of the bucket.
//
// A value that does not open — forged, altered, moved from another key or bucket, sealed by a key the
// broker does not hold, or written in plain JSON before records were sealed — is reported (an
// error-level log line naming the bucket and a non-identifying part of the key, and a counter) and
// [Codec.Open] returns [ErrUnauthentic]. The stores treat such a record as absent: it can never allow a
// release, and a record that is absent is the fail-closed answer for every decision that reads one.
package sealedkv

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// Sealer encrypts with authentication; keys.Sealer (local or Vault data key) implements it.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(ciphertext, associatedData []byte) ([]byte, error)
}

// ErrUnauthentic means a stored value does not authenticate as written by the broker for its key.
var ErrUnauthentic = errors.New("stored record does not authenticate")

// Codec seals and opens the records of one KV bucket. It is safe for concurrent use.
type Codec struct {
	bucket string
	sealer Sealer
	log    *slog.Logger
	bad    atomic.Uint64
}

// New returns a Codec for bucket. sealer is required; log nil discards.
func New(bucket string, sealer Sealer, log *slog.Logger) (*Codec, error) {
	if sealer == nil {
		return nil, fmt.Errorf("KV bucket %q: a sealing key is required", bucket)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Codec{bucket: bucket, sealer: sealer, log: log}, nil
}

// associatedData binds a sealed value to its bucket and key: a value that opens under one key does not
// open under any other.
func (c *Codec) associatedData(key string) []byte {
	return []byte("aperture/kv/" + c.bucket + "/" + key)
}

// Seal returns the value to store for v under key.
func (c *Codec) Seal(key string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s record: %w", c.bucket, err)
	}
	sealed, err := c.sealer.Seal(b, c.associatedData(key))
	if err != nil {
		return nil, fmt.Errorf("seal %s record: %w", c.bucket, err)
	}
	return sealed, nil
}

// Open authenticates value, read from key, and decodes it into v. A value that does not authenticate
// is reported (see [Codec.Reject]) and Open returns an error wrapping [ErrUnauthentic]. what names the
// record in the log line and the error; it MUST NOT carry a citizen id or a field value (a journey and
// step, a case or question id).
func (c *Codec) Open(key, what string, value []byte, v any) error {
	plain, err := c.sealer.Open(value, c.associatedData(key))
	if err != nil {
		reason := "does not open with the broker's sealing key for its key (forged, altered, or copied from another key)"
		if len(value) > 0 && value[0] == '{' {
			reason = "is not sealed (plain JSON: written before records were sealed, or not by the broker)"
		}
		return c.Reject(what, reason)
	}
	if err := json.Unmarshal(plain, v); err != nil {
		// Sealed by the broker yet undecodable: a bug, not an attack; still never an input to a decision.
		return c.Reject(what, "opens but does not decode")
	}
	return nil
}

// Reject reports a record that must not be used — Open's failures, or a record whose content does not
// match its key — and returns an error wrapping [ErrUnauthentic]. The log line names the bucket and
// what; reason MUST NOT carry a citizen id or a field value either.
func (c *Codec) Reject(what, reason string) error {
	n := c.bad.Add(1)
	c.log.Error("stored record does not authenticate; treated as absent",
		"bucket", c.bucket, "record", what, "reason", reason, "unauthentic_total", n)
	return fmt.Errorf("%s record %s: %w", c.bucket, what, ErrUnauthentic)
}

// Unauthentic is how many reads found a record that did not authenticate since the Codec was made
// (one record read twice counts twice).
func (c *Codec) Unauthentic() uint64 { return c.bad.Load() }
