package server

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/counter"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/release"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// MetricLifeEvents counts published life events by type, publishing authority and outcome.
const MetricLifeEvents = "aperture_life_events"

// Outcomes of MetricLifeEvents.
const (
	LifeEventOpened    = "opened"    // the event opened its journeys
	LifeEventDuplicate = "duplicate" // published before: nothing new opened
	LifeEventRefused   = "refused"   // not allowed, or malformed
	LifeEventFailed    = "failed"    // case state or access log unavailable; the authority retries
)

// LifeEvents implements aperture.broker.v1.LifeEventService: authorities publish life events, and the
// broker opens the journeys the policies start on them (cases.Service.OpenFromEvent). The caller is
// the authority its certificate names; an agency or auditor certificate is refused.
type LifeEvents struct {
	brokerv1.UnimplementedLifeEventServiceServer
	cases   *cases.Service
	release *release.Service
	log     *slog.Logger
	count   *counter.Counter
}

// NewLifeEvents returns the LifeEventService implementation. mp may be nil (no metrics).
func NewLifeEvents(c *cases.Service, r *release.Service, mp metric.MeterProvider, log *slog.Logger) (*LifeEvents, error) {
	count, err := counter.New(mp, "github.com/aperture-gov/aperture/broker/server", MetricLifeEvents, "{event}",
		"Life events published by authorities, by event type, authority and outcome (opened, duplicate, refused, failed). Never a citizen.",
		"type", "authority", "outcome")
	if err != nil {
		return nil, err
	}
	return &LifeEvents{cases: c, release: r, log: log, count: count}, nil
}

// PublishLifeEvent implements LifeEventService.
func (s *LifeEvents) PublishLifeEvent(ctx context.Context, req *brokerv1.PublishLifeEventRequest) (*brokerv1.PublishLifeEventResponse, error) {
	c, err := requireRole(ctx, RoleAuthority)
	if err != nil {
		return nil, err
	}
	ev := cases.LifeEvent{ID: req.GetEventId(), Type: req.GetType(), CitizenID: req.GetCitizenId()}
	if req.GetOccurredAt() != nil {
		ev.OccurredAt = req.GetOccurredAt().AsTime()
	}
	// The agency learns of the citizen when its case is opened: the access record is durable first.
	logOpen := func(cs *cases.Case) error {
		return s.release.LogCaseReads(ctx, release.Caller{Agency: cs.OpenedBy}, cs)
	}
	opened, dup, err := s.cases.OpenFromEvent(ctx, c.ID, ev, logOpen)
	outcome := LifeEventOpened
	switch {
	case err != nil && refusal.As(err) != nil && refusal.As(err).Kind == refusal.Unavailable:
		outcome = LifeEventFailed
	case err != nil:
		outcome = LifeEventRefused
	case dup:
		outcome = LifeEventDuplicate
	}
	typ := req.GetType()
	if !s.cases.KnownEvent(typ) {
		typ = "unknown" // an undeclared type is the caller's text: keep it out of the metric's labels
	}
	s.count.Add(ctx, typ, c.ID, outcome)
	if err != nil {
		s.log.Info("life event not accepted", "authority", c.ID, "event_type", typ, "outcome", outcome)
		return nil, err
	}
	resp := &brokerv1.PublishLifeEventResponse{Duplicate: dup}
	for _, cs := range opened {
		resp.Cases = append(resp.Cases, &brokerv1.StartedCase{CaseId: cs.ID, Journey: cs.Journey, Agency: cs.OpenedBy})
	}
	return resp, nil
}
