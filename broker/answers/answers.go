// Package answers keeps, for the citizen only, the answers of the bool facts released about them, in
// the JetStream KV bucket "fact_answers".
//
// Why not in the access record: the access log's leaves are public tiles' inputs, listed to auditors
// and kept for ever, and the log's rule is "field paths and fact names, never values". A fact's answer
// is a value (derived from the citizen's data), so it stays out of the log. The citizen still has a
// right to see what the agency learnt: the broker keeps the answer here, sealed with its sealing key and
// bound to its key by package sealedkv (so it is not readable from a copy of the bucket, and a forged,
// moved or replayed answer reads as absent), under "<pseudonym>.<access id>". Only the citizen API
// reads it, for the citizen the pseudonym names, and only for an access the citizen's own log lists.
//
// An answer is written once, after the access record is durable; it is never a decision input.
package answers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/sealedkv"
)

// Bucket is the KV bucket holding answers.
const Bucket = "fact_answers"

// ErrNotFound means no answer is kept for the access (none was released, the policy does not show it,
// or the record did not authenticate).
var ErrNotFound = errors.New("no fact answers kept for this access")

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps fact answers. It is safe for concurrent use.
type Store struct {
	kv    jetstream.KeyValue
	codec *sealedkv.Codec
}

// record is what is sealed under a key.
type record struct {
	Pseudonym string          `json:"pseudonym"`
	AccessID  string          `json:"access_id"`
	Answers   map[string]bool `json:"answers"`
}

// Open creates or binds the bucket.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture answers of bool facts, shown only to the citizen: <pseudonym>.<access id>",
		History:     1,
		Replicas:    opts.Replicas,
	}, opts.Sealer, log)
	if err != nil {
		return nil, fmt.Errorf("fact answers: %w", err)
	}
	return &Store{kv: kv, codec: codec}, nil
}

// Unauthentic is how many reads found a stored answer that did not authenticate.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

func key(pseudonym, accessID string) (string, error) {
	if !token(pseudonym) || !token(accessID) {
		return "", errors.New("pseudonym or access id is not a KV key token")
	}
	return pseudonym + "." + accessID, nil
}

// token reports whether s can be one KV key token.
func token(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r == '-' || r == '_' || r == '=')
	})
}

// Put keeps the answers (fact name → answer) of access accessID for the citizen pseudonym names. An
// access has its answers written once: a second Put for it fails.
func (s *Store) Put(ctx context.Context, pseudonym, accessID string, answers map[string]bool) error {
	k, err := key(pseudonym, accessID)
	if err != nil {
		return fmt.Errorf("keep fact answers of %s: %w", accessID, err)
	}
	if _, err := s.codec.Write(ctx, s.kv, k, 0, record{Pseudonym: pseudonym, AccessID: accessID, Answers: answers}); err != nil {
		return fmt.Errorf("keep fact answers of %s: %w", accessID, err)
	}
	return nil
}

// Get returns the answers kept for access accessID of the citizen pseudonym names, or ErrNotFound.
func (s *Store) Get(ctx context.Context, pseudonym, accessID string) (map[string]bool, error) {
	k, err := key(pseudonym, accessID)
	if err != nil {
		return nil, ErrNotFound
	}
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read fact answers of %s: %w", accessID, err)
	}
	var r record
	if err := s.codec.Open(ctx, e, accessID, &r); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("fact answers of %s: %w: %w", accessID, ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("read fact answers of %s: %w", accessID, err)
	}
	if r.Pseudonym != pseudonym || r.AccessID != accessID {
		err := s.codec.Reject(accessID, "names another citizen or access than its key")
		return nil, fmt.Errorf("fact answers of %s: %w: %w", accessID, ErrNotFound, err)
	}
	return r.Answers, nil
}
