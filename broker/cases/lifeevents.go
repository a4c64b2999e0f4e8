package cases

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Switches reads citizens' switch-offs (switchoff.Store).
type Switches interface {
	Off(ctx context.Context, pseudonym, journey, step string) (switchoff.Scope, error)
}

// declined says whether the citizen declined journey j, which a life event would start: only a
// whole-optional journey can be declined. A switch that does not authenticate counts as declined (the
// citizen may have said no, and an offer not made harms nobody); one that cannot be read is an error.
func (s *Service) declined(ctx context.Context, pseudonym string, j *policy.Journey) (bool, error) {
	if j.Optional == nil {
		return false, nil
	}
	if s.switches == nil {
		s.log.Warn("no switch-off store: an optional journey is not opened by a life event", "journey", j.ID)
		return true, nil
	}
	scope, err := s.switches.Off(ctx, pseudonym, j.ID, "") // a step switched off does not decline the journey
	switch {
	case errors.Is(err, switchoff.ErrUnverified):
		s.log.Warn("a citizen's switch-off does not verify: the optional journey is not opened", "journey", j.ID, "err", err)
		return true, nil
	case err != nil:
		return false, fmt.Errorf("switch-offs of journey %q: %w", j.ID, err)
	}
	return scope != switchoff.ScopeNone, nil
}

// ClaimBucket is the KV bucket that records, per published life event, the cases it opened: the event
// id is claimed before any case is opened, so an event delivered twice opens its cases once.
const ClaimBucket = "life-events"

// Proactive records the life event that opened a case.
type Proactive struct {
	// Event is the event type, e.g. "birth_registered"; Authority the authority that published it.
	Event     string `json:"event"`
	Authority string `json:"authority"`
	// EventID is the authority's id for the event.
	EventID    string    `json:"event_id"`
	OccurredAt time.Time `json:"occurred_at"`
}

// LifeEvent is a life event an authority publishes.
type LifeEvent struct {
	ID, Type, CitizenID string
	OccurredAt          time.Time
}

// claims keeps the claim records, sealed like cases so that a claim written by anyone but the broker
// counts as absent.
type claims struct {
	kv    jetstream.KeyValue
	codec *sealedkv.Codec
}

// claim is what one event opened. It names the citizen only by pseudonym.
type claim struct {
	Authority string        `json:"authority"`
	EventID   string        `json:"event_id"`
	Type      string        `json:"type"`
	Pseudonym string        `json:"pseudonym"`
	Cases     []claimedCase `json:"cases"`
}

type claimedCase struct {
	ID, Journey, Agency string
}

func openClaims(ctx context.Context, js jetstream.JetStream, opts Options) (*claims, error) {
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      ClaimBucket,
		Description: "Aperture: the cases each published life event opened, one key per event",
		Replicas:    opts.Replicas,
	}, opts.Sealer, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("life events: %w", err)
	}
	return &claims{kv: kv, codec: codec}, nil
}

// claimKey is the key of an event: a hash, as event ids may hold characters keys may not.
func claimKey(authority, eventID string) string {
	h := sha256.Sum256([]byte(authority + "\x00" + eventID))
	return "ev_" + hex.EncodeToString(h[:16])
}

// get returns the claim of an event, or nil when the event has not been published (or its claim does
// not authenticate, which sealedkv reports).
func (c *claims) get(ctx context.Context, key string) (*claim, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read life event claim: %w", err)
	}
	var cl claim
	if err := c.codec.Open(ctx, e, key, &cl); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read life event claim: %w", err)
	}
	return &cl, nil
}

// KnownEvent reports whether the policies declare the life event type.
func (s *Service) KnownEvent(typ string) bool {
	_, ok := s.policies().Event(typ)
	return ok
}

// OpenFromEvent opens the journeys that a life event starts (policies/events.yaml), once per event:
// authority must be allowed to publish the event type, and an event id published again opens nothing
// and returns the cases of the first delivery with duplicate set. before is called with each case
// before it is stored (and so before its agency is told): the caller writes the access record there,
// and an error from it stores nothing further. A delivery that failed half-way is finished by the
// next delivery of the same event.
func (s *Service) OpenFromEvent(ctx context.Context, authority string, ev LifeEvent, before func(*Case) error) (opened []*Case, duplicate bool, err error) {
	b := s.policies()
	le, ok := b.Event(ev.Type)
	if !ok || !le.MayPublish(authority) {
		return nil, false, refusal.New(refusal.PermissionDenied, "authority %q may not publish life events of type %q", authority, ev.Type).
			Because(auditv1.RefusalReason_REFUSAL_REASON_EVENT_NOT_ALLOWED, "type", ev.Type)
	}
	now := s.now()
	pn := s.pseudonyms.Pseudonym(ev.CitizenID).Value
	key := claimKey(authority, ev.ID)
	cl, err := s.store.claims.get(ctx, key)
	if err != nil {
		return nil, false, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; no case was opened").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	if cl == nil {
		cl = &claim{Authority: authority, EventID: ev.ID, Type: ev.Type, Pseudonym: pn}
		for _, st := range le.Starts {
			cl.Cases = append(cl.Cases, claimedCase{ID: ids.New("case", now), Journey: st.Journey, Agency: st.Agency})
		}
		if _, err := s.store.claims.codec.Write(ctx, s.store.claims.kv, key, 0, cl); sealedkv.IsConflict(err) {
			// Delivered twice at once: the other delivery's claim stands.
			if cl, err = s.store.claims.get(ctx, key); err != nil || cl == nil {
				return nil, false, refusal.Wrap(refusal.Unavailable, fmt.Errorf("claim written concurrently: %w", err), "case state is unavailable; retry the event")
			}
			duplicate = true
		} else if err != nil {
			return nil, false, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; no case was opened").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
		}
	} else {
		duplicate = true
	}
	if cl.Type != ev.Type || cl.Pseudonym != pn {
		return nil, false, refusal.New(refusal.FailedPrecondition, "event id %q was already published for another event; give every event its own id", ev.ID).
			Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_REQUEST, "field", "event_id")
	}
	for _, cc := range cl.Cases {
		c, err := s.store.Get(ctx, cc.ID)
		if err == nil {
			opened = append(opened, c)
			continue
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, false, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
		}
		// Claimed but not stored yet: this delivery opens it.
		j, ok := b.Journey(cc.Journey)
		if !ok || j.Steps[0].Agency != cc.Agency {
			s.log.Warn("life event names a journey the policies no longer start", "journey", cc.Journey, "agency", cc.Agency, "event_type", ev.Type)
			continue
		}
		// The citizen may decline an optional journey before it starts (issue 15, switch-off). Declined
		// now, it stays claimed: a later delivery of the same event opens it if they switched it on.
		if no, err := s.declined(ctx, pn, j); err != nil {
			return nil, false, refusal.Wrap(refusal.Unavailable, err, "the citizen's switch-offs are unavailable; retry the event").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
		} else if no {
			s.log.Info("life event: the citizen switched the optional journey off; not opened", "journey", j.ID, "agency", cc.Agency, "event_type", ev.Type)
			continue
		}
		c = New(j, ev.CitizenID, pn, cc.Agency, b.Version, now)
		c.ID = cc.ID
		c.Proactive = &Proactive{Event: ev.Type, Authority: authority, EventID: ev.ID, OccurredAt: ev.OccurredAt}
		if before != nil {
			if err := before(c); err != nil {
				return nil, false, err
			}
		}
		events := []Event{NewEvent(EventCaseOpened, cc.Agency, c.Steps[0], now), NewEvent(EventStepStarted, cc.Agency, c.Steps[0], now)}
		if err := s.store.Create(ctx, c, events...); err != nil {
			return nil, false, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; retry the event to open the rest").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
		}
		s.log.Info("case opened by life event", "case", c.ID, "journey", j.ID, "agency", cc.Agency, "authority", authority, "event_type", ev.Type)
		opened = append(opened, c)
		duplicate = false // this delivery opened something
	}
	return opened, duplicate, nil
}
