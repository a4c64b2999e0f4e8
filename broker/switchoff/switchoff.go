// Package switchoff keeps the citizens' switches in the JetStream KV bucket "switchoffs": a citizen (by
// pseudonym) switches the optional steps of one journey, or of all journeys, off and on again. The
// release path reads them at every release at an optional step, so a switch takes effect at the next
// request.
//
// Records are sealed and bound to their key by package sealedkv, like consents. What "absent" means is
// different, though: a consent that does not authenticate reads as no consent, which refuses; a
// switch-off that does not authenticate must not read as "never switched off", which would release.
// So [Store.Off] answers [ErrUnverified] for it (logged at error level and counted, [Store.Unauthentic]),
// and the release path refuses the optional step: fail closed means the citizen's possible "no" wins.
// Only a key that was never written reads as on.
package switchoff

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/sealedkv"
)

// Bucket is the KV bucket holding switches.
const Bucket = "switchoffs"

// allKey is the key token of the switch that covers all journeys; journey ids start with a letter.
const allKey = "_all"

// ErrUnverified means a stored switch does not authenticate: the citizen's choice is unknown and
// optional steps are refused. It wraps sealedkv.ErrUnauthentic.
var ErrUnverified = errors.New("switch-off record could not be verified")

// Switch is one citizen's switch for one journey ("" for all journeys).
type Switch struct {
	Pseudonym string    `json:"pseudonym"`
	Journey   string    `json:"journey,omitempty"`
	Off       bool      `json:"off"`
	ChangedAt time.Time `json:"changed_at"`

	// Unverified is set by List for a stored switch that does not authenticate.
	Unverified bool `json:"-"`
}

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps switches in JetStream KV.
type Store struct {
	kv    jetstream.KeyValue
	codec *sealedkv.Codec
}

// Open creates or binds the switchoffs bucket.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture citizens' switch-offs of optional journeys and steps, one key per citizen pseudonym and journey",
		History:     16,
		Replicas:    opts.Replicas,
	}, opts.Sealer, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("switchoffs: %w", err)
	}
	return &Store{kv: kv, codec: codec}, nil
}

// Unauthentic is how many reads found a stored switch that did not authenticate.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

func key(pseudonym, journey string) string {
	if journey == "" {
		journey = allKey
	}
	return pseudonym + "." + journey
}

// maxAttempts bounds the retries of a write that lost a compare-and-set to a concurrent one.
const maxAttempts = 5

// Set switches journey ("" for all journeys) off or on for the citizen. It replaces whatever the key
// holds, also a record that does not authenticate: setting the switch again is how a citizen repairs
// an unverified one.
func (s *Store) Set(ctx context.Context, pseudonym, journey string, off bool, now time.Time) (*Switch, error) {
	sw := &Switch{Pseudonym: pseudonym, Journey: journey, Off: off, ChangedAt: now}
	k := key(pseudonym, journey)
	for attempt := 1; ; attempt++ {
		prev, err := s.codec.Latest(ctx, k)
		if err == nil {
			_, err = s.codec.Write(ctx, s.kv, k, prev, sw)
		}
		if err == nil {
			return sw, nil
		}
		if !sealedkv.IsConflict(err) || attempt == maxAttempts {
			return nil, fmt.Errorf("set switch for %q: %w", journey, err)
		}
	}
}

// Get returns the citizen's switch for journey ("" for all journeys); nil, nil when it was never set. A
// stored switch that does not authenticate is ErrUnverified; any other error means it could not be read.
func (s *Store) Get(ctx context.Context, pseudonym, journey string) (*Switch, error) {
	k := key(pseudonym, journey)
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read switch for %q: %w", journey, err)
	}
	what := "switch/" + strings.TrimPrefix(k, pseudonym+".") // the pseudonym stays out of the log line
	var sw Switch
	if err := s.codec.Open(ctx, e, what, &sw); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("switch for %q: %w: %w", journey, ErrUnverified, err)
	} else if err != nil {
		return nil, fmt.Errorf("read switch for %q: %w", journey, err)
	}
	if sw.Pseudonym != pseudonym || sw.Journey != journey {
		err := s.codec.Reject(what, "names another citizen or journey than its key")
		return nil, fmt.Errorf("switch for %q: %w: %w", journey, ErrUnverified, err)
	}
	return &sw, nil
}

// Scope says which switch turned a journey off.
type Scope string

const (
	// ScopeNone: nothing is switched off.
	ScopeNone Scope = ""
	// ScopeAll: the switch for all journeys.
	ScopeAll Scope = "all"
	// ScopeJourney: the journey's own switch.
	ScopeJourney Scope = "journey"
)

// Off reports whether the citizen switched journey's optional steps off, by the switch for all
// journeys or the journey's own. ErrUnverified when either stored switch does not authenticate (the
// caller refuses); any other error means they could not be read (the caller fails closed).
func (s *Store) Off(ctx context.Context, pseudonym, journey string) (Scope, error) {
	all, err := s.Get(ctx, pseudonym, "")
	if err != nil {
		return ScopeNone, err
	}
	if all != nil && all.Off {
		return ScopeAll, nil
	}
	j, err := s.Get(ctx, pseudonym, journey)
	if err != nil {
		return ScopeNone, err
	}
	if j != nil && j.Off {
		return ScopeJourney, nil
	}
	return ScopeNone, nil
}

// List returns every switch the citizen has set, including ones that do not authenticate (Unverified,
// with only Journey set).
func (s *Store) List(ctx context.Context, pseudonym string) ([]*Switch, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, pseudonym+".*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list switches: %w", err)
	}
	defer lister.Stop()
	var out []*Switch
	for k := range lister.Keys() {
		journey := strings.TrimPrefix(k, pseudonym+".")
		if journey == allKey {
			journey = ""
		}
		sw, err := s.Get(ctx, pseudonym, journey)
		switch {
		case errors.Is(err, ErrUnverified):
			out = append(out, &Switch{Pseudonym: pseudonym, Journey: journey, Unverified: true})
		case err != nil:
			return nil, err
		case sw != nil:
			out = append(out, sw)
		}
	}
	return out, nil
}
