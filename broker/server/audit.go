package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// AccessLister reads one citizen's access records, newest first.
type AccessLister interface {
	List(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]*auditv1.AccessRecord, string, error)
}

// Audit implements aperture.audit.v1.AuditService for auditors.
type Audit struct {
	auditv1.UnimplementedAuditServiceServer
	log        AccessLister
	pseudonyms keys.Pseudonymizer
	logger     *slog.Logger
}

// NewAudit returns the AuditService implementation.
func NewAudit(log AccessLister, pseudonyms keys.Pseudonymizer, logger *slog.Logger) *Audit {
	return &Audit{log: log, pseudonyms: pseudonyms, logger: logger}
}

// ListAccessRecords implements AuditService.
func (a *Audit) ListAccessRecords(ctx context.Context, req *auditv1.ListAccessRecordsRequest) (*auditv1.ListAccessRecordsResponse, error) {
	const method = "/aperture.audit.v1.AuditService/ListAccessRecords"
	c, err := requireRole(ctx, RoleAuditor)
	if err != nil {
		return nil, toStatus(ctx, a.logger, method, err)
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	pn := a.pseudonyms.Pseudonym(req.GetCitizenId())
	recs, next, err := a.log.List(ctx, pn.Value, size, req.GetPageToken())
	switch {
	case errors.Is(err, accesslog.ErrInvalidPageToken):
		return nil, toStatus(ctx, a.logger, method, refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned"))
	case err != nil:
		return nil, toStatus(ctx, a.logger, method, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable"))
	}
	a.logger.Info("auditor listed access records", "auditor", c.ID, "pseudonym", pn.Value, "records", len(recs))
	return &auditv1.ListAccessRecordsResponse{Records: recs, NextPageToken: next}, nil
}
