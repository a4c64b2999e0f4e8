// Package delegation keeps powers of attorney in the JetStream KV bucket "delegations": a citizen (the
// giver, by pseudonym) lets another citizen (the holder, by pseudonym) see their accesses, cases or
// consents, or give consent for them, for all journeys or named ones, until an expiry. Only the giver
// grants and revokes.
//
// Each delegation is one sealed record under "g.<giver>.<id>", the only record any decision reads.
// The holder finds it through a sealed pointer under "h.<holder>.<id>", so a holder can only ever
// resolve ids indexed under their own pseudonym, and [Store.Resolve] checks again that the record
// names the caller as its holder: a pointer never grants anything on its own.
//
// Records are sealed and bound to their key by package sealedkv. A record that does not authenticate
// counts as absent: [Store.Resolve] answers [ErrUnverified] (the caller refuses, logged at error level
// and counted, [Store.Unauthentic]), and lists show it as unverified so the giver can revoke it.
package delegation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/sealedkv"
)

// Bucket is the KV bucket holding delegations.
const Bucket = "delegations"

// IDPrefix is the prefix of delegation ids ("del_…").
const IDPrefix = "del"

// MaxValidity is the longest a power of attorney may last from its grant.
const MaxValidity = 5 * 365 * 24 * time.Hour

var (
	// ErrNotFound means there is no such delegation for the caller: never given, given by someone
	// else, or held by someone else. Callers cannot tell these apart.
	ErrNotFound = errors.New("no such delegation")
	// ErrUnverified means the stored delegation does not authenticate; it allows nothing. It wraps
	// sealedkv.ErrUnauthentic.
	ErrUnverified = errors.New("delegation record could not be verified")
	// ErrInvalid means a grant asks for something a delegation cannot be (no scope, to oneself, an
	// expiry in the past or too far ahead).
	ErrInvalid = errors.New("invalid delegation")
)

// Scope is one thing a delegation lets its holder do.
type Scope string

// The scopes, as aperture.citizen.v1.DelegationScope names them.
const (
	SeeAccesses  Scope = "see_accesses"
	SeeCases     Scope = "see_cases"
	SeeConsents  Scope = "see_consents"
	GrantConsent Scope = "grant_consent"
)

// Delegation is one power of attorney.
type Delegation struct {
	ID     string  `json:"id"`
	Giver  string  `json:"giver"`  // pseudonym of the represented citizen
	Holder string  `json:"holder"` // pseudonym of the citizen who may act
	Scopes []Scope `json:"scopes"`
	// Journeys it is limited to; empty for all journeys.
	Journeys  []string   `json:"journeys,omitempty"`
	GrantedAt time.Time  `json:"granted_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`

	// Unverified is set by the lists for a stored delegation that does not authenticate (only ID set).
	Unverified bool `json:"-"`
}

// ActiveAt reports whether the delegation lets its holder act at now: verified, not revoked, not
// expired.
func (d *Delegation) ActiveAt(now time.Time) bool {
	return !d.Unverified && d.RevokedAt == nil && now.Before(d.ExpiresAt)
}

// Allows reports whether the delegation's scope covers s for journey ("" when the action is not about
// one journey, which a delegation limited to journeys allows only to list, filtered by Covers).
func (d *Delegation) Allows(s Scope, journey string) bool {
	return slices.Contains(d.Scopes, s) && (journey == "" || d.Covers(journey))
}

// Covers reports whether the delegation reaches journey: it names no journeys, or names this one.
func (d *Delegation) Covers(journey string) bool {
	return len(d.Journeys) == 0 || slices.Contains(d.Journeys, journey)
}

// pointer is the record under the holder's key: which giver's key holds the delegation.
type pointer struct {
	ID     string `json:"id"`
	Giver  string `json:"giver"`
	Holder string `json:"holder"`
}

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps delegations in JetStream KV.
type Store struct {
	kv    jetstream.KeyValue
	codec *sealedkv.Codec
}

// Open creates or binds the delegations bucket.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture citizens' powers of attorney: one record per delegation under its giver's pseudonym, a pointer under its holder's",
		History:     16,
		Replicas:    opts.Replicas,
	}, opts.Sealer, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("delegations: %w", err)
	}
	return &Store{kv: kv, codec: codec}, nil
}

// Unauthentic is how many reads found a stored delegation or pointer that did not authenticate.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

func giverKey(giver, id string) string   { return "g." + giver + "." + id }
func holderKey(holder, id string) string { return "h." + holder + "." + id }

// Grant stores a new delegation from giver to holder. Scopes must be non-empty, giver and holder
// differ, and expires after now by at most MaxValidity; otherwise ErrInvalid.
func (s *Store) Grant(ctx context.Context, giver, holder string, scopes []Scope, journeys []string, expires, now time.Time) (*Delegation, error) {
	switch {
	case !sealedkv.Token(giver) || !sealedkv.Token(holder):
		return nil, fmt.Errorf("%w: malformed pseudonym", ErrInvalid)
	case giver == holder:
		return nil, fmt.Errorf("%w: a citizen cannot give power of attorney to themselves", ErrInvalid)
	case len(scopes) == 0:
		return nil, fmt.Errorf("%w: it must allow something", ErrInvalid)
	case !expires.After(now):
		return nil, fmt.Errorf("%w: it must end in the future", ErrInvalid)
	case expires.Sub(now) > MaxValidity:
		return nil, fmt.Errorf("%w: it may last at most five years", ErrInvalid)
	}
	d := &Delegation{
		ID: ids.New(IDPrefix, now), Giver: giver, Holder: holder,
		Scopes: slices.Clone(scopes), Journeys: slices.Clone(journeys),
		GrantedAt: now.UTC(), ExpiresAt: expires.UTC(),
	}
	// The giver's record first: a pointer without it resolves to nothing, a record without its
	// pointer (the second write failed) is listed to the giver, who can revoke it.
	if _, err := s.codec.Write(ctx, s.kv, giverKey(giver, d.ID), 0, d); err != nil {
		return nil, fmt.Errorf("grant delegation: %w", err)
	}
	p := pointer{ID: d.ID, Giver: giver, Holder: holder}
	if _, err := s.codec.Write(ctx, s.kv, holderKey(holder, d.ID), 0, p); err != nil {
		return nil, fmt.Errorf("grant delegation: index it for its holder: %w", err)
	}
	return d, nil
}

// get reads the giver's delegation id: ErrNotFound when absent, ErrUnverified when it does not
// authenticate or does not match its key.
func (s *Store) get(ctx context.Context, giver, id string) (*Delegation, uint64, error) {
	if !sealedkv.Token(giver) || !ids.Valid(IDPrefix, id) {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, giverKey(giver, id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, ErrNotFound
	case err != nil:
		return nil, 0, fmt.Errorf("read delegation %s: %w", id, err)
	}
	what := "delegation/" + id // the pseudonyms stay out of the log line
	var d Delegation
	if err := s.codec.Open(ctx, e, what, &d); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, 0, fmt.Errorf("delegation %s: %w: %w", id, ErrUnverified, err)
	} else if err != nil {
		return nil, 0, fmt.Errorf("read delegation %s: %w", id, err)
	}
	if d.ID != id || d.Giver != giver {
		err := s.codec.Reject(what, "names another delegation or giver than its key")
		return nil, 0, fmt.Errorf("delegation %s: %w: %w", id, ErrUnverified, err)
	}
	return &d, e.Revision(), nil
}

// Revoke ends the giver's delegation id at now. ErrNotFound when the giver has no such delegation;
// revoking one already revoked returns it unchanged. A record that does not authenticate is replaced
// by a revoked tombstone (the giver's way to end it).
func (s *Store) Revoke(ctx context.Context, giver, id string, now time.Time) (*Delegation, error) {
	for attempt := 1; ; attempt++ {
		d, rev, err := s.get(ctx, giver, id)
		switch {
		case errors.Is(err, ErrUnverified):
			prev, lerr := s.codec.Latest(ctx, giverKey(giver, id))
			if lerr != nil {
				return nil, fmt.Errorf("revoke delegation %s: %w", id, lerr)
			}
			t := now.UTC()
			d, rev = &Delegation{ID: id, Giver: giver, RevokedAt: &t, GrantedAt: t, ExpiresAt: t}, prev
		case err != nil:
			return nil, err
		case d.RevokedAt != nil:
			return d, nil
		default:
			t := now.UTC()
			d.RevokedAt = &t
		}
		_, err = s.codec.Write(ctx, s.kv, giverKey(giver, id), rev, d)
		if err == nil {
			return d, nil
		}
		if !sealedkv.IsConflict(err) || attempt == maxAttempts {
			return nil, fmt.Errorf("revoke delegation %s: %w", id, err)
		}
	}
}

// maxAttempts bounds the retries of a write that lost a compare-and-set to a concurrent one.
const maxAttempts = 5

// Resolve returns the delegation id that holder holds, whatever its state (the caller checks
// ActiveAt and Allows): ErrNotFound when holder holds no such delegation, ErrUnverified when its
// pointer or record does not authenticate.
func (s *Store) Resolve(ctx context.Context, holder, id string) (*Delegation, error) {
	if !sealedkv.Token(holder) || !ids.Valid(IDPrefix, id) {
		return nil, ErrNotFound
	}
	e, err := s.kv.Get(ctx, holderKey(holder, id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("read delegation %s: %w", id, err)
	}
	what := "holder/" + id
	var p pointer
	if err := s.codec.Open(ctx, e, what, &p); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("delegation %s: %w: %w", id, ErrUnverified, err)
	} else if err != nil {
		return nil, fmt.Errorf("read delegation %s: %w", id, err)
	}
	if p.ID != id || p.Holder != holder {
		err := s.codec.Reject(what, "names another delegation or holder than its key")
		return nil, fmt.Errorf("delegation %s: %w: %w", id, ErrUnverified, err)
	}
	d, _, err := s.get(ctx, p.Giver, id)
	if err != nil {
		return nil, err
	}
	if d.Holder == "" && d.RevokedAt != nil {
		return nil, ErrNotFound // the giver revoked a record that did not authenticate
	}
	if d.Holder != holder {
		err := s.codec.Reject("delegation/"+id, "names another holder than the pointer to it")
		return nil, fmt.Errorf("delegation %s: %w: %w", id, ErrUnverified, err)
	}
	return d, nil
}

// ListGiven returns every delegation giver gave, newest first, including unverified ones (only ID
// and Unverified set).
func (s *Store) ListGiven(ctx context.Context, giver string) ([]*Delegation, error) {
	if !sealedkv.Token(giver) {
		return nil, nil
	}
	out, err := s.list(ctx, "g."+giver+".", func(id string) (*Delegation, error) {
		d, _, err := s.get(ctx, giver, id)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list delegations given: %w", err)
	}
	return out, nil
}

// ListHeld returns every delegation holder holds, newest first, including unverified ones.
func (s *Store) ListHeld(ctx context.Context, holder string) ([]*Delegation, error) {
	if !sealedkv.Token(holder) {
		return nil, nil
	}
	out, err := s.list(ctx, "h."+holder+".", func(id string) (*Delegation, error) {
		return s.Resolve(ctx, holder, id)
	})
	if err != nil {
		return nil, fmt.Errorf("list delegations held: %w", err)
	}
	return out, nil
}

func (s *Store) list(ctx context.Context, prefix string, read func(id string) (*Delegation, error)) ([]*Delegation, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, prefix+"*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer lister.Stop()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var out []*Delegation
	for _, k := range keys {
		id := strings.TrimPrefix(k, prefix)
		d, err := read(id)
		switch {
		case errors.Is(err, ErrUnverified):
			out = append(out, &Delegation{ID: id, Unverified: true})
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, err
		default:
			out = append(out, d)
		}
	}
	// Ids sort by creation time.
	slices.SortFunc(out, func(a, b *Delegation) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}
