// Package consent keeps citizens' consents in the JetStream KV bucket "consents". A consent covers one
// step of one journey for one citizen (by pseudonym), lasts until its expiry and can be revoked at any
// time; the release path checks it on every release, so a revocation takes effect at the next request.
package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the KV bucket holding consents.
const Bucket = "consents"

// ErrNotFound means no consent was ever given for that step.
var ErrNotFound = errors.New("no consent")

// Consent is one citizen's consent to one journey step.
type Consent struct {
	Pseudonym string     `json:"pseudonym"`
	Journey   string     `json:"journey"`
	Step      string     `json:"step"`
	GrantedAt time.Time  `json:"granted_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// ValidAt reports whether the consent allows a release at t.
func (c *Consent) ValidAt(t time.Time) bool {
	return c != nil && c.RevokedAt == nil && !t.Before(c.GrantedAt) && t.Before(c.ExpiresAt)
}

// Store keeps consents in JetStream KV.
type Store struct {
	kv jetstream.KeyValue
}

// Open creates or binds the consents bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture citizen consents, one key per citizen pseudonym, journey and step",
		History:     16, // the citizen can see their consent history
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %q: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}

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
	if err := s.put(ctx, c); err != nil {
		return nil, fmt.Errorf("grant consent for %s/%s: %w", journey, step, err)
	}
	return c, nil
}

// Revoke ends a consent now. Revoking a consent that does not exist returns ErrNotFound.
func (s *Store) Revoke(ctx context.Context, pseudonym, journey, step string, now time.Time) (*Consent, error) {
	c, err := s.Get(ctx, pseudonym, journey, step)
	if err != nil {
		return nil, err
	}
	if c.RevokedAt == nil {
		c.RevokedAt = &now
		if err := s.put(ctx, c); err != nil {
			return nil, fmt.Errorf("revoke consent for %s/%s: %w", journey, step, err)
		}
	}
	return c, nil
}

// Get returns the latest consent for a step, valid or not.
func (s *Store) Get(ctx context.Context, pseudonym, journey, step string) (*Consent, error) {
	e, err := s.kv.Get(ctx, key(pseudonym, journey, step))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read consent for %s/%s: %w", journey, step, err)
	}
	var c Consent
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil, fmt.Errorf("decode consent for %s/%s: %w", journey, step, err)
	}
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

func (s *Store) put(ctx context.Context, c *Consent) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, key(c.Pseudonym, c.Journey, c.Step), b)
	return err
}
