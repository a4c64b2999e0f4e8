// Package release is the broker's hot path: for one request of a caseworker it decides (default deny),
// fetches exactly what the current step allows from the authority, strips anything the authority
// over-shared, writes the access record durably, and only then answers. Refusals are written too. If the
// access log cannot take the record, nothing is released.
package release

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/authorities"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// Log is the durable access log. Append MUST return nil only once the record is durable.
type Log interface {
	Append(ctx context.Context, rec *auditv1.AccessRecord) error
}

// Authorities fetches records and knows the dataset schemas.
type Authorities interface {
	Fetch(ctx context.Context, authority string, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, error)
	Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error)
}

// Cases reads case state.
type Cases interface {
	Get(ctx context.Context, id string) (*cases.Case, error)
}

// cachedCases is a Cases that may answer from memory (cases.Store): then no read deadline is needed.
type cachedCases interface {
	Cached(id string) (*cases.Case, bool)
}

// Consents reads consents.
type Consents interface {
	Get(ctx context.Context, pseudonym, journey, step string) (*consent.Consent, error)
}

// Caller is who asks: the agency from the client certificate and the caseworker it names.
type Caller struct {
	Agency     string
	Caseworker string
}

// Request is one release request.
type Request struct {
	CaseID, Authority, Dataset string
	Fields, Derived            []string
	// HiddenUntil, at a covert step only, keeps the access from the citizen until then (at most the
	// step's maximum delay); nil at a covert step means the maximum.
	HiddenUntil *time.Time
}

// Result is what was released.
type Result struct {
	AccessID   string
	Record     *anypb.Any
	Derived    []*brokerv1.DerivedFact
	Fields     []string
	Step       string
	Purpose    string
	LegalBasis string

	// answers are the released bool facts the citizen may see the answer of (policy.Derived.ShowsAnswer).
	answers map[string]bool
}

// Answers keeps the answers of released bool facts for the citizen, outside the access log (which
// holds no values). Put is called once per access, after its record is durable.
type Answers interface {
	Put(ctx context.Context, pseudonym, accessID string, answers map[string]bool) error
}

// Config holds a Service's dependencies.
type Config struct {
	Policies     func() *policy.Bundle
	Cases        Cases
	Consents     Consents
	Log          Log
	Authorities  Authorities
	Pseudonyms   keys.Pseudonymizer
	Now          func() time.Time
	Logger       *slog.Logger
	FetchTimeout time.Duration // default 5s
	// StateTimeout bounds each read or write of broker state on the release path (the case, a
	// consent, a switch-off, kept answers). A store whose stream lost its quorum never answers; the
	// caller hears Unavailable after this, not at its own deadline. Default 1s.
	StateTimeout time.Duration
	// Meter records the release path's metrics (aperture_release_*); nil records none.
	Meter metric.MeterProvider
	// Switches reads the citizens' switch-offs of optional steps; nil refuses every optional step
	// (fail closed: the citizen's choice cannot be read).
	Switches Switches
	// BreakGlass keeps the break-glass review queue and use counts; nil refuses every break-glass
	// release.
	BreakGlass BreakGlassStore
	// Answers keeps the answers of released facts the citizen may see; nil keeps none (the citizen then
	// reads only what was checked).
	Answers Answers
}

// Service runs the release path.
type Service struct {
	cfg Config
	m   *metrics
	bgm *breakGlassMetrics
}

// writable is what a Log may also offer: whether it takes writes now. A release it would refuse is
// refused before the citizen's data is fetched.
type writable interface{ Writable() error }

// New returns a Service. Every dependency is required.
func New(cfg Config) (*Service, error) {
	if cfg.Policies == nil || cfg.Cases == nil || cfg.Consents == nil || cfg.Log == nil || cfg.Authorities == nil || cfg.Pseudonyms == nil {
		return nil, errors.New("release: missing dependency")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 5 * time.Second
	}
	if cfg.StateTimeout <= 0 {
		cfg.StateTimeout = time.Second
	}
	m, err := newMetrics(cfg.Meter)
	if err != nil {
		return nil, fmt.Errorf("release metrics: %w", err)
	}
	bgm, err := newBreakGlassMetrics(cfg.Meter)
	if err != nil {
		return nil, fmt.Errorf("release metrics: %w", err)
	}
	return &Service{cfg: cfg, m: m, bgm: bgm}, nil
}

// Release decides, fetches, logs and answers. Every refusal that concerns an identified case is logged
// before it is returned; a refusal the log cannot take becomes Unavailable.
func (s *Service) Release(ctx context.Context, caller Caller, req Request) (_ *Result, err error) {
	start := time.Now()
	now := s.cfg.Now()
	bundle := s.cfg.Policies()
	o := outcome{agency: caller.Agency, authority: authorityLabel(bundle, req.Authority)}
	defer func() { s.m.record(ctx, o, err) }()
	if req.HiddenUntil != nil && !req.HiddenUntil.After(now) {
		return nil, refusal.New(refusal.InvalidArgument, "hidden_until must be in the future").Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_REQUEST)
	}
	c, err := s.writableCase(ctx, req.CaseID)
	if err != nil {
		return nil, err
	}
	if !c.Involves(caller.Agency) {
		// To an agency with no step in the journey the case does not exist: the same answer as an unknown
		// id, and no record in the citizen's log (the edge writes the probe to the security log).
		return nil, refusal.Wrap(refusal.NotFound, cases.ErrNotParticipant, "case %s does not exist", req.CaseID).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_NOT_FOUND)
	}
	o.journey = c.Journey
	pn := s.cfg.Pseudonyms.Pseudonym(c.CitizenID)
	rec := &auditv1.AccessRecord{
		Id:               ids.New("acc", now),
		Time:             timestamppb.New(now),
		CitizenPseudonym: pn.Value,
		PseudonymKeyId:   pn.KeyID,
		Kind:             auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
		Agency:           caller.Agency,
		Caseworker:       caller.Caseworker,
		CaseId:           c.ID,
		Journey:          c.Journey,
		Authority:        req.Authority,
		Dataset:          req.Dataset,
		Fields:           req.Fields,
		Derived:          req.Derived,
		PolicyVersion:    bundle.Version,
	}
	// The access id ties a trace to the citizen's log entry without naming the citizen.
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("aperture.access_id", rec.Id))
	res, ref := s.decideAndFetch(ctx, bundle, c, caller, req, rec, now, start)
	if ref != nil {
		if ref.Kind == refusal.InvalidArgument {
			return nil, ref // malformed input changes nothing, not even the log
		}
		rec.Decision = auditv1.Decision_DECISION_REFUSED
		rec.Reason = ref.Reason
		rec.Code = ref.Kind.String()
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
	res.AccessID = rec.Id
	s.keepAnswers(ctx, rec, res.answers)
	return res, nil
}

// stateCtx bounds one read or write of broker state by StateTimeout.
func (s *Service) stateCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.StateTimeout)
}

// keepAnswers keeps the answers the citizen may see of a release whose record is durable. A failure
// does not withdraw the release (the record, not the answer, is the guarantee): it is logged without
// the answers and counted, and the citizen reads the check without its answer.
func (s *Service) keepAnswers(ctx context.Context, rec *auditv1.AccessRecord, answers map[string]bool) {
	if s.cfg.Answers == nil || len(answers) == 0 {
		return
	}
	sctx, cancel := s.stateCtx(ctx)
	defer cancel()
	err := s.cfg.Answers.Put(sctx, rec.CitizenPseudonym, rec.Id, answers)
	s.m.answerKept(ctx, err)
	if err != nil {
		s.cfg.Logger.Warn("fact answers not kept for the citizen; the portal shows the checks without answers",
			"access_id", rec.Id, "facts", len(answers), "err", err)
	}
}

// logUnavailable is the refusal when the access log cannot take the record: nothing is released.
func logUnavailable(err error) *refusal.Error {
	return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was released").
		Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
}

func (s *Service) appendRecord(ctx context.Context, rec *auditv1.AccessRecord) error {
	defer s.m.since(ctx, StageLogAppend, time.Now())
	return s.cfg.Log.Append(ctx, rec)
}

// decideAndFetch fills rec with the step, purpose, legal basis and exact grant, and returns either the
// result or a refusal.
func (s *Service) decideAndFetch(ctx context.Context, b *policy.Bundle, c *cases.Case, caller Caller, req Request, rec *auditv1.AccessRecord, now, start time.Time) (*Result, *refusal.Error) {
	d, ref := Decide(b, c, caller.Agency, req)
	if d.Step != nil {
		rec.Step, rec.Purpose, rec.LegalBasis = d.Step.ID, d.Step.Purpose.EN, d.Step.LegalBasis
		if hide := hiding(d.Step, req.HiddenUntil, now, rec); hide != nil && ref == nil {
			ref = hide
		}
	} else if ref != nil {
		// No current step (the case is closed): the refusal must not reveal a covert step the case
		// ended at either.
		hideAtCovert(b, c, now, rec)
	}
	if ref != nil {
		return nil, ref
	}
	rec.Fields = d.Grant.Fields
	rec.Derived = make([]string, len(d.Grant.Derived))
	for i, f := range d.Grant.Derived {
		rec.Derived[i] = f.Name
	}
	if d.Journey.OptionalAt(d.Step) != nil {
		if ref := s.switchedOff(ctx, rec.CitizenPseudonym, d.Journey.ID, d.Step.ID); ref != nil {
			return nil, ref
		}
	}
	if d.NeedsConsent {
		sctx, cancel := s.stateCtx(ctx)
		cn, err := s.cfg.Consents.Get(sctx, rec.CitizenPseudonym, d.Journey.ID, d.Step.ID)
		cancel()
		if ref := ConsentRefusal(cn, err, d.Journey.ID, d.Step, now); ref != nil {
			return nil, ref
		}
	}
	s.m.since(ctx, StageDecide, start)
	defer s.m.since(ctx, StageFetch, time.Now())
	return s.fetch(ctx, c, caller, d.Step, d.Grant, rec)
}

// hiding sets rec's hidden-until time and reason when step is covert: every access at a covert step,
// released or refused, is hidden for the delay asked (the step's maximum when none is asked). A request
// to hide longer than the maximum, or at a step that is not covert, is refused, and that refusal is
// itself logged (visible at once when the step is not covert): a caseworker cannot quietly hide an
// access the policy does not allow to be hidden.
func hiding(step *policy.Step, asked *time.Time, now time.Time, rec *auditv1.AccessRecord) *refusal.Error {
	if step.Covert == nil {
		if asked != nil {
			return refusal.New(refusal.PermissionDenied, "step %q is not covert: its accesses cannot be hidden from the citizen", step.ID).Because(auditv1.RefusalReason_REFUSAL_REASON_HIDING_NOT_ALLOWED, "step", step.ID)
		}
		return nil
	}
	limit := now.Add(step.Covert.MaxDelay())
	until := limit
	if asked != nil && !asked.After(limit) {
		until = *asked
	}
	rec.HiddenUntil = timestamppb.New(until)
	rec.HiddenReason = step.Covert.Reason.EN
	if asked != nil && asked.After(limit) {
		return refusal.New(refusal.PermissionDenied, "step %q hides accesses for at most %d days", step.ID, step.Covert.MaxDays).Because(auditv1.RefusalReason_REFUSAL_REASON_HIDING_NOT_ALLOWED, "step", step.ID)
	}
	return nil
}

// Decision is the outcome of the policy part of a release.
type Decision struct {
	// Journey and Step are the case's journey and current step, once they are known (also when the
	// request is then refused, so that the refusal can be logged with the step's purpose).
	Journey *policy.Journey
	Step    *policy.Step
	// Grant is exactly what may be fetched, when the request is allowed.
	Grant policy.Grant
	// NeedsConsent is true when the step can only release with the citizen's valid consent, which the
	// caller checks with ConsentRefusal.
	NeedsConsent bool
}

// Decide is the broker's release decision without I/O: the case is open, agency takes part in it and
// acts at its current step, and the step allows exactly what req asks for (policy.Step.Check). It is
// what Release decides before it looks at consent, and what `aperture policy test` runs, so that a
// policy test exercises the broker's own rules. A request Step.Check finds malformed is refused with
// InvalidArgument, any other not-allowed request with PermissionDenied.
//
// An agency that takes no part in the case gets the policy's reason here (PermissionDenied, "takes no
// part"), for policy authors; Release answers it as if the case did not exist (NotFound) and keeps the
// attempt out of the citizen's log.
func Decide(b *policy.Bundle, c *cases.Case, agency string, req Request) (Decision, *refusal.Error) {
	var d Decision
	if !c.Involves(agency) {
		return d, refusal.New(refusal.PermissionDenied, "agency %q takes no part in case %s", agency, c.ID).Because(auditv1.RefusalReason_REFUSAL_REASON_NOT_A_PARTICIPANT, "agency", agency)
	}
	j, step, ref := currentStep(b, c)
	d.Journey, d.Step = j, step
	if ref != nil {
		return d, ref
	}
	d.NeedsConsent = step.Consent != nil
	if step.Agency != agency {
		return d, refusal.New(refusal.PermissionDenied,
			"the current step %q of journey %q is for agency %q, not %q", step.ID, j.ID, step.Agency, agency).
			Because(auditv1.RefusalReason_REFUSAL_REASON_STEP_NOT_CURRENT, "journey", j.ID, "step", step.ID, "agency", step.Agency)
	}
	grant, err := step.Check(req.Authority, req.Dataset, req.Fields, req.Derived)
	if err != nil {
		field, fact := policy.CheckSubject(err)
		why := auditv1.RefusalReason_REFUSAL_REASON_FIELD_NOT_RELEASED
		switch {
		case errors.Is(err, policy.ErrInvalidPath):
			return d, refusal.New(refusal.InvalidArgument, "%s", err).Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_FIELD_PATH, "dataset", req.Authority+"."+req.Dataset, "field", field)
		case errors.Is(err, policy.ErrDatasetNotAllowed):
			why = auditv1.RefusalReason_REFUSAL_REASON_DATASET_NOT_RELEASED
		case fact != "":
			why = auditv1.RefusalReason_REFUSAL_REASON_FACT_NOT_RELEASED
		}
		return d, refusal.New(refusal.PermissionDenied, "%s", err).
			Because(why, "journey", j.ID, "step", step.ID, "dataset", req.Authority+"."+req.Dataset, "field", field, "fact", fact)
	}
	d.Grant = grant
	return d, nil
}

// currentStep returns the policy journey and step the open case c is at, or why there is none: the case
// is closed, or the policy no longer has its journey or step. j is set whenever the journey is known.
func currentStep(b *policy.Bundle, c *cases.Case) (j *policy.Journey, step *policy.Step, _ *refusal.Error) {
	cur, ok := c.CurrentStep()
	if !ok {
		return nil, nil, refusal.New(refusal.FailedPrecondition, "case %s is closed; nothing more can be released for it", c.ID).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_CLOSED, "case", c.ID)
	}
	j, ok = b.Journey(c.Journey)
	if !ok {
		return nil, nil, refusal.New(refusal.FailedPrecondition, "journey %q is no longer in the policy", c.Journey).Because(auditv1.RefusalReason_REFUSAL_REASON_POLICY_CHANGED, "journey", c.Journey)
	}
	step, _, ok = j.Step(cur.ID)
	if !ok {
		return j, nil, refusal.New(refusal.FailedPrecondition, "step %q is no longer in journey %q", cur.ID, j.ID).Because(auditv1.RefusalReason_REFUSAL_REASON_POLICY_CHANGED, "journey", j.ID, "step", cur.ID)
	}
	return j, step, nil
}

// ConsentRefusal decides whether step, which needs consent, may release at now, given what
// Consents.Get answered (cn, err): nil when the consent is valid. A stored consent that does not
// authenticate reads as ErrNotFound. The consent's duration is checked against the step's current
// maximum here, at every decision: a consent lasting longer than the policy allows is not valid.
func ConsentRefusal(cn *consent.Consent, err error, journey string, st *policy.Step, now time.Time) *refusal.Error {
	step, maxDays := st.ID, 0
	if st.Consent != nil {
		maxDays = st.Consent.MaxDays
	}
	switch {
	case errors.Is(err, consent.ErrNotFound):
		return refusal.New(refusal.FailedPrecondition, "step %q of journey %q needs the citizen's consent, and the citizen has not given it", step, journey).Because(auditv1.RefusalReason_REFUSAL_REASON_CONSENT_MISSING, "journey", journey, "step", step)
	case err != nil:
		return refusal.Wrap(refusal.Unavailable, err, "consent state is unavailable; nothing was released").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	case cn.RevokedAt != nil:
		return refusal.New(refusal.FailedPrecondition, "the citizen revoked consent for step %q of journey %q on %s", step, journey, cn.RevokedAt.UTC().Format(time.DateOnly)).Because(auditv1.RefusalReason_REFUSAL_REASON_CONSENT_REVOKED, "journey", journey, "step", step)
	case !cn.WithinMax(maxDays):
		return refusal.New(refusal.FailedPrecondition, "the citizen's consent for step %q of journey %q lasts longer than the policy allows (%d days); it is not valid", step, journey, maxDays).Because(auditv1.RefusalReason_REFUSAL_REASON_CONSENT_EXPIRED, "journey", journey, "step", step)
	case !cn.ValidAt(now, maxDays):
		return refusal.New(refusal.FailedPrecondition, "the citizen's consent for step %q of journey %q expired on %s", step, journey, cn.ExpiresAt.UTC().Format(time.DateOnly)).Because(auditv1.RefusalReason_REFUSAL_REASON_CONSENT_EXPIRED, "journey", journey, "step", step)
	}
	return nil
}

func (s *Service) fetch(ctx context.Context, c *cases.Case, caller Caller, step *policy.Step, grant policy.Grant, rec *auditv1.AccessRecord) (*Result, *refusal.Error) {
	rule := grant.Rule
	fr := &authorityv1.FetchRequest{
		CitizenId: c.CitizenID,
		Dataset:   rule.Dataset,
		FieldMask: &fieldmaskpb.FieldMask{Paths: grant.Fields},
		Context: &authorityv1.AccessContext{
			AccessId: rec.Id, CaseId: c.ID, Journey: c.Journey, Step: step.ID,
			Purpose: rec.Purpose, LegalBasis: rec.LegalBasis, Agency: caller.Agency, Caseworker: caller.Caseworker,
		},
	}
	for _, d := range grant.Derived {
		fr.Derived = append(fr.Derived, &authorityv1.DerivedExpression{Name: d.Name, Expression: d.Expression})
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	resp, err := s.cfg.Authorities.Fetch(fctx, rule.Authority, fr)
	cancel()
	switch {
	case errors.Is(err, authorities.ErrNotFound):
		return nil, refusal.New(refusal.NotFound, "%s holds no %s record for this citizen", rule.Authority, rule.Dataset).Because(auditv1.RefusalReason_REFUSAL_REASON_RECORD_NOT_FOUND, "authority", rule.Authority, "dataset", rule.Authority+"."+rule.Dataset)
	case errors.Is(err, authorities.ErrUnavailable):
		return nil, refusal.Wrap(refusal.Unavailable, err, "authority %q is unavailable; nothing was released", rule.Authority).Because(auditv1.RefusalReason_REFUSAL_REASON_AUTHORITY_UNAVAILABLE, "authority", rule.Authority)
	case err != nil:
		return nil, refusal.Wrap(refusal.Unavailable, err, "authority %q failed to answer; nothing was released", rule.Authority).Because(auditv1.RefusalReason_REFUSAL_REASON_AUTHORITY_UNAVAILABLE, "authority", rule.Authority)
	}

	record, violations, err := s.minimise(rule, grant, resp)
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "authority %q answered with a malformed record; nothing was released", rule.Authority).Because(auditv1.RefusalReason_REFUSAL_REASON_AUTHORITY_UNAVAILABLE, "authority", rule.Authority)
	}
	facts, extraFacts, err := matchDerived(grant, resp.GetDerived())
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "authority %q answered without a requested fact, or with one outside its declared type; nothing was released", rule.Authority).Because(auditv1.RefusalReason_REFUSAL_REASON_AUTHORITY_UNAVAILABLE, "authority", rule.Authority)
	}
	violations = append(violations, extraFacts...)
	if len(violations) > 0 {
		rec.Violations = violations
		s.cfg.Logger.Warn("authority over-shared; extra fields stripped", "authority", rule.Authority,
			"dataset", rule.Dataset, "paths", violations, "access_id", rec.Id)
	}
	return &Result{
		Record: record, Derived: facts, Fields: grant.Fields,
		Step: step.ID, Purpose: rec.Purpose, LegalBasis: rec.LegalBasis,
		answers: shownAnswers(grant, facts),
	}, nil
}

// shownAnswers are the answers of the released facts (in grant order, as matchDerived returns them)
// that the policy lets the citizen see: bool facts whose policy does not say no.
func shownAnswers(grant policy.Grant, facts []*brokerv1.DerivedFact) map[string]bool {
	var out map[string]bool
	for i, d := range grant.Derived {
		if !d.ShowsAnswer() || i >= len(facts) {
			continue
		}
		b, ok := facts[i].GetValue().GetKind().(*structpb.Value_BoolValue)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]bool)
		}
		out[d.Name] = b.BoolValue
	}
	return out
}

// minimise checks the authority's record against the grant and strips anything beyond it, re-encoding
// the record so that nothing unmasked survives even in unknown fields.
func (s *Service) minimise(rule *policy.Rule, grant policy.Grant, resp *authorityv1.FetchResponse) (*anypb.Any, []string, error) {
	md := rule.Message
	rec := resp.GetRecord()
	if rec == nil {
		return nil, nil, errors.New("no record in answer")
	}
	if got := rec.MessageName(); got != md.FullName() {
		return nil, nil, fmt.Errorf("record type %s, want %s", got, md.FullName())
	}
	// Exactly the mask, seen on the wire: forward the authority's bytes without decoding them.
	if exactlyMasked(md, rec.GetValue(), grant.Fields) {
		return rec, nil, nil
	}
	msg := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(rec.GetValue(), msg); err != nil {
		return nil, nil, fmt.Errorf("decode %s: %w", md.FullName(), err)
	}
	extra := fieldmask.Extra(msg, grant.Fields)
	unknown := hasUnknown(msg)
	// Exactly the mask, and no byte the parse did not account for (an explicitly encoded default of a
	// field outside the mask would change the size): forward the authority's bytes as they are.
	if len(extra) == 0 && !unknown && proto.Size(msg) == len(rec.GetValue()) {
		return rec, nil, nil
	}
	violations := extra
	fieldmask.Apply(msg, grant.Fields)
	if unknown {
		violations = append(violations, "(unknown fields)")
		dropUnknown(msg)
	}
	out, err := anypb.New(msg)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", md.FullName(), err)
	}
	return out, violations, nil
}

// hasUnknown reports whether m or any message inside it carries bytes its schema does not describe.
func hasUnknown(m protoreflect.Message) bool {
	found := len(m.GetUnknown()) > 0
	eachMessage(m, func(sub protoreflect.Message) { found = found || hasUnknown(sub) })
	return found
}

// eachMessage calls fn for every message directly inside m (fields, list elements, map values).
func eachMessage(m protoreflect.Message, fn func(protoreflect.Message)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					fn(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					fn(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			fn(v.Message())
		}
		return true
	})
}

// dropUnknown clears unknown fields everywhere in m: bytes the schema does not describe cannot be
// checked against the mask, so they are never forwarded.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	eachMessage(m, dropUnknown)
}

// matchDerived returns the granted facts in grant order. A granted fact the authority did not return is
// an error; a fact it returned that was not granted is a violation and is dropped.
func matchDerived(grant policy.Grant, got []*authorityv1.DerivedValue) ([]*brokerv1.DerivedFact, []string, error) {
	byName := make(map[string]*authorityv1.DerivedValue, len(got))
	for _, v := range got {
		byName[v.GetName()] = v
	}
	facts := make([]*brokerv1.DerivedFact, 0, len(grant.Derived))
	for _, d := range grant.Derived {
		v, ok := byName[d.Name]
		if !ok || v.GetValue() == nil {
			return nil, nil, fmt.Errorf("fact %q missing", d.Name)
		}
		if !d.Type.Admits(v.GetValue()) {
			// Fail closed: a value outside the declared type discloses more than the policy says.
			return nil, nil, fmt.Errorf("fact %q is not of its declared type %s", d.Name, d.Type)
		}
		delete(byName, d.Name)
		facts = append(facts, &brokerv1.DerivedFact{Name: d.Name, Description: d.Description.EN, Value: v.GetValue()})
	}
	var extra []string
	for name := range byName {
		extra = append(extra, "derived:"+name)
	}
	slices.Sort(extra)
	return facts, extra, nil
}

// writableCase reads the case a release is for, once the log can take its record. While the log's
// breaker is open the answer is Unavailable whatever happens, so nothing is read or fetched for it
// (and the refusal cannot be logged).
func (s *Service) writableCase(ctx context.Context, id string) (*cases.Case, error) {
	if w, ok := s.cfg.Log.(writable); ok {
		if err := w.Writable(); err != nil {
			return nil, logUnavailable(err)
		}
	}
	if cc, ok := s.cfg.Cases.(cachedCases); ok {
		if c, ok := cc.Cached(id); ok {
			return c, nil
		}
	}
	sctx, cancel := s.stateCtx(ctx)
	defer cancel()
	c, err := s.cfg.Cases.Get(sctx, id)
	if errors.Is(err, cases.ErrNotFound) {
		return nil, refusal.New(refusal.NotFound, "case %s does not exist", id).Because(auditv1.RefusalReason_REFUSAL_REASON_CASE_NOT_FOUND)
	}
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "case state is unavailable; nothing was released").Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	return c, nil
}
