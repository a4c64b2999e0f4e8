package corrections

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/counter"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/server"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// MetricCorrections counts correction requests made and decided, by authority and outcome.
const MetricCorrections = "aperture_correction_requests"

// Outcomes of MetricCorrections.
const (
	OutcomeRequested = "requested" // a citizen filed a request
	OutcomeAccepted  = "accepted"  // the authority accepted one
	OutcomeRejected  = "rejected"  // the authority rejected one
	OutcomeFailed    = "failed"    // the store or the access log was unavailable
)

// Counter counts MetricCorrections: Add(ctx, authority, outcome). A nil Counter counts nothing.
type Counter = counter.Counter

// NewCounter registers MetricCorrections with mp (nil: no metrics).
func NewCounter(mp metric.MeterProvider) (*Counter, error) {
	return counter.New(mp, "github.com/aperture-gov/aperture/broker/corrections", MetricCorrections, "{request}",
		"Citizens' correction requests by authority and outcome (requested, accepted, rejected, failed). Never a citizen or a value.",
		"authority", "outcome")
}

// AccessLog is where decisions are logged (accesslog.Log).
type AccessLog interface {
	Lister
	Append(ctx context.Context, rec *auditv1.AccessRecord) error
}

// AuthorityService implements aperture.broker.v1.CorrectionService for an authority's staff. The
// caller is the authority its certificate names; an agency or auditor certificate is refused, and an
// authority sees and decides only requests about its own data.
type AuthorityService struct {
	brokerv1.UnimplementedCorrectionServiceServer
	store *Store
	log   AccessLog
	now   func() time.Time
	count *Counter
	slog  *slog.Logger
}

// NewAuthorityService returns the CorrectionService implementation.
func NewAuthorityService(store *Store, log AccessLog, count *Counter, now func() time.Time, logger *slog.Logger) (*AuthorityService, error) {
	if store == nil || log == nil {
		return nil, errors.New("correction service: store and access log are required")
	}
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &AuthorityService{store: store, log: log, now: now, count: count, slog: logger}, nil
}

func authorityOf(ctx context.Context) (string, error) {
	c, ok := server.CallerFrom(ctx)
	if !ok {
		return "", refusal.New(refusal.Unauthenticated, "no authenticated caller").Because(auditv1.RefusalReason_REFUSAL_REASON_UNAUTHENTICATED)
	}
	if c.Role != server.RoleAuthority {
		return "", refusal.New(refusal.PermissionDenied, "%s may not call this method: correction requests are for the authority that holds the data", c.ID)
	}
	return c.ID, nil
}

// ListCorrectionRequests implements CorrectionService.
func (s *AuthorityService) ListCorrectionRequests(ctx context.Context, req *brokerv1.ListCorrectionRequestsRequest) (*brokerv1.ListCorrectionRequestsResponse, error) {
	authority, err := authorityOf(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := s.store.ListByAuthority(ctx, authority, req.GetOnlyOpen())
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "correction requests are unavailable; please try again")
	}
	resp := &brokerv1.ListCorrectionRequestsResponse{}
	for _, r := range rs {
		resp.Requests = append(resp.Requests, r.Proto())
	}
	return resp, nil
}

// DecideCorrectionRequest implements CorrectionService: the decision is stored, logged in the
// citizen's access log, and announced to the agencies whose cases used the field.
func (s *AuthorityService) DecideCorrectionRequest(ctx context.Context, req *brokerv1.DecideCorrectionRequestRequest) (*brokerv1.DecideCorrectionRequestResponse, error) {
	authority, err := authorityOf(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	r, err := s.store.GetForAuthority(ctx, authority, req.GetRequestId())
	if err == nil && r.Status != StatusOpen {
		err = ErrDecided
	}
	if ref := decideRefusal(err, req.GetRequestId()); ref != nil {
		if refusal.As(ref).Kind == refusal.Unavailable {
			s.count.Add(ctx, authority, OutcomeFailed)
		}
		return nil, ref
	}
	outcome, logged := OutcomeRejected, auditv1.CorrectionOutcome_CORRECTION_OUTCOME_REJECTED
	if req.GetAccept() {
		outcome, logged = OutcomeAccepted, auditv1.CorrectionOutcome_CORRECTION_OUTCOME_ACCEPTED
	}
	// The agencies to tell are found before anything changes: the decision and whom it tells are one write.
	uses, err := FindUses(ctx, s.log, r.Pseudonym, authority, r.Dataset, r.Field)
	if err != nil {
		s.count.Add(ctx, authority, OutcomeFailed)
		return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was decided, please try again")
	}
	// Logged first, like every access: the citizen's log shows the decision before anyone sees it.
	rec := &auditv1.AccessRecord{
		Id: ids.New("acc", now), Time: timestamppb.New(now), CitizenPseudonym: r.Pseudonym, PseudonymKeyId: r.PseudonymKeyID,
		Kind: auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED, Agency: authority, Authority: authority,
		Dataset: r.Dataset, Fields: []string{r.Field}, Decision: auditv1.Decision_DECISION_RELEASED,
		Purpose:    "Decision on the citizen's request to correct their data",
		LegalBasis: RightToRectification,
		Correction: &auditv1.Correction{RequestId: r.ID, Outcome: logged},
	}
	if err := s.log.Append(ctx, rec); err != nil {
		s.count.Add(ctx, authority, OutcomeFailed)
		return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was decided, please try again")
	}
	r, err = s.store.Decide(ctx, authority, req.GetRequestId(), req.GetAccept(), req.GetReason(), req.GetDecidedBy(), uses, now)
	if err != nil {
		// Logged but not stored (a concurrent decision won, or the store failed): the log line says so.
		s.slog.Error("correction decision logged but not stored", "request", req.GetRequestId(), "authority", authority, "access", rec.GetId(), "err", err)
		s.count.Add(ctx, authority, OutcomeFailed)
		return nil, decideRefusal(err, req.GetRequestId())
	}
	s.count.Add(ctx, authority, outcome)
	return &brokerv1.DecideCorrectionRequestResponse{Request: r.Proto()}, nil
}

// RightToRectification is the law behind a correction request.
const RightToRectification = "GDPR Art. 16"

// decideRefusal is the caller's answer to a store error of a decision (nil for nil).
func decideRefusal(err error, id string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return refusal.New(refusal.NotFound, "there is no correction request %s about your data", id)
	case errors.Is(err, ErrDecided):
		return refusal.New(refusal.FailedPrecondition, "correction request %s was decided already", id)
	case errors.Is(err, ErrInvalid):
		return refusal.New(refusal.InvalidArgument, "a decision needs a reason and the staff member deciding")
	}
	return refusal.Wrap(refusal.Unavailable, err, "correction requests are unavailable; please try again")
}
