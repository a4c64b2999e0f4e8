package release

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/aperture-gov/aperture/broker/authorities"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
)

// CheckRegistered asks the registry's citizen register (policy.Registry.CitizenRegister) whether the
// citizen of c, a case caller is about to open, exists, before the case is stored. The question
// fetches no field (an empty mask): only whether the register holds a record. It is logged in the
// citizen's access log like a case read (no data released), hidden like the case's first step when that
// step is covert, and returns nil only once that record is durable.
//
// A citizen the register does not know is refused with NotFound (RECORD_NOT_FOUND, naming the
// authority and dataset); a register or log that cannot answer with Unavailable: no case is opened
// either way. A registry without a citizen register checks nothing.
func (s *Service) CheckRegistered(ctx context.Context, caller Caller, c *cases.Case) (err error) {
	b := s.cfg.Policies()
	reg := b.Registry.CitizenRegister
	if reg == nil {
		return nil
	}
	start := time.Now()
	defer func() { s.m.registerChecked(ctx, start, err) }()
	if w, ok := s.cfg.Log.(writable); ok {
		if err := w.Writable(); err != nil {
			return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; no case was opened").
				Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
		}
	}
	now := s.cfg.Now()
	rec := s.caseRead(b, c, caller, now)
	rec.Authority, rec.Dataset = reg.Authority, reg.Dataset
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	_, ferr := s.cfg.Authorities.Fetch(fctx, reg.Authority, &authorityv1.FetchRequest{
		CitizenId: c.CitizenID,
		Dataset:   reg.Dataset,
		FieldMask: &fieldmaskpb.FieldMask{},
		Context: &authorityv1.AccessContext{
			AccessId: rec.Id, CaseId: c.ID, Journey: c.Journey, Step: rec.Step,
			Purpose: rec.Purpose, LegalBasis: rec.LegalBasis, Agency: caller.Agency, Caseworker: caller.Caseworker,
		},
	})
	cancel()
	var ref *refusal.Error
	switch {
	case errors.Is(ferr, authorities.ErrNotFound):
		ref = refusal.New(refusal.NotFound, "the citizen register (%s.%s) holds no such citizen; no case was opened", reg.Authority, reg.Dataset).
			Because(auditv1.RefusalReason_REFUSAL_REASON_RECORD_NOT_FOUND, "authority", reg.Authority, "dataset", reg.Authority+"."+reg.Dataset)
	case ferr != nil:
		// Nothing was learnt about the citizen: no record, and no case.
		return refusal.Wrap(refusal.Unavailable, ferr, "the citizen register %q did not answer; no case was opened", reg.Authority).
			Because(auditv1.RefusalReason_REFUSAL_REASON_AUTHORITY_UNAVAILABLE, "authority", reg.Authority)
	}
	if ref != nil {
		rec.Decision, rec.Reason, rec.Code = auditv1.Decision_DECISION_REFUSED, ref.Reason, ref.Kind.String()
		rec.RefusalReason, rec.RefusalSubject = ref.Why, ref.Subject()
		rec.CaseId = "" // no case was opened
	}
	if err := s.cfg.Log.Append(ctx, rec); err != nil {
		return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; no case was opened").
			Because(auditv1.RefusalReason_REFUSAL_REASON_LOG_UNAVAILABLE)
	}
	if ref != nil {
		return ref
	}
	return nil
}
