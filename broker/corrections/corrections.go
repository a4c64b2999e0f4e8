// Package corrections keeps citizens' requests to correct data an authority holds about them, and the
// authorities' decisions, in the JetStream KV bucket "corrections": the broker-held queue an
// authority's staff work through (aperture.broker.v1.CorrectionService, `aperture authority
// corrections`).
//
// A request is stored under "<authority>.<pseudonym>.<request id>": the authority lists its own with
// "<authority>.>", the citizen theirs with "*.<pseudonym>.*", and neither walks anyone else's keys.
// The record holds the citizen id (the authority holds its data under it), the citizen's reason and
// the value they propose: citizen data. It is sealed and bound to its key by package sealedkv, never
// logged, and never part of an error. A record that does not verify is absent to the authority and to
// decisions; the citizen's list shows it as unverified, and every one is logged at error level (without
// the key's pseudonym) and counted ([Store.Unauthentic]).
//
// When a request is made or decided, each agency whose case used the field is told with an
// aperture.broker.v1.CorrectionEvent on "aperture.events.agency.<agency>.<type>" (the EVENTS stream of
// package cases): case, authority, dataset, field and status — never the citizen, never a value. The
// agencies to tell are part of the record the request or decision writes, and the bucket's outbox
// relay ([Store.Relay], see package sealedkv) publishes them: a stored request or decision is told,
// exactly once, even if the broker dies right after writing it.
package corrections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// Bucket is the KV bucket holding correction requests.
const Bucket = "corrections"

// IDPrefix prefixes request ids ("cor_…").
const IDPrefix = "cor"

// Event types published to agencies.
const (
	EventRequested = "correction_requested"
	EventDecided   = "correction_decided"
)

var (
	// ErrNotFound means there is no such request (for that authority or citizen).
	ErrNotFound = errors.New("correction request not found")
	// ErrDecided means the request was decided already.
	ErrDecided = errors.New("correction request already decided")
	// ErrInvalid means a request or decision cannot be stored as given.
	ErrInvalid = errors.New("invalid correction request")
)

// Status is where a request stands.
type Status string

// Statuses.
const (
	StatusOpen     Status = "open"
	StatusAccepted Status = "accepted"
	StatusRejected Status = "rejected"
)

// Request is one correction request as stored. CitizenID, Reason and Proposed are citizen data.
type Request struct {
	ID             string    `json:"id"`
	Authority      string    `json:"authority"`
	Pseudonym      string    `json:"pseudonym"`
	CitizenID      string    `json:"citizen_id"`
	PseudonymKeyID string    `json:"pseudonym_key_id,omitempty"`
	Dataset        string    `json:"dataset"`
	Field          string    `json:"field"`
	Reason         string    `json:"reason"`
	Proposed       string    `json:"proposed,omitempty"`
	RequestedAt    time.Time `json:"requested_at"`
	Status         Status    `json:"status"`
	// Set once decided.
	DecidedBy      string     `json:"decided_by,omitempty"`
	DecisionReason string     `json:"decision_reason,omitempty"`
	DecidedAt      *time.Time `json:"decided_at,omitempty"`
	// Notify are the agencies (with their cases) the write that stored this revision tells: of the
	// request when it is open, of the decision once decided. The outbox relay publishes them.
	Notify []Use `json:"notify,omitempty"`

	// Unverified is set by ListByCitizen for a stored request that does not verify (only ID and
	// Authority are then set).
	Unverified bool `json:"-"`
	// Revision is the KV revision the request was read at.
	Revision uint64 `json:"-"`
}

// LogValue keeps citizen data out of logs even if a Request is logged by mistake.
func (r *Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", r.ID), slog.String("authority", r.Authority), slog.String("status", string(r.Status)))
}

// Proto is the request as the authority reads it.
func (r *Request) Proto() *brokerv1.CorrectionRequest {
	out := &brokerv1.CorrectionRequest{
		Id: r.ID, CitizenId: r.CitizenID, Dataset: r.Dataset, Field: r.Field, Reason: r.Reason,
		ProposedValue: r.Proposed, RequestedAt: timestamppb.New(r.RequestedAt), Status: r.Status.Proto(),
		DecidedBy: r.DecidedBy, DecisionReason: r.DecisionReason,
	}
	if r.DecidedAt != nil {
		out.DecidedAt = timestamppb.New(*r.DecidedAt)
	}
	return out
}

// Proto is the API form of s.
func (s Status) Proto() brokerv1.CorrectionStatus {
	switch s {
	case StatusOpen:
		return brokerv1.CorrectionStatus_CORRECTION_STATUS_OPEN
	case StatusAccepted:
		return brokerv1.CorrectionStatus_CORRECTION_STATUS_ACCEPTED
	case StatusRejected:
		return brokerv1.CorrectionStatus_CORRECTION_STATUS_REJECTED
	}
	return brokerv1.CorrectionStatus_CORRECTION_STATUS_UNSPECIFIED
}

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps correction requests in JetStream KV.
type Store struct {
	kv    jetstream.KeyValue
	js    jetstream.JetStream
	log   *slog.Logger
	codec *sealedkv.Codec
}

// RelayConsumer is the durable consumer of the bucket's stream from which the relays publish events.
const RelayConsumer = "CORRECTION_EVENTS_RELAY"

// Open creates or binds the corrections bucket and its outbox consumer. Events go to the EVENTS stream
// (cases.Open creates it); until it takes them the relay retries.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Sealer == nil {
		return nil, errors.New("corrections: a sealer is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture citizens' requests to correct authority data: <authority>.<pseudonym>.<request id>",
		History:     4,
		Replicas:    opts.Replicas,
	}, opts.Sealer, log)
	if err != nil {
		return nil, fmt.Errorf("corrections: %w", err)
	}
	// The outbox's consumer exists before this store writes anything, so no request is missed.
	if _, err := js.CreateOrUpdateConsumer(ctx, "KV_"+Bucket, codec.OutboxConsumer(RelayConsumer, relayDescription)); err != nil {
		return nil, fmt.Errorf("corrections outbox: consumer %s: %w", RelayConsumer, err)
	}
	return &Store{kv: kv, js: js, log: log, codec: codec}, nil
}

const relayDescription = "Aperture: tells agencies of correction requests and decisions about fields their cases used"

// Relay binds the outbox's consumer. Run the returned Relay for as long as the broker runs; every
// replica may run one.
func (s *Store) Relay(ctx context.Context) (*sealedkv.Relay, error) {
	r, err := s.codec.Relay(ctx, s.js, s.codec.OutboxConsumer(RelayConsumer, relayDescription), s.events)
	if err != nil {
		return nil, fmt.Errorf("correction events relay: %w", err)
	}
	return r, nil
}

// Unauthentic is how many reads found a stored request that did not verify.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

func key(authority, pseudonym, id string) string { return authority + "." + pseudonym + "." + id }

func splitKey(k string) (authority, pseudonym, id string, ok bool) {
	parts := strings.Split(k, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// NewID returns a new request id, for a caller that logs the request before it stores it.
func NewID(now time.Time) string { return ids.New(IDPrefix, now) }

// Create stores a new open request under r.ID (a new id when it is not one), telling the agencies of
// uses; Status and RequestedAt are set here. An id that exists already is a conflict and changes
// nothing.
func (s *Store) Create(ctx context.Context, r *Request, uses []Use, now time.Time) (*Request, error) {
	if !sealedkv.Token(r.Authority) || !sealedkv.Token(r.Pseudonym) || r.CitizenID == "" || r.Dataset == "" || r.Field == "" || r.Reason == "" {
		return nil, fmt.Errorf("%w: authority, citizen, dataset, field and reason are required", ErrInvalid)
	}
	c := *r
	if !ids.Valid(IDPrefix, c.ID) {
		c.ID = NewID(now)
	}
	c.Status, c.RequestedAt = StatusOpen, now.UTC()
	c.DecidedBy, c.DecisionReason, c.DecidedAt = "", "", nil
	c.Notify = uses
	rev, err := s.codec.Write(ctx, s.kv, key(c.Authority, c.Pseudonym, c.ID), 0, &c)
	if err != nil {
		return nil, fmt.Errorf("store correction request %s: %w", c.ID, err)
	}
	c.Revision = rev
	return &c, nil
}

// ListByCitizen returns the citizen's requests, newest first, including ones that do not verify
// (Unverified).
func (s *Store) ListByCitizen(ctx context.Context, pseudonym string) ([]*Request, error) {
	if !sealedkv.Token(pseudonym) {
		return nil, fmt.Errorf("%w: pseudonym", ErrInvalid)
	}
	return s.list(ctx, "*."+pseudonym+".*", true)
}

// ListByAuthority returns the requests about authority's data, newest first; with onlyOpen, the
// undecided. Requests that do not verify are left out (and reported).
func (s *Store) ListByAuthority(ctx context.Context, authority string, onlyOpen bool) ([]*Request, error) {
	if !sealedkv.Token(authority) {
		return nil, fmt.Errorf("%w: authority", ErrInvalid)
	}
	rs, err := s.list(ctx, authority+".>", false)
	if err != nil {
		return nil, err
	}
	if onlyOpen {
		rs = slices.DeleteFunc(rs, func(r *Request) bool { return r.Status != StatusOpen })
	}
	return rs, nil
}

func (s *Store) list(ctx context.Context, filter string, withUnverified bool) ([]*Request, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list correction requests: %w", err)
	}
	defer lister.Stop()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var out []*Request
	for _, k := range keys {
		r, err := s.get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			if authority, _, id, ok := splitKey(k); ok && withUnverified {
				out = append(out, &Request{ID: id, Authority: authority, Unverified: true})
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Request) int { return strings.Compare(b.ID, a.ID) }) // ids sort by time
	return out, nil
}

func (s *Store) get(ctx context.Context, k string) (*Request, error) {
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read correction request: %w", err)
	}
	return s.open(ctx, e)
}

// open opens a stored request and checks that it is the one its key names.
func (s *Store) open(ctx context.Context, e jetstream.KeyValueEntry) (*Request, error) {
	authority, pseudonym, id, ok := splitKey(e.Key())
	if !ok {
		return nil, fmt.Errorf("%w: key is not <authority>.<pseudonym>.<id>", ErrNotFound)
	}
	what := authority + "/" + id // the pseudonym stays out of the log line
	var r Request
	if err := s.codec.Open(ctx, e, what, &r); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("correction request %s: %w: %w", id, ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("read correction request %s: %w", id, err)
	}
	if r.Authority != authority || r.Pseudonym != pseudonym || r.ID != id {
		err := s.codec.Reject(what, "names another authority, citizen or id than its key")
		return nil, fmt.Errorf("correction request %s: %w: %w", id, ErrNotFound, err)
	}
	r.Revision = e.Revision()
	return &r, nil
}

// GetForAuthority returns request id if it is about authority's data; to any other authority it does
// not exist.
func (s *Store) GetForAuthority(ctx context.Context, authority, id string) (*Request, error) {
	if !sealedkv.Token(authority) || !ids.Valid(IDPrefix, id) {
		return nil, ErrNotFound
	}
	lister, err := s.kv.ListKeysFiltered(ctx, authority+".*."+id)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("find correction request %s: %w", id, err)
	}
	defer lister.Stop()
	var found []string
	for k := range lister.Keys() {
		found = append(found, k)
	}
	err = ErrNotFound
	for _, k := range found {
		r, gerr := s.get(ctx, k)
		if gerr == nil {
			return r, nil
		}
		if !errors.Is(gerr, ErrNotFound) {
			return nil, gerr
		}
		err = gerr
	}
	return nil, err
}

// Decide records authority's decision on request id, by staff member by. Only the authority the
// request is about may decide, once: another authority gets ErrNotFound, a second decision ErrDecided.
// Two concurrent decisions cannot both win (compare-and-set on the revision). The agencies of uses are
// told.
func (s *Store) Decide(ctx context.Context, authority, id string, accept bool, reason, by string, uses []Use, now time.Time) (*Request, error) {
	if reason == "" || by == "" {
		return nil, fmt.Errorf("%w: a reason and the staff member are required", ErrInvalid)
	}
	r, err := s.GetForAuthority(ctx, authority, id)
	if err != nil {
		return nil, err
	}
	if r.Status != StatusOpen {
		return nil, ErrDecided
	}
	at := now.UTC()
	r.Status, r.DecidedBy, r.DecisionReason, r.DecidedAt = StatusRejected, by, reason, &at
	r.Notify = uses
	if accept {
		r.Status = StatusAccepted
	}
	rev, err := s.codec.Write(ctx, s.kv, key(r.Authority, r.Pseudonym, r.ID), r.Revision, r)
	if sealedkv.IsConflict(err) {
		return nil, ErrDecided
	}
	if err != nil {
		return nil, fmt.Errorf("store decision on %s: %w", id, err)
	}
	r.Revision = rev
	return r, nil
}

// Use is one case in which the disputed field was released to an agency.
type Use struct {
	CaseID     string    `json:"case_id"`
	Journey    string    `json:"journey"`
	Agency     string    `json:"agency"`
	ReleasedAt time.Time `json:"released_at"`
}

// events opens a revision and returns the events its write tells: "requested" while the request is
// open, "decided" once it is. Agencies whose name cannot be a subject token are skipped.
func (s *Store) events(ctx context.Context, e jetstream.KeyValueEntry) ([]sealedkv.Message, error) {
	r, err := s.open(ctx, e)
	if err != nil {
		return nil, err
	}
	typ, at := EventRequested, r.RequestedAt
	if r.Status != StatusOpen && r.DecidedAt != nil {
		typ, at = EventDecided, *r.DecidedAt
	}
	var msgs []sealedkv.Message
	for _, u := range r.Notify {
		if !sealedkv.Token(u.Agency) {
			continue
		}
		b, err := proto.Marshal(&brokerv1.CorrectionEvent{
			Type: typ, RequestId: r.ID, CaseId: u.CaseID, Authority: r.Authority, Dataset: r.Dataset,
			Field: r.Field, Status: r.Status.Proto(), Time: timestamppb.New(at),
		})
		if err != nil {
			return nil, fmt.Errorf("encode correction event: %w", err)
		}
		msgs = append(msgs, sealedkv.Message{
			Subject: "aperture.events.agency." + u.Agency + "." + typ, Data: b, ID: r.ID + ":" + u.CaseID + ":" + typ,
		})
	}
	return msgs, nil
}
