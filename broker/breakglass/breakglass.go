// Package breakglass keeps what break-glass releases need besides the access log, in the JetStream KV
// bucket "breakglass": the auditors' review queue (one sealed record per break-glass access, open until
// an auditor closes it with an outcome) and each caseworker's recent uses, for the policy's rate limit.
//
// Records are sealed and bound to their key by package sealedkv. A use record that does not authenticate
// counts as the limit reached (fail closed: no more emergency releases for that caseworker until an
// operator looks); a review record that does not authenticate is listed as such and cannot be closed.
package breakglass

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/sealedkv"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Bucket is the KV bucket.
const Bucket = "breakglass"

var (
	// ErrRateLimited means the caseworker has used break-glass as often as the rule allows in its window.
	ErrRateLimited = errors.New("break-glass limit reached")
	// ErrNotFound means there is no review for the access id.
	ErrNotFound = errors.New("no break-glass review")
	// ErrClosed means the review was closed already.
	ErrClosed = errors.New("break-glass review already closed")
	// ErrUnverified means a stored record does not authenticate (wraps sealedkv.ErrUnauthentic).
	ErrUnverified = errors.New("break-glass record could not be verified")
)

// Review is one break-glass release in the auditors' queue. It holds no field values.
type Review struct {
	AccessID      string    `json:"access_id"`
	Time          time.Time `json:"time"`
	Agency        string    `json:"agency"`
	Caseworker    string    `json:"caseworker"`
	CaseID        string    `json:"case_id"`
	Journey       string    `json:"journey"`
	Authority     string    `json:"authority"`
	Dataset       string    `json:"dataset"`
	Fields        []string  `json:"fields,omitempty"`
	Derived       []string  `json:"derived,omitempty"`
	ReasonCode    string    `json:"reason_code"`
	Justification string    `json:"justification"`
	// Pseudonym and PseudonymKeyID name the citizen as the access log does, so that the closure is
	// written to the citizen's log.
	Pseudonym      string `json:"pseudonym"`
	PseudonymKeyID string `json:"pseudonym_key_id"`

	Outcome         auditv1.BreakGlassOutcome `json:"outcome,omitempty"`
	Auditor         string                    `json:"auditor,omitempty"`
	ClosedAt        *time.Time                `json:"closed_at,omitempty"`
	Note            string                    `json:"note,omitempty"`
	ClosureAccessID string                    `json:"closure_access_id,omitempty"`
	// ClaimedAt is set while an auditor's closure is being logged (see Close).
	ClaimedAt *time.Time `json:"claimed_at,omitempty"`

	// Unverified is set by List for a stored review that does not authenticate (only AccessID is set).
	Unverified bool `json:"-"`
	revision   uint64
}

// Closed reports whether an auditor closed the review.
func (r *Review) Closed() bool { return r.ClosedAt != nil }

// uses is one caseworker's break-glass uses still inside some rule's window.
type uses struct {
	Agency     string      `json:"agency"`
	Caseworker string      `json:"caseworker"`
	Times      []time.Time `json:"times"`
}

// Options configures a Store.
type Options = sealedkv.Options

// Store keeps the review queue and the rate-limit state.
type Store struct {
	kv    jetstream.KeyValue
	codec *sealedkv.Codec
}

// Open creates or binds the bucket.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture break-glass review queue and per-caseworker use counts",
		History:     8,
		Replicas:    opts.Replicas,
	}, opts.Sealer, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("breakglass: %w", err)
	}
	return &Store{kv: kv, codec: codec}, nil
}

// Unauthentic is how many reads found a stored record that did not authenticate.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

const maxAttempts = 8

// useKey names a caseworker's uses; the caseworker is whatever the agency asserted, so it is hashed into
// a key token (and kept out of the log line).
func useKey(agency, caseworker string) string {
	h := sha256.Sum256([]byte(agency + "\x00" + caseworker))
	return "use." + agency + "." + hex.EncodeToString(h[:16])
}

func reviewKey(accessID string) string { return "review." + accessID }

// Reserve counts one use by caseworker of agency at now against limit uses per window, and returns how
// many remain. At the limit it returns ErrRateLimited and counts nothing. The use is counted before
// anything is fetched, with a compare-and-set, so two replicas cannot both take the last one; a use
// whose release then fails still counts (the limit errs on the side of fewer emergency releases).
func (s *Store) Reserve(ctx context.Context, agency, caseworker string, limit int, window time.Duration, now time.Time) (remaining int, _ error) {
	k := useKey(agency, caseworker)
	for attempt := 1; ; attempt++ {
		var u uses
		prev, err := s.codec.Latest(ctx, k)
		if err != nil {
			return 0, fmt.Errorf("break-glass uses: %w", err)
		}
		if prev != 0 {
			e, err := s.kv.Get(ctx, k)
			if err != nil {
				return 0, fmt.Errorf("break-glass uses: %w", err)
			}
			if err := s.codec.Open(ctx, e, "use/"+agency, &u); errors.Is(err, sealedkv.ErrUnauthentic) {
				return 0, fmt.Errorf("%w: %w: %w", ErrRateLimited, ErrUnverified, err)
			} else if err != nil {
				return 0, fmt.Errorf("break-glass uses: %w", err)
			}
			if u.Agency != agency || u.Caseworker != caseworker {
				err := s.codec.Reject("use/"+agency, "names another caseworker than its key")
				return 0, fmt.Errorf("%w: %w: %w", ErrRateLimited, ErrUnverified, err)
			}
			prev = e.Revision()
		}
		u.Agency, u.Caseworker = agency, caseworker
		u.Times = slices.DeleteFunc(u.Times, func(t time.Time) bool { return !t.After(now.Add(-window)) })
		if len(u.Times) >= limit {
			return 0, ErrRateLimited
		}
		u.Times = append(u.Times, now)
		_, err = s.codec.Write(ctx, s.kv, k, prev, &u)
		if err == nil {
			return limit - len(u.Times), nil
		}
		if !sealedkv.IsConflict(err) || attempt == maxAttempts {
			return 0, fmt.Errorf("break-glass uses: %w", err)
		}
	}
}

// Queue puts a break-glass release in the review queue.
func (s *Store) Queue(ctx context.Context, r *Review) error {
	if _, err := s.codec.Write(ctx, s.kv, reviewKey(r.AccessID), 0, r); err != nil {
		return fmt.Errorf("queue break-glass review: %w", err)
	}
	return nil
}

// Get returns the review of a break-glass access.
func (s *Store) Get(ctx context.Context, accessID string) (*Review, error) {
	e, err := s.kv.Get(ctx, reviewKey(accessID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read break-glass review: %w", err)
	}
	var r Review
	if err := s.codec.Open(ctx, e, "review/"+accessID, &r); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, err)
	} else if err != nil {
		return nil, fmt.Errorf("read break-glass review: %w", err)
	}
	if r.AccessID != accessID {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, s.codec.Reject("review/"+accessID, "names another access than its key"))
	}
	r.revision = e.Revision()
	return &r, nil
}

// List returns the reviews, oldest first; closed ones only when includeClosed.
func (s *Store) List(ctx context.Context, includeClosed bool) ([]*Review, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "review.*")
	if err != nil {
		return nil, fmt.Errorf("list break-glass reviews: %w", err)
	}
	defer lister.Stop()
	var out []*Review
	for k := range lister.Keys() {
		id := strings.TrimPrefix(k, "review.")
		r, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrUnverified):
			out = append(out, &Review{AccessID: id, Unverified: true})
		case err != nil:
			return nil, err
		case includeClosed || !r.Closed():
			out = append(out, r)
		}
	}
	// Access ids sort by time.
	slices.SortFunc(out, func(a, b *Review) int { return strings.Compare(a.AccessID, b.AccessID) })
	return out, nil
}

// claimFor is how long a claim on a review (an auditor closing it) keeps other auditors out. A claim
// older than that was left by a broker that stopped mid-close and may be taken over.
const claimFor = time.Minute

// Close records the auditor's outcome. The review is first claimed with a compare-and-set, so that of
// two auditors closing it at once exactly one goes on (the other gets ErrClosed); then log is called
// with the closed review, to append the closure to the access log (and set ClosureAccessID); only then
// is the review stored closed. When log fails the claim is released and nothing is closed: a closed
// review is always in the log, and in the log once.
func (s *Store) Close(ctx context.Context, accessID, auditor string, outcome auditv1.BreakGlassOutcome, note string, now time.Time, log func(*Review) error) (*Review, error) {
	r, err := s.Get(ctx, accessID)
	if err != nil {
		return nil, err
	}
	if r.Closed() {
		return r, ErrClosed
	}
	if r.ClaimedAt != nil && now.Sub(*r.ClaimedAt) < claimFor {
		return nil, fmt.Errorf("%w (another auditor is closing it)", ErrClosed)
	}
	open := *r
	k := reviewKey(accessID)
	r.ClaimedAt = &now
	claimed, err := s.codec.Write(ctx, s.kv, k, r.revision, r)
	if sealedkv.IsConflict(err) {
		return nil, fmt.Errorf("%w (by another auditor at the same time)", ErrClosed)
	}
	if err != nil {
		return nil, fmt.Errorf("close break-glass review: %w", err)
	}
	r.Outcome, r.Auditor, r.ClosedAt, r.Note = outcome, auditor, &now, note
	if err := log(r); err != nil {
		open.ClaimedAt = nil
		if _, rerr := s.codec.Write(ctx, s.kv, k, claimed, &open); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release the claim (it lapses after %s): %w", claimFor, rerr))
		}
		return nil, err
	}
	r.ClaimedAt = nil
	if r.revision, err = s.codec.Write(ctx, s.kv, k, claimed, r); err != nil {
		return nil, fmt.Errorf("the closure is logged as %s but the review could not be stored closed: %w", r.ClosureAccessID, err)
	}
	return r, nil
}
