// Package switchoff keeps the citizens' switches in the JetStream KV bucket "switchoffs": a citizen (by
// pseudonym) switches one optional step of a journey, the optional steps of one journey, or those of all
// journeys, off and on again. The release path reads them at every release at an optional step, so a
// switch takes effect at the next request. Whether a step may be switched off at all is the policy's
// business (the citizen API asks it); this package stores whatever it is given.
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
// Keys are PSEUDONYM._all, PSEUDONYM.JOURNEY and PSEUDONYM.JOURNEY.STEP: journey and step ids are
// lower-case letters, digits and dashes, so they never hold the dot that separates key tokens.
const allKey = "_all"

// ErrUnverified means a stored switch does not authenticate: the citizen's choice is unknown and
// optional steps are refused. It wraps sealedkv.ErrUnauthentic.
var ErrUnverified = errors.New("switch-off record could not be verified")

// Switch is one citizen's switch for one step of a journey, for one journey (Step ""), or for all
// journeys (Journey and Step "").
type Switch struct {
	Pseudonym string    `json:"pseudonym"`
	Journey   string    `json:"journey,omitempty"`
	Step      string    `json:"step,omitempty"`
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

// ErrStepWithoutJourney: a step switch names its journey (step ids are unique only within one).
var ErrStepWithoutJourney = errors.New("a step's switch needs its journey")

func key(pseudonym, journey, step string) string {
	switch {
	case journey == "":
		return pseudonym + "." + allKey
	case step == "":
		return pseudonym + "." + journey
	}
	return pseudonym + "." + journey + "." + step
}

// what names a switch in errors and log lines: journey and step ids, never the pseudonym.
func what(journey, step string) string {
	switch {
	case journey == "":
		return "all journeys"
	case step == "":
		return fmt.Sprintf("journey %q", journey)
	}
	return fmt.Sprintf("step %q of journey %q", step, journey)
}

// maxAttempts bounds the retries of a write that lost a compare-and-set to a concurrent one.
const maxAttempts = 5

// Set switches step of journey (step "": the whole journey; both "": all journeys) off or on for the
// citizen. It replaces whatever the key holds, also a record that does not authenticate: setting the
// switch again is how a citizen repairs an unverified one.
func (s *Store) Set(ctx context.Context, pseudonym, journey, step string, off bool, now time.Time) (*Switch, error) {
	if journey == "" && step != "" {
		return nil, ErrStepWithoutJourney
	}
	sw := &Switch{Pseudonym: pseudonym, Journey: journey, Step: step, Off: off, ChangedAt: now}
	k := key(pseudonym, journey, step)
	for attempt := 1; ; attempt++ {
		prev, err := s.codec.Latest(ctx, k)
		if err == nil {
			_, err = s.codec.Write(ctx, s.kv, k, prev, sw)
		}
		if err == nil {
			return sw, nil
		}
		if !sealedkv.IsConflict(err) || attempt == maxAttempts {
			return nil, fmt.Errorf("set switch for %s: %w", what(journey, step), err)
		}
	}
}

// Get returns the citizen's switch for step of journey (step "": the whole journey; both "": all
// journeys); nil, nil when it was never set. A stored switch that does not authenticate is
// ErrUnverified; any other error means it could not be read.
func (s *Store) Get(ctx context.Context, pseudonym, journey, step string) (*Switch, error) {
	if journey == "" && step != "" {
		return nil, ErrStepWithoutJourney
	}
	k := key(pseudonym, journey, step)
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read switch for %s: %w", what(journey, step), err)
	}
	name := "switch/" + strings.TrimPrefix(k, pseudonym+".") // the pseudonym stays out of the log line
	var sw Switch
	if err := s.codec.Open(ctx, e, name, &sw); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("switch for %s: %w: %w", what(journey, step), ErrUnverified, err)
	} else if err != nil {
		return nil, fmt.Errorf("read switch for %s: %w", what(journey, step), err)
	}
	if sw.Pseudonym != pseudonym || sw.Journey != journey || sw.Step != step {
		err := s.codec.Reject(name, "names another citizen, journey or step than its key")
		return nil, fmt.Errorf("switch for %s: %w: %w", what(journey, step), ErrUnverified, err)
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
	// ScopeStep: the step's own switch.
	ScopeStep Scope = "step"
)

// Off reports whether the citizen switched step of journey off: by the switch for all journeys, the
// journey's own, or (step not "") the step's own; the widest that is off wins. With step "" it answers
// for the journey as a whole, which a step switch does not turn off. ErrUnverified when any of the
// stored switches it reads does not authenticate (the caller refuses); any other error means they
// could not be read (the caller fails closed).
func (s *Store) Off(ctx context.Context, pseudonym, journey, step string) (Scope, error) {
	reads := []struct {
		journey, step string
		scope         Scope
	}{{"", "", ScopeAll}, {journey, "", ScopeJourney}, {journey, step, ScopeStep}}
	if step == "" {
		reads = reads[:2]
	}
	for _, r := range reads {
		sw, err := s.Get(ctx, pseudonym, r.journey, r.step)
		if err != nil {
			return ScopeNone, err
		}
		if sw != nil && sw.Off {
			return r.scope, nil
		}
	}
	return ScopeNone, nil
}

// List returns every switch the citizen has set, step switches included, and also ones that do not
// authenticate (Unverified, with only Journey and Step set).
func (s *Store) List(ctx context.Context, pseudonym string) ([]*Switch, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, pseudonym+".>")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list switches: %w", err)
	}
	defer lister.Stop()
	var out []*Switch
	for k := range lister.Keys() {
		journey, step, _ := strings.Cut(strings.TrimPrefix(k, pseudonym+"."), ".")
		if journey == allKey {
			journey = ""
		}
		if strings.Contains(step, ".") || (journey == "" && step != "") {
			// Not a key the broker writes: someone else's record, which decides nothing.
			_ = s.codec.Reject("switch/"+strings.TrimPrefix(k, pseudonym+"."), "is not a switch key")
			continue
		}
		sw, err := s.Get(ctx, pseudonym, journey, step)
		switch {
		case errors.Is(err, ErrUnverified):
			out = append(out, &Switch{Pseudonym: pseudonym, Journey: journey, Step: step, Unverified: true})
		case err != nil:
			return nil, err
		case sw != nil:
			out = append(out, sw)
		}
	}
	return out, nil
}
