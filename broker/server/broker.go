package server

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/pagetoken"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/questions"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/release"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Broker implements aperture.broker.v1.BrokerService.
type Broker struct {
	brokerv1.UnimplementedBrokerServiceServer
	cases     *cases.Service
	release   *release.Service
	questions Questions
	qlog      AccessLog
	qcount    *questions.Counter
	registry  func() *policy.Registry
	now       func() time.Time
	log       *slog.Logger
	security  *slog.Logger
}

// Questions keeps the citizens' questions about accesses (questions.Store).
type Questions interface {
	ListByAgency(ctx context.Context, agency string, onlyOpen bool) ([]*questions.Question, error)
	AnswerLogged(ctx context.Context, agency, id, answer, caseworker string, now time.Time, first func(*questions.Question) error) (*questions.Question, error)
}

// AccessLog is where an answer to a citizen's question is logged (accesslog.Log).
type AccessLog interface {
	// Append returns nil only once the record is durable.
	Append(ctx context.Context, rec *auditv1.AccessRecord) error
}

// BrokerOption configures a Broker.
type BrokerOption func(*Broker)

// WithQuestions serves ListQuestions and AnswerQuestion from q; every answer is logged in the
// citizen's access log (ACCESS_KIND_QUESTION_ANSWERED) before it is stored; registry names the agencies
// in the answers, now stamps the answers, count counts them (nil: not counted). Without it both
// answer UNAVAILABLE.
func WithQuestions(q Questions, log AccessLog, count *questions.Counter, registry func() *policy.Registry, now func() time.Time) BrokerOption {
	return func(b *Broker) { b.questions, b.qlog, b.qcount, b.registry, b.now = q, log, count, registry, now }
}

// WithSecurityLog sends the operator's security events (an agency asking about a case it takes no part
// in) to l, which should carry component=security. Without it they go to the Broker's own logger with
// that attribute added to each line.
func WithSecurityLog(l *slog.Logger) BrokerOption {
	return func(b *Broker) { b.security = l }
}

// NewBroker returns the BrokerService implementation.
func NewBroker(c *cases.Service, r *release.Service, log *slog.Logger, opts ...BrokerOption) *Broker {
	b := &Broker{cases: c, release: r, log: log, now: time.Now}
	for _, o := range opts {
		o(b)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.security == nil {
		b.security = log.With("component", "security")
	}
	return b
}

func (b *Broker) agency(ctx context.Context) (Caller, error) { return requireRole(ctx, RoleAgency) }

// failCase is the error of a call about one case. An agency that takes no part in the case gets the answer
// for an unknown case; the attempt goes to the operator's security log only (agency and case id, never
// the citizen: it is not an access to the citizen's data, and attaching it to the citizen would tell
// whoever reads their log that the id was probed).
func (b *Broker) failCase(ctx context.Context, method, caseID string, err error) error {
	if errors.Is(err, cases.ErrNotParticipant) {
		agency := ""
		if c, ok := CallerFrom(ctx); ok {
			agency = c.ID
		}
		b.security.Warn("agency asked about a case it takes no part in", "method", method, "agency", agency, "case", caseID)
	}
	return err
}

// OpenCase implements BrokerService.
func (b *Broker) OpenCase(ctx context.Context, req *brokerv1.OpenCaseRequest) (*brokerv1.OpenCaseResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	// The citizen register is asked (and the question logged) before the case is stored: a citizen it
	// does not know gets no case.
	cs, err := b.cases.Open(ctx, c.ID, req.GetJourney(), req.GetCitizenId(), func(cs *cases.Case) error {
		return b.release.CheckRegistered(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, cs)
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.OpenCaseResponse{Case: cs.Proto(b.cases.Journey(cs.Journey))}, nil
}

// GetCase implements BrokerService.
func (b *Broker) GetCase(ctx context.Context, req *brokerv1.GetCaseRequest) (*brokerv1.GetCaseResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := b.cases.Get(ctx, c.ID, req.GetCaseId())
	if err != nil {
		return nil, b.failCase(ctx, "GetCase", req.GetCaseId(), err)
	}
	// The case names the citizen: no answer without a durable record of the read.
	if err := b.release.LogCaseReads(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, cs); err != nil {
		return nil, err
	}
	return &brokerv1.GetCaseResponse{Case: cs.Proto(b.cases.Journey(cs.Journey))}, nil
}

// ListCases implements BrokerService. The page token is a keyset cursor — the last case shown — bound
// to the caller and the filter, so paging while cases are opened never shows a case twice or skips one.
func (b *Broker) ListCases(ctx context.Context, req *brokerv1.ListCasesRequest) (*brokerv1.ListCasesResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	query := pagetoken.Query{"ListCases", c.ID, strconv.FormatBool(req.GetOnlyCurrent())}
	after, err := pagetoken.ParseKeyset(req.GetPageToken(), query)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 50
	}
	page, more, err := b.cases.List(ctx, c.ID, req.GetOnlyCurrent(), after, size)
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.ListCasesResponse{}
	if len(page) > 0 {
		// Every case on the page names its citizen: each is a read, durably logged before the answer.
		if err := b.release.LogCaseReads(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, page...); err != nil {
			return nil, err
		}
		for _, cs := range page {
			resp.Cases = append(resp.Cases, cs.Proto(b.cases.Journey(cs.Journey)))
		}
		if more {
			resp.NextPageToken = pagetoken.Keyset(query, page[len(page)-1].ID)
		}
	}
	return resp, nil
}

// Release implements BrokerService.
func (b *Broker) Release(ctx context.Context, req *brokerv1.ReleaseRequest) (*brokerv1.ReleaseResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	rr := release.Request{
		CaseID: req.GetCaseId(), Authority: req.GetAuthority(), Dataset: req.GetDataset(),
		Fields: req.GetFields(), Derived: req.GetDerived(),
	}
	if req.GetHiddenUntil() != nil {
		t := req.GetHiddenUntil().AsTime()
		rr.HiddenUntil = &t
	}
	res, err := b.release.Release(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, rr)
	if err != nil {
		return nil, b.failCase(ctx, "Release", req.GetCaseId(), err)
	}
	return &brokerv1.ReleaseResponse{
		AccessId: res.AccessID, Record: res.Record, Derived: res.Derived, Fields: res.Fields,
		Step: res.Step, Purpose: res.Purpose, LegalBasis: res.LegalBasis,
	}, nil
}

// CompleteStep implements BrokerService.
func (b *Broker) CompleteStep(ctx context.Context, req *brokerv1.CompleteStepRequest) (*brokerv1.CompleteStepResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := b.cases.Complete(ctx, c.ID, c.Caseworker, req.GetCaseId(), req.GetStep(), b.logReveals(c))
	if err != nil {
		return nil, b.failCase(ctx, "CompleteStep", req.GetCaseId(), err)
	}
	return &brokerv1.CompleteStepResponse{Case: cs.Proto(b.cases.Journey(cs.Journey))}, nil
}

// CloseCase implements BrokerService.
func (b *Broker) CloseCase(ctx context.Context, req *brokerv1.CloseCaseRequest) (*brokerv1.CloseCaseResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := b.cases.Close(ctx, c.ID, req.GetCaseId(), req.GetReason(), b.logReveals(c))
	if err != nil {
		return nil, b.failCase(ctx, "CloseCase", req.GetCaseId(), err)
	}
	return &brokerv1.CloseCaseResponse{Case: cs.Proto(b.cases.Journey(cs.Journey))}, nil
}

// logReveals is the hook that logs, before a case changes, the covert accesses the change shows the
// citizen early; the change is refused if the log cannot take the records.
func (b *Broker) logReveals(c Caller) cases.Before {
	return func(ctx context.Context, prev, next *cases.Case) error {
		return b.release.LogCovertReveals(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, prev, next)
	}
}

// ExplainStep implements BrokerService.
func (b *Broker) ExplainStep(ctx context.Context, req *brokerv1.ExplainStepRequest) (*brokerv1.ExplainStepResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	out, err := b.release.Explain(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, req.GetCaseId())
	if err != nil {
		return nil, b.failCase(ctx, "ExplainStep", req.GetCaseId(), err)
	}
	return out, nil
}

// agencyParty is the agency as the citizen sees it.
func (b *Broker) agencyParty(id string) *citizenv1.Party {
	if b.registry != nil {
		if a, ok := b.registry().Agency(id); ok {
			return &citizenv1.Party{Id: id, Name: &citizenv1.Text{En: a.Name.EN, Da: a.Name.DA}}
		}
	}
	return &citizenv1.Party{Id: id}
}

// ListQuestions implements BrokerService: the citizens' questions about the caller agency's accesses,
// newest first. They name the access, never the citizen.
func (b *Broker) ListQuestions(ctx context.Context, req *brokerv1.ListQuestionsRequest) (*brokerv1.ListQuestionsResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	if b.questions == nil {
		return nil, refusal.New(refusal.Unavailable, "questions are not enabled on this broker")
	}
	qs, err := b.questions.ListByAgency(ctx, c.ID, req.GetOnlyOpen())
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the question store is unavailable")
	}
	resp := &brokerv1.ListQuestionsResponse{}
	party := b.agencyParty(c.ID)
	for _, q := range qs {
		resp.Questions = append(resp.Questions, q.Proto(party))
	}
	return resp, nil
}

// AnswerQuestion implements BrokerService. Only the agency the question is for may answer it, once; to
// any other agency the question does not exist. The caseworker named in the metadata is recorded.
func (b *Broker) AnswerQuestion(ctx context.Context, req *brokerv1.AnswerQuestionRequest) (*brokerv1.AnswerQuestionResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	if b.questions == nil || b.qlog == nil {
		return nil, refusal.New(refusal.Unavailable, "questions are not enabled on this broker")
	}
	now := b.now()
	var logged *auditv1.AccessRecord
	// Logged first, like every access: the citizen's log shows the answer before the citizen can read it.
	q, err := b.questions.AnswerLogged(ctx, c.ID, req.GetQuestionId(), req.GetAnswer(), c.Caseworker, now, func(q *questions.Question) error {
		logged = &auditv1.AccessRecord{
			Id: ids.New("acc", now), Time: timestamppb.New(now), CitizenPseudonym: q.Pseudonym, PseudonymKeyId: q.PseudonymKeyID,
			Kind: auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED, Agency: c.ID, Caseworker: c.Caseworker,
			CaseId: q.CaseID, Journey: q.Journey, Step: q.Step, Decision: auditv1.Decision_DECISION_RELEASED,
			Purpose: questions.AnswerPurpose, LegalBasis: questions.RightOfAccess,
			Question: &auditv1.Question{QuestionId: q.ID, AccessId: q.AccessID},
		}
		if err := b.qlog.Append(ctx, logged); err != nil {
			return errAnswerNotLogged{err}
		}
		return nil
	})
	var notLogged errAnswerNotLogged
	if err != nil && (logged != nil || errors.As(err, &notLogged)) {
		b.qcount.Add(ctx, questions.EventAnswered, c.ID, questions.OutcomeFailed)
	} else if err == nil {
		b.qcount.Add(ctx, questions.EventAnswered, c.ID, questions.OutcomeOK)
	}
	if err != nil && logged != nil && !errors.As(err, &notLogged) {
		// Logged but not stored (another answer won, or the store failed): the log line says so.
		b.log.Error("answer logged but not stored", "question", req.GetQuestionId(), "agency", c.ID, "access", logged.GetId(), "err", err)
	}
	switch {
	case errors.As(err, &notLogged):
		return nil, refusal.Wrap(refusal.Unavailable, notLogged.err, "the access log is unavailable; nothing was answered, please try again")
	case errors.Is(err, questions.ErrNotFound):
		return nil, refusal.New(refusal.NotFound, "question %s does not exist", req.GetQuestionId())
	case errors.Is(err, questions.ErrAnswered):
		return nil, refusal.New(refusal.FailedPrecondition, "question %s has been answered already", req.GetQuestionId())
	case errors.Is(err, questions.ErrInvalid):
		return nil, refusal.New(refusal.InvalidArgument, "the answer must not be empty")
	case err != nil:
		return nil, refusal.Wrap(refusal.Unavailable, err, "the question store is unavailable")
	}
	b.log.Info("question answered", "question", q.ID, "agency", c.ID, "caseworker", c.Caseworker)
	return &brokerv1.AnswerQuestionResponse{Question: q.Proto(b.agencyParty(c.ID))}, nil
}

// errAnswerNotLogged is an access-log failure before an answer was stored.
type errAnswerNotLogged struct{ err error }

func (e errAnswerNotLogged) Error() string { return "log the answer: " + e.err.Error() }
func (e errAnswerNotLogged) Unwrap() error { return e.err }
