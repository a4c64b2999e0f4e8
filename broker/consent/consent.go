// Package consent keeps citizens' consents in the JetStream KV bucket "consents". A consent covers one
// step of one journey for one citizen (by pseudonym), lasts until its expiry and can be revoked at any
// time; the release path checks it on every release, so a revocation takes effect at the next request.
//
// Every record is sealed with the broker's sealing key and bound to its key (pseudonym, journey, step)
// by package sealedkv. A record that does not authenticate — written by anything but this store, moved
// from another citizen's or step's key, or an earlier record of its key written back (a consent from
// before its revocation) — reads as no consent (ErrNotFound), is logged at error level and counted
// ([Store.Unauthentic]): a forged consent never allows a release. The duration is
// checked against the policy's maximum at every read for a decision ([Consent.ValidAt]), not only at
// grant.
package consent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/sealedkv"
)

// Bucket is the KV bucket holding consents.
const Bucket = "consents"

// ErrNotFound means no consent was ever given for that step, or the stored one does not authenticate
// (then the error also wraps sealedkv.ErrUnauthentic).
var ErrNotFound = errors.New("no consent")

// Consent is one citizen's consent to one journey step.
type Consent struct {
	Pseudonym string     `json:"pseudonym"`
	Journey   string     `json:"journey"`
	Step      string     `json:"step"`
	GrantedAt time.Time  `json:"granted_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`

	// Revision is the KV revision the consent was read at.
	Revision uint64 `json:"-"`
}

// MaxValidity is the longest a consent may last under a policy maximum of maxDays days.
func MaxValidity(maxDays int) time.Duration { return time.Duration(maxDays) * 24 * time.Hour }

// WithinMax reports whether the consent lasts at most maxDays days from its grant. The grant path never
// stores a longer one, but the policy's maximum may have been lowered since, so every decision checks
// it again against the step's current maximum.
func (c *Consent) WithinMax(maxDays int) bool {
	return c != nil && maxDays > 0 && !c.ExpiresAt.After(c.GrantedAt.Add(MaxValidity(maxDays)))
}

// ValidAt reports whether the consent allows a release at t at a step whose policy lets a consent last
// at most maxDays days (policy.Consent.MaxDays; 0 when the step no longer takes consent, so that
// nothing is valid). A consent that lasts longer than that is not valid at all, also before the
// maximum would have run out.
func (c *Consent) ValidAt(t time.Time, maxDays int) bool {
	return c.WithinMax(maxDays) && c.RevokedAt == nil && !t.Before(c.GrantedAt) && t.Before(c.ExpiresAt)
}

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps consents in JetStream KV.
type Store struct {
	kv    jetstream.KeyValue
	codec *sealedkv.Codec
}

// Open creates or binds the consents bucket.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture citizen consents, one key per citizen pseudonym, journey and step",
		History:     16, // the citizen can see their consent history
		Replicas:    opts.Replicas,
	}, opts.Sealer, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("consents: %w", err)
	}
	return &Store{kv: kv, codec: codec}, nil
}

// Unauthentic is how many reads found a stored consent that did not authenticate (forged, altered,
// moved from another key, written back from its history, or unsealed from before records were sealed)
// and treated it as absent.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

// Key is "<pseudonym>.<journey>.<step>"; journey and step ids are policy slugs, safe as key tokens.
func key(pseudonym, journey, step string) string {
	return pseudonym + "." + journey + "." + step
}

// Grant records consent from now until now+validity, replacing any earlier consent for the step.
func (s *Store) Grant(ctx context.Context, pseudonym, journey, step string, now time.Time, validity time.Duration) (*Consent, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("grant consent for %s/%s: validity must be positive", journey, step)
	}
	c := &Consent{Pseudonym: pseudonym, Journey: journey, Step: step, GrantedAt: now, ExpiresAt: now.Add(validity)}
	k := key(pseudonym, journey, step)
	// A grant replaces whatever the key holds, even a record that does not authenticate; it is a
	// compare-and-set on the key's latest revision all the same, so that the sealed record names the
	// revision it replaced. Another write in between (the citizen granting twice at once) is retried.
	for attempt := 1; ; attempt++ {
		prev, err := s.codec.Latest(ctx, k)
		if err == nil {
			c.Revision, err = s.codec.Write(ctx, s.kv, k, prev, c)
		}
		if err == nil {
			return c, nil
		}
		if !sealedkv.IsConflict(err) || attempt == maxAttempts {
			return nil, fmt.Errorf("grant consent for %s/%s: %w", journey, step, err)
		}
	}
}

// maxAttempts bounds the retries of a write that lost a compare-and-set to a concurrent one.
const maxAttempts = 5

// Revoke ends a consent now. Revoking a consent that does not exist returns ErrNotFound.
func (s *Store) Revoke(ctx context.Context, pseudonym, journey, step string, now time.Time) (*Consent, error) {
	for attempt := 1; ; attempt++ {
		c, err := s.Get(ctx, pseudonym, journey, step)
		if err != nil {
			return nil, err
		}
		if c.RevokedAt != nil {
			return c, nil
		}
		c.RevokedAt = &now
		c.Revision, err = s.codec.Write(ctx, s.kv, key(pseudonym, journey, step), c.Revision, c)
		if err == nil {
			return c, nil
		}
		if !sealedkv.IsConflict(err) || attempt == maxAttempts {
			return nil, fmt.Errorf("revoke consent for %s/%s: %w", journey, step, err)
		}
	}
}

// Get returns the latest consent for a step, valid or not. A stored record that does not authenticate
// is reported and read as ErrNotFound; an error that is not ErrNotFound means the consent could not
// be read or checked (callers fail closed).
func (s *Store) Get(ctx context.Context, pseudonym, journey, step string) (*Consent, error) {
	k := key(pseudonym, journey, step)
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read consent for %s/%s: %w", journey, step, err)
	}
	what := journey + "/" + step // the pseudonym stays out of the log line
	var c Consent
	if err := s.codec.Open(ctx, e, what, &c); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("consent for %s/%s: %w: %w", journey, step, ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("read consent for %s/%s: %w", journey, step, err)
	}
	if c.Pseudonym != pseudonym || c.Journey != journey || c.Step != step {
		// The associated data binds the record to its key, so only the broker could have written this.
		err := s.codec.Reject(what, "names another citizen, journey or step than its key")
		return nil, fmt.Errorf("consent for %s/%s: %w: %w", journey, step, ErrNotFound, err)
	}
	c.Revision = e.Revision()
	return &c, nil
}

// List returns every consent a citizen has given, valid or not.
func (s *Store) List(ctx context.Context, pseudonym string) ([]*Consent, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, pseudonym+".>")
	if err != nil {
		return nil, fmt.Errorf("list consents: %w", err)
	}
	defer lister.Stop()
	var out []*Consent
	for k := range lister.Keys() {
		parts := strings.SplitN(k, ".", 3)
		if len(parts) != 3 {
			continue
		}
		c, err := s.Get(ctx, parts[0], parts[1], parts[2])
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
