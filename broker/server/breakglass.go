package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/breakglass"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/release"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// BreakGlassRelease implements BrokerService.
func (b *Broker) BreakGlassRelease(ctx context.Context, req *brokerv1.BreakGlassReleaseRequest) (*brokerv1.BreakGlassReleaseResponse, error) {
	c, err := b.agency(ctx)
	if err != nil {
		return nil, err
	}
	res, err := b.release.BreakGlass(ctx, release.Caller{Agency: c.ID, Caseworker: c.Caseworker}, release.BreakGlassRequest{
		CaseID: req.GetCaseId(), Authority: req.GetAuthority(), Dataset: req.GetDataset(),
		Fields: req.GetFields(), Derived: req.GetDerived(),
		ReasonCode: req.GetReasonCode(), Justification: req.GetJustification(),
	})
	if err != nil {
		return nil, b.failCase(ctx, "BreakGlassRelease", req.GetCaseId(), err)
	}
	return &brokerv1.BreakGlassReleaseResponse{
		AccessId: res.AccessID, Record: res.Record, Derived: res.Derived, Fields: res.Fields,
		Purpose: res.Purpose, LegalBasis: res.LegalBasis, Remaining: int32(res.Remaining),
	}, nil
}

// Reviews is the break-glass review queue (breakglass.Store).
type Reviews interface {
	List(ctx context.Context, includeClosed bool) ([]*breakglass.Review, error)
	Close(ctx context.Context, accessID, auditor string, outcome auditv1.BreakGlassOutcome, note string, now time.Time, log func(*breakglass.Review) error) (*breakglass.Review, error)
}

// WithBreakGlass serves the break-glass review queue from r; now stamps closures, onClose (may be nil)
// is told each closure's outcome (for metrics). Without it both review calls answer UNAVAILABLE.
func (a *Audit) WithBreakGlass(r Reviews, now func() time.Time, onClose func(ctx context.Context, outcome auditv1.BreakGlassOutcome)) *Audit {
	a.reviews, a.now, a.onClose = r, now, onClose
	return a
}

// ListBreakGlassReviews implements AuditService.
func (a *Audit) ListBreakGlassReviews(ctx context.Context, req *auditv1.ListBreakGlassReviewsRequest) (*auditv1.ListBreakGlassReviewsResponse, error) {
	if _, err := requireRole(ctx, RoleAuditor); err != nil {
		return nil, err
	}
	if a.reviews == nil {
		return nil, refusal.New(refusal.Unavailable, "the break-glass review queue is not served by this broker")
	}
	rs, err := a.reviews.List(ctx, req.GetIncludeClosed())
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the break-glass review queue is unavailable")
	}
	out := &auditv1.ListBreakGlassReviewsResponse{}
	for _, r := range rs {
		out.Reviews = append(out.Reviews, reviewProto(r))
	}
	return out, nil
}

// CloseBreakGlassReview implements AuditService: the closure is written to the citizen's access log
// (ACCESS_KIND_BREAK_GLASS_REVIEW) before it is stored, so a closed review is always in the log.
func (a *Audit) CloseBreakGlassReview(ctx context.Context, req *auditv1.CloseBreakGlassReviewRequest) (*auditv1.CloseBreakGlassReviewResponse, error) {
	c, err := requireRole(ctx, RoleAuditor)
	if err != nil {
		return nil, err
	}
	if a.reviews == nil {
		return nil, refusal.New(refusal.Unavailable, "the break-glass review queue is not served by this broker")
	}
	now := a.now()
	r, err := a.reviews.Close(ctx, req.GetAccessId(), c.ID, req.GetOutcome(), req.GetNote(), now, func(r *breakglass.Review) error {
		rec := &auditv1.AccessRecord{
			Id: ids.New("acc", now), Time: timestamppb.New(now),
			CitizenPseudonym: r.Pseudonym, PseudonymKeyId: r.PseudonymKeyID,
			Kind: auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW, Agency: c.ID,
			CaseId: r.CaseID, Journey: r.Journey, Decision: auditv1.Decision_DECISION_RELEASED,
			BreakGlass: &auditv1.BreakGlass{ReasonCode: r.ReasonCode, ReviewedAccessId: r.AccessID, Outcome: r.Outcome, ReviewNote: r.Note},
		}
		if err := a.log.Append(ctx, rec); err != nil {
			return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; the review was not closed")
		}
		r.ClosureAccessID = rec.Id
		return nil
	})
	switch {
	case errors.Is(err, breakglass.ErrNotFound):
		return nil, refusal.New(refusal.NotFound, "no break-glass access %s awaits review", req.GetAccessId())
	case errors.Is(err, breakglass.ErrUnverified):
		return nil, refusal.Wrap(refusal.FailedPrecondition, err, "the review record of %s does not authenticate; it cannot be closed (tell the operator)", req.GetAccessId())
	case errors.Is(err, breakglass.ErrClosed):
		return nil, refusal.New(refusal.FailedPrecondition, "the review of %s is already closed", req.GetAccessId())
	case err != nil:
		var ref *refusal.Error
		if errors.As(err, &ref) {
			return nil, ref
		}
		return nil, refusal.Wrap(refusal.Unavailable, err, "the break-glass review queue is unavailable")
	}
	a.logger.Info("break-glass review closed", "access_id", r.AccessID, "auditor", c.ID, "outcome", r.Outcome.String())
	if a.onClose != nil {
		a.onClose(ctx, r.Outcome)
	}
	return &auditv1.CloseBreakGlassReviewResponse{Review: reviewProto(r)}, nil
}

func reviewProto(r *breakglass.Review) *auditv1.BreakGlassReview {
	if r.Unverified {
		return &auditv1.BreakGlassReview{AccessId: r.AccessID, Justification: "(the stored review does not authenticate)"}
	}
	p := &auditv1.BreakGlassReview{
		AccessId: r.AccessID, Time: timestamppb.New(r.Time), Agency: r.Agency, Caseworker: r.Caseworker,
		CaseId: r.CaseID, Journey: r.Journey, Authority: r.Authority, Dataset: r.Dataset,
		Fields: r.Fields, Derived: r.Derived, ReasonCode: r.ReasonCode, Justification: r.Justification,
		Outcome: r.Outcome, Auditor: r.Auditor, Note: r.Note, ClosureAccessId: r.ClosureAccessID,
	}
	if r.ClosedAt != nil {
		p.ClosedAt = timestamppb.New(*r.ClosedAt)
	}
	return p
}
