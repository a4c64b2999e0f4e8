package release

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/breakglass"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// BreakGlassStore keeps the review queue and the per-caseworker use counts (breakglass.Store).
type BreakGlassStore interface {
	Reserve(ctx context.Context, agency, caseworker string, limit int, window time.Duration, now time.Time) (remaining int, _ error)
	Queue(ctx context.Context, r *breakglass.Review) error
}

// BreakGlassRequest is an emergency release request: what a Request asks, a reason code of the
// journey's break-glass rule and the caseworker's justification.
type BreakGlassRequest struct {
	CaseID, Authority, Dataset string
	Fields, Derived            []string
	ReasonCode, Justification  string
}

// BreakGlassResult is what a break-glass release released, and how many more the caseworker may make
// in the rule's window.
type BreakGlassResult struct {
	Result
	Remaining int
}

// MinJustification is the shortest justification a break-glass release accepts (runes, trimmed).
const MinJustification = 20

// BreakGlassDecision is the policy part of a break-glass release.
type BreakGlassDecision struct {
	Journey *policy.Journey
	Rule    *policy.BreakGlass
	Grant   policy.Grant
}

// DecideBreakGlass is the break-glass decision without I/O: the case is open, its journey has a
// break-glass rule for agency, the reason code is one of the rule's, and the rule names everything asked
// for (policy.BreakGlass.Check: minimal disclosure as at a step). Without a rule it refuses: default
// deny. `aperture policy test` runs it for break-glass cases.
func DecideBreakGlass(b *policy.Bundle, c *cases.Case, agency string, req BreakGlassRequest) (BreakGlassDecision, *refusal.Error) {
	var d BreakGlassDecision
	j, ok := b.Journey(c.Journey)
	if !ok {
		return d, refusal.New(refusal.FailedPrecondition, "journey %q is no longer in the policy", c.Journey).Because(auditv1.RefusalReason_REFUSAL_REASON_POLICY_CHANGED, "journey", c.Journey)
	}
	d.Journey = j
	bg, ok := j.BreakGlassFor(agency)
	if !ok {
		return d, refusal.New(refusal.PermissionDenied, "journey %q allows agency %q no break-glass release", j.ID, agency).
			Because(auditv1.RefusalReason_REFUSAL_REASON_BREAK_GLASS_NOT_ALLOWED, "journey", j.ID, "agency", agency)
	}
	d.Rule = bg
	if _, open := c.CurrentStep(); !open {
		return d, refusal.New(refusal.FailedPrecondition, "case %s is closed; nothing more can be released for it", c.ID).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_CLOSED, "case", c.ID)
	}
	if _, ok := bg.Reason(req.ReasonCode); !ok {
		codes := make([]string, len(bg.Reasons))
		for i, r := range bg.Reasons {
			codes[i] = r.Code
		}
		return d, refusal.New(refusal.PermissionDenied, "reason code %q is not one of the break-glass reasons of journey %q for agency %q (%s)", req.ReasonCode, j.ID, agency, strings.Join(codes, ", ")).
			Because(auditv1.RefusalReason_REFUSAL_REASON_BREAK_GLASS_NOT_ALLOWED, "journey", j.ID, "agency", agency, "reason_code", req.ReasonCode)
	}
	if n := len([]rune(strings.TrimSpace(req.Justification))); n < MinJustification {
		return d, refusal.New(refusal.InvalidArgument, "a break-glass release needs a justification of at least %d characters", MinJustification).Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_REQUEST)
	}
	grant, err := bg.Check(req.Authority, req.Dataset, req.Fields, req.Derived)
	if err != nil {
		field, fact := policy.CheckSubject(err)
		if errors.Is(err, policy.ErrInvalidPath) {
			return d, refusal.New(refusal.InvalidArgument, "%s", err).Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_FIELD_PATH, "dataset", req.Authority+"."+req.Dataset, "field", field)
		}
		return d, refusal.New(refusal.PermissionDenied, "%s", err).
			Because(auditv1.RefusalReason_REFUSAL_REASON_BREAK_GLASS_NOT_ALLOWED, "journey", j.ID, "agency", agency, "dataset", req.Authority+"."+req.Dataset, "field", field, "fact", fact)
	}
	d.Grant = grant
	return d, nil
}

// BreakGlass runs an emergency release: decide (DecideBreakGlass), count the use against the
// caseworker's limit, queue it for review, fetch exactly the grant, and log it flagged — visible to the
// citizen at once, never hidden — before answering. Refusals are logged like any other. An agency with
// neither a step nor a break-glass rule in the case's journey is answered as for an unknown case.
func (s *Service) BreakGlass(ctx context.Context, caller Caller, req BreakGlassRequest) (_ *BreakGlassResult, err error) {
	start := time.Now()
	now := s.cfg.Now()
	bundle := s.cfg.Policies()
	o := outcome{agency: caller.Agency}
	defer func() { s.bgm.record(ctx, o, err) }()
	if strings.TrimSpace(caller.Caseworker) == "" {
		return nil, refusal.New(refusal.InvalidArgument, "a break-glass release must name the caseworker (the limit is per caseworker)").Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_REQUEST)
	}
	c, err := s.writableCase(ctx, req.CaseID)
	if err != nil {
		return nil, err
	}
	if j, ok := bundle.Journey(c.Journey); !c.Involves(caller.Agency) && (!ok || !hasBreakGlass(j, caller.Agency)) {
		return nil, refusal.Wrap(refusal.NotFound, cases.ErrNotParticipant, "case %s does not exist", req.CaseID).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_NOT_FOUND)
	}
	o.journey = c.Journey
	pn := s.cfg.Pseudonyms.Pseudonym(c.CitizenID)
	rec := &auditv1.AccessRecord{
		Id: ids.New("acc", now), Time: timestamppb.New(now),
		CitizenPseudonym: pn.Value, PseudonymKeyId: pn.KeyID,
		Kind:   auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
		Agency: caller.Agency, Caseworker: caller.Caseworker,
		CaseId: c.ID, Journey: c.Journey, Step: policy.BreakGlassStep,
		Authority: req.Authority, Dataset: req.Dataset, Fields: req.Fields, Derived: req.Derived,
		PolicyVersion: bundle.Version,
		BreakGlass:    &auditv1.BreakGlass{ReasonCode: req.ReasonCode, Justification: strings.TrimSpace(req.Justification)},
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("aperture.access_id", rec.Id), attribute.Bool("aperture.break_glass", true))
	res, ref := s.breakGlass(ctx, bundle, c, caller, req, rec, now, start)
	if ref != nil {
		if ref.Kind == refusal.InvalidArgument {
			return nil, ref
		}
		rec.Decision = auditv1.Decision_DECISION_REFUSED
		rec.Reason, rec.Code = ref.Reason, ref.Kind.String()
		rec.RefusalReason, rec.RefusalSubject = ref.Why, ref.Subject()
		if err := s.appendRecord(ctx, rec); err != nil {
			return nil, logUnavailable(err)
		}
		return nil, ref
	}
	rec.Decision = auditv1.Decision_DECISION_RELEASED
	if err := s.appendRecord(ctx, rec); err != nil {
		return nil, logUnavailable(err)
	}
	s.cfg.Logger.Warn("break-glass release", "access_id", rec.Id, "agency", caller.Agency, "journey", c.Journey, "reason_code", req.ReasonCode)
	res.AccessID = rec.Id
	return res, nil
}

func hasBreakGlass(j *policy.Journey, agency string) bool {
	_, ok := j.BreakGlassFor(agency)
	return ok
}

// breakGlass fills rec with the rule's purpose, legal basis and grant and returns the result or a
// refusal. The use is counted and queued for review before the authority is asked.
func (s *Service) breakGlass(ctx context.Context, b *policy.Bundle, c *cases.Case, caller Caller, req BreakGlassRequest, rec *auditv1.AccessRecord, now, start time.Time) (*BreakGlassResult, *refusal.Error) {
	d, ref := DecideBreakGlass(b, c, caller.Agency, req)
	if d.Rule != nil {
		rec.Purpose, rec.LegalBasis = d.Rule.Purpose.EN, d.Rule.LegalBasis
	}
	if ref != nil {
		return nil, ref
	}
	rec.Fields = d.Grant.Fields
	rec.Derived = make([]string, len(d.Grant.Derived))
	for i, f := range d.Grant.Derived {
		rec.Derived[i] = f.Name
	}
	if s.cfg.BreakGlass == nil {
		return nil, refusal.New(refusal.Unavailable, "break-glass is not available on this broker; nothing was released").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	rule := d.Rule
	rctx, cancel := s.stateCtx(ctx)
	remaining, err := s.cfg.BreakGlass.Reserve(rctx, caller.Agency, caller.Caseworker, rule.Limit, rule.Window, now)
	cancel()
	switch {
	case errors.Is(err, breakglass.ErrRateLimited):
		hours := strconv.Itoa(int(rule.Window / time.Hour))
		return nil, refusal.Wrap(refusal.ResourceExhausted, err, "the caseworker has made %d break-glass releases in %s hours, the most journey %q allows", rule.Limit, hours, d.Journey.ID).
			Because(auditv1.RefusalReason_REFUSAL_REASON_BREAK_GLASS_RATE_LIMITED, "journey", d.Journey.ID, "agency", caller.Agency, "limit", strconv.Itoa(rule.Limit), "window_hours", hours)
	case err != nil:
		return nil, refusal.Wrap(refusal.Unavailable, err, "break-glass state is unavailable; nothing was released").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	// Queued before anything is fetched: a release no auditor would hear of never happens. If the
	// release then fails, the auditor reviews an attempt (the log holds its refusal).
	review := &breakglass.Review{
		AccessID: rec.Id, Time: now, Agency: caller.Agency, Caseworker: caller.Caseworker, CaseID: c.ID, Journey: c.Journey,
		Authority: req.Authority, Dataset: req.Dataset, Fields: rec.Fields, Derived: rec.Derived,
		ReasonCode: rec.BreakGlass.ReasonCode, Justification: rec.BreakGlass.Justification,
		Pseudonym: rec.CitizenPseudonym, PseudonymKeyID: rec.PseudonymKeyId,
	}
	qctx, cancel := s.stateCtx(ctx)
	err = s.cfg.BreakGlass.Queue(qctx, review)
	cancel()
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the break-glass review queue is unavailable; nothing was released").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	s.m.since(ctx, StageDecide, start)
	defer s.m.since(ctx, StageFetch, time.Now())
	res, ref := s.fetch(ctx, c, caller, rule.Step(), d.Grant, rec)
	if ref != nil {
		return nil, ref
	}
	return &BreakGlassResult{Result: *res, Remaining: remaining}, nil
}

// MetricBreakGlass counts break-glass requests by decision, reason, agency and journey.
const MetricBreakGlass = "aperture.breakglass.decisions"

// breakGlassMetrics are the break-glass path's metrics, apart from the release path's own.
type breakGlassMetrics struct{ decisions metric.Int64Counter }

func newBreakGlassMetrics(mp metric.MeterProvider) (*breakGlassMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter("github.com/aperture-gov/aperture/broker/release").Int64Counter(MetricBreakGlass, metric.WithUnit("{request}"),
		metric.WithDescription("Break-glass (emergency) release requests by decision, refusal reason, agency and journey. Never a citizen, caseworker or value."))
	return &breakGlassMetrics{decisions: c}, err
}

func (m *breakGlassMetrics) record(ctx context.Context, o outcome, err error) {
	decision, reason := DecisionReleased, ""
	if err != nil {
		ref := refusal.As(err)
		reason = ref.Kind.String()
		if ref.Why != 0 {
			reason = refusal.ErrorInfoReason(ref.Why)
		}
		switch ref.Kind {
		case refusal.Unavailable, refusal.Internal:
			decision = DecisionUnavailable
		case refusal.InvalidArgument:
			decision = DecisionInvalid
		default:
			decision = DecisionRefused
		}
	}
	m.decisions.Add(ctx, 1, metric.WithAttributes(
		attribute.String("decision", decision), attribute.String("reason", reason),
		attribute.String("agency", o.agency), attribute.String("journey", o.journey)))
}
