// Package sealedkv authenticates the records the broker keeps in JetStream KV (consents, cases,
// questions), so that a record written by anyone but the broker — a client with write access to NATS, an
// operator's hand edit, a record copied from another key — never becomes an input to a decision.
//
// A record is stored as the broker's sealing key's ciphertext (AES-256-GCM via [Sealer], the same key as
// keys.Provider.Sealer) of its JSON encoding, with associated data naming the bucket and the key it is
// stored under. Sealing the whole record rather than MACing it also hides it: the citizen id of a case,
// a question's text and the answer are not readable from a copy of the bucket.
//
// Sealing alone would let someone with write access put back an older record the broker itself sealed
// for the same key: a consent from before its revocation, a case from before a step was completed. So
// each sealed record also names the KV revision it replaced, every write is a compare-and-set on that
// revision, and [Codec.Open] checks that the record is the write that directly followed it on its key:
// an older record written back is not, because the record that first followed its revision is still in
// the key's history.
//
// A value that does not open — forged, altered, moved from another key or bucket, sealed by a key the
// broker does not hold, written back from an earlier revision, or written in plain JSON before records
// were sealed — is reported (an error-level log line naming the bucket and a non-identifying part of
// the key, and a counter) and [Codec.Open] returns [ErrUnauthentic]. The stores treat such a record as
// absent: it can never allow a release, and a record that is absent is the fail-closed answer for
// every decision that reads one.
//
// What this does not cover: a principal with JetStream administration rights can purge a key's history
// (or delete the bucket) and then write an old record back with nothing left to compare it with. That
// is kept out by NATS authorization (only the broker may use the JetStream API), not by this package.
package sealedkv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
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
	stream jetstream.Stream // the bucket's stream, to look up a key's history
	log    *slog.Logger
	bad    atomic.Uint64
}

// Token reports whether s can be one token of a store's key: 1 to 128 of [0-9A-Za-z_-], so no dot,
// wildcard or space can change which keys a key or a filter names.
func Token(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Options configures a store of sealed records: every store of the broker's state takes these.
type Options struct {
	// Replicas of the bucket (and of any stream the store keeps with it): 1 embedded, 3 in a cluster.
	Replicas int
	// Sealer seals every record (keys.Provider.Sealer). Required.
	Sealer Sealer
	// Logger receives the error-level line for a record that does not authenticate; nil discards.
	Logger *slog.Logger
}

// Open creates (or binds and updates) the KV bucket cfg describes, on file storage with at least one
// replica, and returns it with its Codec: what every store of sealed records starts with.
func Open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, sealer Sealer, log *slog.Logger) (jetstream.KeyValue, *Codec, error) {
	cfg.Storage = jetstream.FileStorage
	cfg.Replicas = max(cfg.Replicas, 1)
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("open KV bucket %q: %w", cfg.Bucket, err)
	}
	codec, err := New(ctx, js, cfg.Bucket, sealer, log)
	if err != nil {
		return nil, nil, err
	}
	return kv, codec, nil
}

// New returns a Codec for the KV bucket, which must exist. sealer is required; log nil discards.
func New(ctx context.Context, js jetstream.JetStream, bucket string, sealer Sealer, log *slog.Logger) (*Codec, error) {
	if sealer == nil {
		return nil, fmt.Errorf("KV bucket %q: a sealing key is required", bucket)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("KV bucket %q: bind its stream: %w", bucket, err)
	}
	return &Codec{bucket: bucket, sealer: sealer, stream: stream, log: log}, nil
}

// envelope is what is sealed: the record and the revision of the key it replaced.
type envelope struct {
	// Prev is the key's revision this write replaced; 0 when it created the key.
	Prev   uint64          `json:"prev"`
	Record json.RawMessage `json:"record"`
}

// associatedData binds a sealed value to its bucket and key: a value that opens under one key does not
// open under any other.
func (c *Codec) associatedData(key string) []byte {
	return []byte("aperture/kv/" + c.bucket + "/" + key)
}

// Seal returns the value to store for v under key, replacing revision prev of the key (0: the key does
// not exist). The write MUST be a compare-and-set on prev — KeyValue.Create when prev is 0, else
// KeyValue.Update with prev — or Open reports the record as written back.
func (c *Codec) Seal(key string, prev uint64, v any) ([]byte, error) {
	rec, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s record: %w", c.bucket, err)
	}
	b, err := json.Marshal(envelope{Prev: prev, Record: rec})
	if err != nil {
		return nil, fmt.Errorf("encode %s record: %w", c.bucket, err)
	}
	sealed, err := c.sealer.Seal(b, c.associatedData(key))
	if err != nil {
		return nil, fmt.Errorf("seal %s record: %w", c.bucket, err)
	}
	return sealed, nil
}

// Write stores v under key as the write that replaces revision prev — 0 when the key has no history
// at all, else the revision last read — as a compare-and-set on prev, and returns the new revision.
// When prev is not the key's latest revision the write fails with jetstream's wrong-last-sequence
// error ([IsConflict]) and changes nothing.
func (c *Codec) Write(ctx context.Context, kv jetstream.KeyValue, key string, prev uint64, v any) (uint64, error) {
	b, err := c.Seal(key, prev, v)
	if err != nil {
		return 0, err
	}
	// Update with revision 0 expects no message at all on the key (Create would also write over a
	// delete marker, which the record would then not name).
	rev, err := kv.Update(ctx, key, b, prev)
	if err != nil {
		return 0, fmt.Errorf("write %s record: %w", c.bucket, err)
	}
	return rev, nil
}

// IsConflict reports whether err from [Codec.Write] means the key changed since prev was read.
func IsConflict(err error) bool {
	// ErrKeyRevisionMismatch covers both server error codes (10071, and 10164 on replicated streams).
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// Latest returns the revision of the last message on key, whatever it holds (a record that does not
// authenticate, a delete marker), or 0 when the key has no history: the prev for a write that
// replaces whatever is there.
func (c *Codec) Latest(ctx context.Context, key string) (uint64, error) {
	m, err := c.stream.GetLastMsgForSubject(ctx, "$KV."+c.bucket+"."+key)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read %s history: %w", c.bucket, err)
	}
	return m.Sequence, nil
}

// Open authenticates e, read from the bucket (KeyValue.Get or a watch), and decodes its record into
// v. A record that does not authenticate, or was written back over a later one, is reported (see
// [Codec.Reject]) and Open returns an error wrapping [ErrUnauthentic]. Any other error means the
// key's history could not be read: the record is neither trusted nor reported, and the caller fails
// closed (unavailable). what names the record in the log line and the error; it MUST NOT carry a
// citizen id or a field value (a journey and step, a case or question id).
func (c *Codec) Open(ctx context.Context, e jetstream.KeyValueEntry, what string, v any) error {
	value := e.Value()
	plain, err := c.sealer.Open(value, c.associatedData(e.Key()))
	if err != nil {
		reason := "does not open with the broker's sealing key for its key (forged, altered, or copied from another key)"
		if len(value) > 0 && value[0] == '{' {
			reason = "is not sealed (plain JSON: written before records were sealed, or not by the broker)"
		}
		return c.Reject(what, reason)
	}
	var env envelope
	if err := json.Unmarshal(plain, &env); err != nil || len(env.Record) == 0 {
		// Sealed by the broker yet undecodable: a bug, not an attack; still never an input to a decision.
		return c.Reject(what, "opens but does not decode")
	}
	if env.Prev >= e.Revision() {
		return c.Reject(what, "names a revision it replaced that is not older than itself")
	}
	// The write that directly followed env.Prev on this key must be this one. Sequences in the key's
	// history are the bucket stream's: ask for the first message on the key's subject after env.Prev.
	next, err := c.stream.GetMsg(ctx, env.Prev+1, jetstream.WithGetMsgSubject("$KV."+c.bucket+"."+e.Key()))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// We just read revision e.Revision() > env.Prev, so a server that has it finds it: this one
		// lags (a replica in a cluster). Not evidence of anything; fail closed without an alarm.
		return fmt.Errorf("%s record %s: check its history: revision %d not yet visible", c.bucket, what, e.Revision())
	case err != nil:
		return fmt.Errorf("%s record %s: check its history: %w", c.bucket, what, err)
	case next.Sequence < e.Revision():
		// Another write came between the revision this record replaced and this record.
		return c.Reject(what, "was written back over a later record of its key (replayed from its history)")
	case next.Sequence > e.Revision():
		// This revision is gone from the server asked: e was a stale read from a lagging one.
		return fmt.Errorf("%s record %s: check its history: revision %d was read from a lagging server", c.bucket, what, e.Revision())
	}
	if err := json.Unmarshal(env.Record, v); err != nil {
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
