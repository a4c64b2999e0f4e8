// Package cases keeps case state in the JetStream KV bucket "cases" and moves cases through their
// journey's steps. Every transition is a compare-and-set on the key's revision, so two broker replicas
// cannot both advance the same step: the loser gets ErrConflict and nothing changes. After a transition
// the agencies concerned get a CaseEvent: the transition's events are written in the same sealed record
// and published from there by a relay that retries until JetStream acknowledges them (outbox.go).
//
// Every case record — step, state, agencies, the citizen id, everything a decision reads — is stored
// sealed with the broker's sealing key and bound to its case id (package sealedkv), so a copy of the
// bucket does not reveal whom a case is about, and a record written or altered by anything but the
// broker (a step advanced by hand, a case copied to another id, an earlier revision of the case written
// back to undo a step or reopen it) reads as ErrNotFound, is logged at error level and counted
// ([Store.Unauthentic]).
package cases

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// Bucket is the KV bucket holding cases, keyed by case id.
const Bucket = "cases"

// EventStream holds case events; agencies consume "aperture.events.agency.<agency>.>".
const EventStream = "EVENTS"

var (
	// ErrNotFound means there is no case with that id.
	ErrNotFound = errors.New("case not found")
	// ErrConflict means the case changed since it was read; re-read and retry.
	ErrConflict = errors.New("case changed concurrently")
	// ErrClosed means the case is closed.
	ErrClosed = errors.New("case is closed")
	// ErrNotCurrent means the named step is not the case's current step.
	ErrNotCurrent = errors.New("step is not current")
)

// State is the life cycle of a case.
type State string

// Step states and case states as stored.
const (
	StateOpen   State = "open"
	StateClosed State = "closed"

	StepPending   State = "pending"
	StepCurrent   State = "current"
	StepCompleted State = "completed"
	StepSkipped   State = "skipped"
)

// Case is one citizen's instance of a journey, as stored.
type Case struct {
	ID      string `json:"id"`
	Journey string `json:"journey"`
	// CitizenID is the citizen's id. At rest it is inside the sealed record, so a copy of the bucket
	// does not reveal whom a case is about.
	CitizenID string `json:"citizen_id"`
	// Pseudonym is the citizen's keyed pseudonym, so the citizen's cases can be found without the id.
	Pseudonym     string    `json:"pseudonym"`
	State         State     `json:"state"`
	Current       int       `json:"current"` // index into Steps; -1 when closed
	Steps         []Step    `json:"steps"`
	OpenedBy      string    `json:"opened_by"`
	OpenedAt      time.Time `json:"opened_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	CloseReason   string    `json:"close_reason,omitempty"`
	PolicyVersion string    `json:"policy_version"`
	// Proactive is set when an authority's life event opened the case (policies/events.yaml).
	Proactive *Proactive `json:"proactive,omitempty"`
	// Events are the events of the transition that wrote this revision, published from the outbox
	// (see Relay): stored with the transition in one write, so neither exists without the other.
	Events []Event `json:"events,omitempty"`

	// Revision is the KV revision the case was read at; Update succeeds only if it is still current.
	Revision uint64 `json:"-"`
}

// Step is the state of one journey step within a case.
type Step struct {
	ID          string     `json:"id"`
	Agency      string     `json:"agency"`
	State       State      `json:"state"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	CompletedBy string     `json:"completed_by,omitempty"`
}

// CurrentStep returns the current step, or false when the case is closed.
func (c *Case) CurrentStep() (Step, bool) {
	if c.State != StateOpen || c.Current < 0 || c.Current >= len(c.Steps) {
		return Step{}, false
	}
	return c.Steps[c.Current], true
}

// Involves reports whether agency opened the case or acts at any of its steps.
func (c *Case) Involves(agency string) bool {
	if c.OpenedBy == agency {
		return true
	}
	for _, s := range c.Steps {
		if s.Agency == agency {
			return true
		}
	}
	return false
}

// New returns a case for journey at its first step. It is not stored yet.
func New(j *policy.Journey, citizenID, pseudonym, agency, policyVersion string, now time.Time) *Case {
	c := &Case{
		ID:            ids.New("case", now),
		Journey:       j.ID,
		CitizenID:     citizenID,
		Pseudonym:     pseudonym,
		State:         StateOpen,
		OpenedBy:      agency,
		OpenedAt:      now,
		UpdatedAt:     now,
		PolicyVersion: policyVersion,
	}
	for i, s := range j.Steps {
		st := Step{ID: s.ID, Agency: s.Agency, State: StepPending}
		if i == 0 {
			st.State = StepCurrent
			st.StartedAt = &now
		}
		c.Steps = append(c.Steps, st)
	}
	return c
}

// Complete finishes step (which must be current) on c, in memory. The next step becomes current or, after
// the last, the case closes.
func (c *Case) Complete(step, caseworker string, now time.Time) error {
	cur, ok := c.CurrentStep()
	if !ok {
		return ErrClosed
	}
	if cur.ID != step {
		return fmt.Errorf("%w: current step is %q", ErrNotCurrent, cur.ID)
	}
	s := &c.Steps[c.Current]
	s.State, s.CompletedAt, s.CompletedBy = StepCompleted, &now, caseworker
	c.Current++
	if c.Current == len(c.Steps) {
		c.State, c.Current = StateClosed, -1
	} else {
		n := &c.Steps[c.Current]
		n.State, n.StartedAt = StepCurrent, &now
	}
	c.UpdatedAt = now
	return nil
}

// Close ends an open case early; steps not reached are skipped.
func (c *Case) Close(reason string, now time.Time) error {
	if c.State != StateOpen {
		return ErrClosed
	}
	for i := range c.Steps {
		if c.Steps[i].State == StepPending || c.Steps[i].State == StepCurrent {
			c.Steps[i].State = StepSkipped
		}
	}
	c.State, c.Current, c.CloseReason, c.UpdatedAt = StateClosed, -1, reason, now
	return nil
}

// Proto returns the API form of c; titles come from the journey when it is known.
func (c *Case) Proto(j *policy.Journey) *brokerv1.Case {
	out := &brokerv1.Case{
		Id:          c.ID,
		Journey:     c.Journey,
		CitizenId:   c.CitizenID,
		State:       brokerv1.CaseState_CASE_STATE_OPEN,
		OpenedBy:    c.OpenedBy,
		OpenedAt:    timestamppb.New(c.OpenedAt),
		UpdatedAt:   timestamppb.New(c.UpdatedAt),
		CloseReason: c.CloseReason,
		Revision:    c.Revision,
	}
	if c.State == StateClosed {
		out.State = brokerv1.CaseState_CASE_STATE_CLOSED
	}
	if cur, ok := c.CurrentStep(); ok {
		out.CurrentStep = cur.ID
	}
	for _, s := range c.Steps {
		ps := &brokerv1.CaseStep{Id: s.ID, Agency: s.Agency, State: stepState(s.State), CompletedBy: s.CompletedBy}
		if s.StartedAt != nil {
			ps.StartedAt = timestamppb.New(*s.StartedAt)
		}
		if s.CompletedAt != nil {
			ps.CompletedAt = timestamppb.New(*s.CompletedAt)
		}
		if j != nil {
			if js, _, ok := j.Step(s.ID); ok {
				ps.Title = js.Title.EN
			}
		}
		out.Steps = append(out.Steps, ps)
	}
	return out
}

func stepState(s State) brokerv1.StepState {
	switch s {
	case StepPending:
		return brokerv1.StepState_STEP_STATE_PENDING
	case StepCurrent:
		return brokerv1.StepState_STEP_STATE_CURRENT
	case StepCompleted:
		return brokerv1.StepState_STEP_STATE_COMPLETED
	case StepSkipped:
		return brokerv1.StepState_STEP_STATE_SKIPPED
	}
	return brokerv1.StepState_STEP_STATE_UNSPECIFIED
}

// Sealer encrypts state at rest (authenticated, with the key version inside the ciphertext so that
// cases sealed before a key rotation still open).
type Sealer = sealedkv.Sealer

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps cases in JetStream KV, with a read cache kept current by a watch on the bucket.
//
// The release path reads a case on every request; decoding it from KV each time costs a NATS round trip.
// The cache serves reads from memory: this broker's own writes update it synchronously, other replicas'
// writes arrive through the watch within milliseconds, and an entry is read again after at most
// cacheTTL in case the watch lagged. A read is a snapshot either way — the step may complete on another
// replica a moment after any read — so the cache does not weaken what a release decides on.
type Store struct {
	kv    jetstream.KeyValue
	js    jetstream.JetStream
	codec *sealedkv.Codec
	index *index
	// claims records which life events opened which cases (lifeevents.go).
	claims *claims
	log    *slog.Logger

	mu      sync.RWMutex
	cache   map[string]cached
	watcher jetstream.KeyWatcher
}

type cached struct {
	c       *Case
	expires time.Time
}

const (
	cacheTTL  = 10 * time.Second
	cacheSize = 100_000
)

// cacheExpiry is when an entry cached now is read again: after between ¾ of cacheTTL and cacheTTL,
// so entries cached together (a replica's backfill, a burst of new cases) are read again as a trickle,
// not all in one moment (a burst the scale-out bench showed in a replica's decide stage).
func cacheExpiry(now time.Time) time.Time {
	return now.Add(cacheTTL - rand.N(cacheTTL/4))
}

// Open creates or binds the cases bucket and the events stream.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture case state, one key per case",
		// The relay reads transitions from this history (outbox.go): a case may move this many times
		// while the relay is behind before it loses the events of the oldest. 64 is JetStream's most.
		History:  64,
		Replicas: opts.Replicas,
	}, opts.Sealer, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("cases: %w", err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStream,
		Description: "Aperture journey events for agency systems and the citizen portal",
		Subjects:    []string{"aperture.events.>"},
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		MaxAge:      30 * 24 * time.Hour,
		Duplicates:  eventDedupWindow,
	}); err != nil {
		return nil, fmt.Errorf("open stream %q: %w", EventStream, err)
	}
	// The outbox's consumer exists before this store writes anything, so no transition is missed.
	if _, err := js.CreateOrUpdateConsumer(ctx, "KV_"+Bucket, codec.OutboxConsumer(RelayConsumer, relayDescription)); err != nil {
		return nil, fmt.Errorf("case events outbox: consumer %s: %w", RelayConsumer, err)
	}
	idx, err := openIndex(ctx, js, opts.Replicas)
	if err != nil {
		return nil, err
	}
	claims, err := openClaims(ctx, js, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{kv: kv, js: js, codec: codec, index: idx, claims: claims, log: opts.Logger, cache: map[string]cached{}}
	if err := s.backfill(ctx); err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch KV bucket %q: %w", Bucket, err)
	}
	s.watcher = w
	go s.follow(w)
	return s, nil
}

// Unauthentic is how many reads (including the watch's) found a stored case that did not authenticate
// and treated it as absent.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

// follow applies other replicas' writes to cached entries. A write that does not authenticate drops
// the entry (decode reports it), so the next Get reads the bucket and finds the case absent.
func (s *Store) follow(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e == nil {
			continue
		}
		s.mu.RLock()
		_, ok := s.cache[e.Key()]
		s.mu.RUnlock()
		if !ok {
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			s.forget(e.Key())
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := s.decode(ctx, e)
		cancel()
		if err != nil {
			s.forget(e.Key())
			continue
		}
		s.remember(c)
	}
}

// Close stops the watch.
func (s *Store) Close() {
	if s.watcher != nil {
		_ = s.watcher.Stop()
	}
}

// remember caches c unless the cache already holds a newer revision.
func (s *Store) remember(c *Case) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.cache[c.ID]; ok && old.c.Revision > c.Revision {
		return
	}
	if len(s.cache) >= cacheSize {
		for k := range s.cache { // evict an arbitrary tenth
			delete(s.cache, k)
			if len(s.cache) < cacheSize*9/10 {
				break
			}
		}
	}
	s.cache[c.ID] = cached{c: c.clone(), expires: cacheExpiry(time.Now())}
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
}

// clone copies c so that a caller's in-memory transition never changes the cached case.
func (c *Case) clone() *Case {
	out := *c
	out.Steps = append([]Step(nil), c.Steps...)
	return &out
}

// Create stores a new case, with the events of its opening (published from the outbox).
func (s *Store) Create(ctx context.Context, c *Case, events ...Event) error {
	if err := s.index.add(ctx, c); err != nil {
		return fmt.Errorf("create case %s: %w", c.ID, err)
	}
	c.Events = events
	rev, err := s.codec.Write(ctx, s.kv, c.ID, 0, c) // 0: a new case id has no history
	if err != nil {
		return fmt.Errorf("create case %s: %w", c.ID, err)
	}
	c.Revision = rev
	s.remember(c)
	return nil
}

// Get reads a case. The caller owns the returned copy.
func (s *Store) Get(ctx context.Context, id string) (*Case, error) {
	if c, ok := s.Cached(id); ok {
		return c, nil
	}
	c, err := s.read(ctx, id)
	if err != nil {
		return nil, err
	}
	s.remember(c)
	return c, nil
}

// Cached returns a copy of the case from the broker's cache when Get would answer from it, without
// reading NATS; false when Get would read. A release asks it first so that it sets no read deadline
// (a timer and a context per release) for the common case.
func (s *Store) Cached(id string) (*Case, bool) {
	s.mu.RLock()
	hit, ok := s.cache[id]
	s.mu.RUnlock()
	if !ok || !time.Now().Before(hit.expires) {
		return nil, false
	}
	return hit.c.clone(), true
}

func (s *Store) read(ctx context.Context, id string) (*Case, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read case %s: %w", id, err)
	}
	return s.decode(ctx, e)
}

// decode opens a stored case. One that does not authenticate (forged, altered, copied from another
// case id, or an earlier revision written back) is reported and is ErrNotFound; any other error means
// it could not be checked.
func (s *Store) decode(ctx context.Context, e jetstream.KeyValueEntry) (*Case, error) {
	var c Case
	if err := s.codec.Open(ctx, e, e.Key(), &c); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("case %s: %w: %w", e.Key(), ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("read case %s: %w", e.Key(), err)
	}
	if c.ID != e.Key() {
		// The associated data binds the record to its key, so only the broker could have written this.
		err := s.codec.Reject(e.Key(), "names another case id than its key")
		return nil, fmt.Errorf("case %s: %w: %w", e.Key(), ErrNotFound, err)
	}
	c.Revision = e.Revision()
	return &c, nil
}

// Update writes c, with the events of this transition (published from the outbox), if the stored
// case is still at c.Revision, else ErrConflict.
func (s *Store) Update(ctx context.Context, c *Case, events ...Event) error {
	if err := s.index.add(ctx, c); err != nil {
		return fmt.Errorf("update case %s: %w", c.ID, err)
	}
	c.Events = events
	rev, err := s.codec.Write(ctx, s.kv, c.ID, c.Revision, c)
	if err != nil {
		if sealedkv.IsConflict(err) {
			s.forget(c.ID) // someone else wrote: the next read goes to KV
			return fmt.Errorf("update case %s: %w", c.ID, ErrConflict)
		}
		return fmt.Errorf("update case %s: %w", c.ID, err)
	}
	c.Revision = rev
	s.remember(c)
	return nil
}

// List returns the cases for which keep is true, newest first. It reads every case: for the citizen's
// listing (no index by citizen yet) and to build the agencies' index; agencies page with Page.
func (s *Store) List(ctx context.Context, keep func(*Case) bool) ([]*Case, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list cases: %w", err)
	}
	defer lister.Stop()
	var out []*Case
	for key := range lister.Keys() {
		c, err := s.read(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // deleted between list and get
		}
		if err != nil {
			return nil, err
		}
		if keep(c) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].ID > out[k].ID }) // ids sort by creation time
	return out, nil
}

// Event types published on "aperture.events.agency.<agency>.<type>".
const (
	EventCaseOpened    = "case_opened"
	EventStepStarted   = "step_started"
	EventStepCompleted = "step_completed"
	EventCaseClosed    = "case_closed"
)
