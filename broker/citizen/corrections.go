package citizen

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/corrections"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/labels"
)

// CorrectionStore keeps correction requests (corrections.Store).
type CorrectionStore interface {
	Create(ctx context.Context, r *corrections.Request, uses []corrections.Use, now time.Time) (*corrections.Request, error)
	ListByCitizen(ctx context.Context, pseudonym string) ([]*corrections.Request, error)
}

// Corrections implements aperture.citizen.v1.CitizenCorrectionService: a citizen asks the authority
// that holds a field to correct it, and follows the request. It shares the Service's configuration
// (policies, access log, authorities) and acts, like it, for the citizen of the call only.
type Corrections struct {
	citizenv1.UnimplementedCitizenCorrectionServiceServer
	s     *Service
	store CorrectionStore
	count *corrections.Counter
}

// NewCorrections returns the citizen's correction service over s's configuration.
func NewCorrections(s *Service, store CorrectionStore, count *corrections.Counter) (*Corrections, error) {
	if s == nil || store == nil {
		return nil, errors.New("citizen corrections: service and store are required")
	}
	return &Corrections{s: s, store: store, count: count}, nil
}

// RequestCorrection implements CitizenCorrectionService. The request is logged in the citizen's access
// log, then stored (sealed). The agencies whose cases
// used the field are told (case and field, never the citizen or the proposed value).
func (c *Corrections) RequestCorrection(ctx context.Context, req *citizenv1.RequestCorrectionRequest) (*citizenv1.RequestCorrectionResponse, error) {
	cz, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	b := c.s.cfg.Policies()
	a, ok := b.Registry.Authority(req.GetAuthority())
	if !ok || !slices.Contains(a.Datasets, req.GetDataset()) {
		return nil, refusal.New(refusal.NotFound, "there is no dataset %q of authority %q", req.GetDataset(), req.GetAuthority())
	}
	md, err := c.s.cfg.Authorities.Dataset(a.ID, req.GetDataset())
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the schema of %s.%s is unavailable", a.ID, req.GetDataset())
	}
	if _, err := labels.Fields(md, req.GetField()); err != nil || req.GetField() == "" {
		return nil, refusal.New(refusal.InvalidArgument, "%s.%s has no field %q", a.ID, req.GetDataset(), req.GetField())
	}
	now := c.s.cfg.Now()
	id := corrections.NewID(now)
	// The agencies to tell are found before anything changes: the request and whom it tells are one write.
	uses, err := corrections.FindUses(ctx, c.s.cfg.Log, cz.Pseudonym.Value, a.ID, req.GetDataset(), req.GetField())
	if err != nil {
		c.count.Add(ctx, a.ID, corrections.OutcomeFailed)
		return nil, unavailable(err, "your access log")
	}
	// Logged first, like every access: the authority never sees a request the citizen's log does not show.
	rec := &auditv1.AccessRecord{
		Id: ids.New("acc", now), Time: timestamppb.New(now), CitizenPseudonym: cz.Pseudonym.Value, PseudonymKeyId: cz.Pseudonym.KeyID,
		Kind: auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED, Authority: a.ID, Dataset: req.GetDataset(),
		Fields: []string{req.GetField()}, Decision: auditv1.Decision_DECISION_RELEASED,
		Purpose: "The citizen's request to correct their data", LegalBasis: corrections.RightToRectification,
		PolicyVersion: b.Version, Correction: &auditv1.Correction{RequestId: id},
	}
	if err := c.s.cfg.Log.Append(ctx, rec); err != nil {
		c.count.Add(ctx, a.ID, corrections.OutcomeFailed)
		return nil, unavailable(err, "the access log")
	}
	stored, err := c.store.Create(ctx, &corrections.Request{
		ID: id, Authority: a.ID, Pseudonym: cz.Pseudonym.Value, PseudonymKeyID: cz.Pseudonym.KeyID, CitizenID: cz.id,
		Dataset: req.GetDataset(), Field: req.GetField(), Reason: req.GetReason(), Proposed: req.GetProposedValue(),
	}, uses, now)
	if err != nil {
		// The log shows a request that was not filed; the citizen is told to try again.
		c.count.Add(ctx, a.ID, corrections.OutcomeFailed)
		c.s.log.Error("correction request logged but not stored", "request", id, "authority", a.ID, "err", err)
		return nil, unavailable(err, "filing a correction request")
	}
	c.count.Add(ctx, a.ID, corrections.OutcomeRequested)
	return &citizenv1.RequestCorrectionResponse{Correction: c.view(b, stored, uses)}, nil
}

// ListCorrections implements CitizenCorrectionService.
func (c *Corrections) ListCorrections(ctx context.Context, _ *citizenv1.ListCorrectionsRequest) (*citizenv1.ListCorrectionsResponse, error) {
	cz, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := c.store.ListByCitizen(ctx, cz.Pseudonym.Value)
	if err != nil {
		return nil, unavailable(err, "your correction requests")
	}
	b := c.s.cfg.Policies()
	resp := &citizenv1.ListCorrectionsResponse{}
	for _, r := range rs {
		var uses []corrections.Use
		if !r.Unverified {
			if uses, err = corrections.FindUses(ctx, c.s.cfg.Log, cz.Pseudonym.Value, r.Authority, r.Dataset, r.Field); err != nil {
				return nil, unavailable(err, "your access log")
			}
		}
		resp.Corrections = append(resp.Corrections, c.view(b, r, uses))
	}
	return resp, nil
}

func (c *Corrections) view(b *policy.Bundle, r *corrections.Request, uses []corrections.Use) *citizenv1.Correction {
	n := names{b}
	out := &citizenv1.Correction{Id: r.ID, Authority: n.authority(r.Authority)}
	if r.Unverified {
		out.State = citizenv1.CorrectionState_CORRECTION_STATE_UNVERIFIED
		return out
	}
	out.DatasetId, out.FieldPath = r.Dataset, r.Field
	out.Dataset, out.Field = &citizenv1.Text{En: r.Dataset}, &citizenv1.Text{En: r.Field}
	if md, err := c.s.cfg.Authorities.Dataset(r.Authority, r.Dataset); err == nil {
		if l := labelText(labels.Message(md)); l != nil {
			out.Dataset = l
		}
		if fds, err := labels.Fields(md, r.Field); err == nil && len(fds) > 0 {
			if l := labelText(labels.Field(fds[len(fds)-1])); l != nil {
				out.Field = l
			}
		}
	}
	out.Reason, out.ProposedValue, out.DecisionReason = r.Reason, r.Proposed, r.DecisionReason
	out.RequestedAt = timestamppb.New(r.RequestedAt)
	if r.DecidedAt != nil {
		out.DecidedAt = timestamppb.New(*r.DecidedAt)
	}
	switch r.Status {
	case corrections.StatusOpen:
		out.State = citizenv1.CorrectionState_CORRECTION_STATE_OPEN
	case corrections.StatusAccepted:
		out.State = citizenv1.CorrectionState_CORRECTION_STATE_ACCEPTED
	case corrections.StatusRejected:
		out.State = citizenv1.CorrectionState_CORRECTION_STATE_REJECTED
	}
	for _, u := range uses {
		j, _ := n.journey(u.Journey)
		out.Cases = append(out.Cases, &citizenv1.CorrectionCase{
			CaseId: u.CaseID, Journey: j, Agency: n.agency(u.Agency), ReleasedAt: timestamppb.New(u.ReleasedAt),
		})
	}
	return out
}

// correctionAccess words a correction request or decision in the citizen's log: the deciding authority
// by its name (not as an agency), and the purpose in both languages.
func (n names) correctionAccess(rec *auditv1.AccessRecord, a *citizenv1.Access) {
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED {
		a.Agency = n.authority(rec.GetAgency())
		a.Purpose = &citizenv1.Text{En: "To answer your request to correct your data", Da: "For at svare på din anmodning om at rette dine data"}
		return
	}
	a.Agency = nil
	a.Purpose = &citizenv1.Text{En: "Your request to correct your data", Da: "Din anmodning om at rette dine data"}
}
