package citizen

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/questions"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// maxFindScan bounds the records read to find one access by id among the citizen's own.
const maxFindScan = 100_000

// QuestionAccess implements CitizenService. The access must be one of the citizen's own, visible to
// them now, and made by an agency (not a self-access). The question's text is never logged.
func (s *Service) QuestionAccess(ctx context.Context, req *citizenv1.QuestionAccessRequest) (*citizenv1.QuestionAccessResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	rec, err := s.findAccess(ctx, c.Pseudonym.Value, req.GetAccessId(), now)
	if err != nil {
		return nil, err
	}
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF || rec.GetAgency() == "" {
		return nil, refusal.New(refusal.FailedPrecondition, "access %s was your own; there is no agency to ask", rec.GetId())
	}
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ {
		// Auditors answer to the data-protection authority, not through the agencies' question inbox.
		return nil, refusal.New(refusal.FailedPrecondition, "access %s was a read of your access log by the data-protection officer; contact them directly", rec.GetId())
	}
	switch rec.GetKind() {
	case auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED, auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED, auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED:
		return nil, refusal.New(refusal.FailedPrecondition, "access %s was your own; there is no agency to ask", rec.GetId())
	case auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED:
		return nil, refusal.New(refusal.FailedPrecondition, "access %s is an agency's answer to your question; ask about the access itself", rec.GetId())
	}
	if req.GetMessage() == "" {
		return nil, refusal.New(refusal.InvalidArgument, "the question must not be empty")
	}
	q := questions.Question{
		ID: questions.NewID(now), AccessID: rec.GetId(), Agency: rec.GetAgency(), Pseudonym: c.Pseudonym.Value, Message: req.GetMessage(),
		PseudonymKeyID: c.Pseudonym.KeyID, CaseID: rec.GetCaseId(), Journey: rec.GetJourney(), Step: rec.GetStep(),
	}
	// Logged first, like every access: the agency never sees a question the citizen's log does not show.
	asked := &auditv1.AccessRecord{
		Id: ids.New("acc", now), Time: timestamppb.New(now), CitizenPseudonym: c.Pseudonym.Value, PseudonymKeyId: c.Pseudonym.KeyID,
		Kind: auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED, Agency: q.Agency, CaseId: q.CaseID, Journey: q.Journey, Step: q.Step,
		Decision: auditv1.Decision_DECISION_RELEASED, Purpose: questions.AskPurpose, LegalBasis: questions.RightOfAccess,
		PolicyVersion: s.cfg.Policies().Version, Question: &auditv1.Question{QuestionId: q.ID, AccessId: q.AccessID},
	}
	if err := s.cfg.Log.Append(ctx, asked); err != nil {
		s.cfg.QuestionCount.Add(ctx, questions.EventAsked, q.Agency, questions.OutcomeFailed)
		return nil, unavailable(err, "the access log")
	}
	stored, err := s.cfg.Questions.AskWith(ctx, q, now)
	if err != nil {
		s.cfg.QuestionCount.Add(ctx, questions.EventAsked, q.Agency, questions.OutcomeFailed)
		// The log shows a question that was not filed; the citizen is told to try again.
		s.log.Error("question logged but not stored", "question", q.ID, "agency", q.Agency, "access", asked.GetId(), "err", err)
		return nil, unavailable(err, "the question store")
	}
	q = *stored
	s.cfg.QuestionCount.Add(ctx, questions.EventAsked, q.Agency, questions.OutcomeOK)
	s.log.Info("access questioned", "question", q.ID, "access", rec.GetId(), "agency", rec.GetAgency())
	return &citizenv1.QuestionAccessResponse{Question: q.Proto(names{s.cfg.Policies()}.agency(q.Agency))}, nil
}

// ListQuestions implements CitizenService: the citizen's questions, newest first.
func (s *Service) ListQuestions(ctx context.Context, _ *citizenv1.ListQuestionsRequest) (*citizenv1.ListQuestionsResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	qs, err := s.cfg.Questions.ListByCitizen(ctx, c.Pseudonym.Value)
	if err != nil {
		return nil, unavailable(err, "the question store")
	}
	n := names{s.cfg.Policies()}
	resp := &citizenv1.ListQuestionsResponse{}
	for _, q := range qs {
		resp.Questions = append(resp.Questions, q.Proto(n.agency(q.Agency)))
	}
	return resp, nil
}

// findAccess looks id up in the citizen's own index, newest first. Ids begin with their creation time
// and a record's time is its decision time, so the search stops once records are clearly older than
// the id. Not the citizen's, not visible yet, or not there at all: NotFound, the same answer each time.
func (s *Service) findAccess(ctx context.Context, pseudonym, id string, now time.Time) (*auditv1.AccessRecord, error) {
	e, err := s.findEntry(ctx, pseudonym, id, now)
	return e.Record, err
}

// findEntry is findAccess with the record's leaf bytes and leaf index, as the index entry holds them
// under the broker's MAC.
func (s *Service) findEntry(ctx context.Context, pseudonym, id string, now time.Time) (accesslog.Entry, error) {
	notFound := refusal.New(refusal.NotFound, "you have no access %s", id)
	created, ok := ids.Time("acc", id)
	if !ok {
		return accesslog.Entry{}, notFound
	}
	token, scanned := "", 0
	cv := s.covertView(now)
	for {
		entries, next, err := s.cfg.Log.ListEntries(ctx, pseudonym, accesslog.MaxPageSize, token)
		if err != nil {
			return accesslog.Entry{}, unavailable(err, "the access log")
		}
		for _, e := range entries {
			r := e.Record
			scanned++
			if r.GetId() == id {
				if cv.hidden(ctx, r) {
					return accesslog.Entry{}, notFound
				}
				return e, nil
			}
			if r.GetTime().AsTime().Before(created.Add(-clockSlack)) {
				return accesslog.Entry{}, notFound
			}
		}
		if next == "" || scanned >= maxFindScan {
			return accesslog.Entry{}, notFound
		}
		token = next
	}
}
