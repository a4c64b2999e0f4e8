package citizen

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

var errNoConsent = consent.ErrNotFound

const day = 24 * time.Hour

// ListJourneys implements CitizenService.
func (s *Service) ListJourneys(ctx context.Context, _ *citizenv1.ListJourneysRequest) (*citizenv1.ListJourneysResponse, error) {
	if _, err := citizenOf(ctx); err != nil {
		return nil, err
	}
	resp := &citizenv1.ListJourneysResponse{}
	for _, j := range s.cfg.Policies().Journeys() {
		resp.Journeys = append(resp.Journeys, &citizenv1.JourneySummary{
			Journey:     &citizenv1.JourneyRef{Id: j.ID, Title: text(j.Title)},
			Description: text(j.Description),
			Steps:       int32(len(j.Steps)),
		})
	}
	return resp, nil
}

// GetDataPath implements CitizenService. The policy is public: the data path, covert steps included,
// is the same for every citizen; only whether the caller switched its optional steps off (and by which
// switch: all journeys, the journey, the step) is theirs.
func (s *Service) GetDataPath(ctx context.Context, req *citizenv1.GetDataPathRequest) (*citizenv1.GetDataPathResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	b := s.cfg.Policies()
	j, ok := b.Journey(req.GetJourney())
	if !ok {
		return nil, refusal.New(refusal.NotFound, "there is no journey %q", req.GetJourney())
	}
	n := names{b}
	resp := &citizenv1.GetDataPathResponse{
		Journey:       &citizenv1.JourneyRef{Id: j.ID, Title: text(j.Title)},
		Description:   text(j.Description),
		PolicyVersion: b.Version,
	}
	for i, st := range j.Steps {
		ps := n.dataPathStep(st, i)
		if o := j.OptionalAt(st); o != nil {
			by, err := s.switchedOff(ctx, c, j.ID, st.ID)
			if err != nil {
				return nil, err
			}
			ps.Optional, ps.OptionalWhy = true, text(o.Why)
			ps.SwitchedOff, ps.SwitchedOffBy = by != citizenv1.SwitchScope_SWITCH_SCOPE_UNSPECIFIED, by
		}
		resp.Steps = append(resp.Steps, ps)
	}
	return resp, nil
}

func (n names) dataPathStep(st *policy.Step, index int) *citizenv1.DataPathStep {
	out := &citizenv1.DataPathStep{
		Step:       &citizenv1.StepRef{Id: st.ID, Title: text(st.Title), Number: int32(index + 1)},
		Agency:     n.agency(st.Agency),
		Role:       st.Role,
		Purpose:    text(st.Purpose),
		LegalBasis: st.LegalBasis,
	}
	for _, r := range st.Rules {
		rel := &citizenv1.DataPathRelease{Authority: n.authority(r.Authority), Dataset: r.Dataset, Fields: slices.Clone(r.Fields)}
		for _, d := range r.Derived {
			rel.Facts = append(rel.Facts, &citizenv1.Fact{Name: d.Name, Description: text(d.Description)})
		}
		out.Releases = append(out.Releases, rel)
	}
	if st.Consent != nil {
		out.ConsentRequired = true
		out.ConsentDefaultDays, out.ConsentMaxDays = int32(st.Consent.DefaultDays), int32(st.Consent.MaxDays)
	}
	if st.Covert != nil {
		out.CovertReason, out.CovertMaxDays = text(st.Covert.Reason), int32(st.Covert.MaxDays)
		out.CovertReveal = map[policy.Reveal]citizenv1.CovertReveal{
			policy.RevealCaseClosed: citizenv1.CovertReveal_COVERT_REVEAL_CASE_CLOSED,
			policy.RevealNextStep:   citizenv1.CovertReveal_COVERT_REVEAL_NEXT_STEP,
			policy.RevealMaxDays:    citizenv1.CovertReveal_COVERT_REVEAL_MAX_DAYS,
		}[st.Covert.Reveal]
	}
	return out
}

// consentView is cn as the citizen sees it.
func (n names) consentView(cn *consent.Consent, now time.Time) *citizenv1.Consent {
	jref, j := n.journey(cn.Journey)
	sref, st := stepRef(j, cn.Step)
	out := &citizenv1.Consent{
		Journey:   jref,
		Step:      sref,
		GrantedAt: ts(cn.GrantedAt),
		ExpiresAt: ts(cn.ExpiresAt),
		Valid:     cn.ValidAt(now, consentMaxDays(st)),
	}
	if st != nil {
		out.Agency = n.agency(st.Agency)
	}
	if cn.RevokedAt != nil {
		out.RevokedAt = ts(*cn.RevokedAt)
	}
	return out
}

// consentMaxDays is the step's current consent maximum, checked again whenever a consent's validity
// is shown: 0 (nothing is valid) when the step is gone from the policy or no longer takes consent.
func consentMaxDays(st *policy.Step) int {
	if st == nil || st.Consent == nil {
		return 0
	}
	return st.Consent.MaxDays
}

// ListConsents implements CitizenService: given, expired and revoked, newest first.
// On someone's behalf (on_behalf_of), those of the journeys the power of attorney reaches, logged in
// their access log first.
func (s *Service) ListConsents(ctx context.Context, req *citizenv1.ListConsentsRequest) (*citizenv1.ListConsentsResponse, error) {
	c, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.SeeConsents, "")
	if err != nil {
		return nil, err
	}
	all, err := s.cfg.Consents.List(ctx, c.Pseudonym.Value)
	if err != nil {
		return nil, unavailable(err, "consent state")
	}
	slices.SortFunc(all, func(a, b *consent.Consent) int { return b.GrantedAt.Compare(a.GrantedAt) })
	if err := s.logDelegate(ctx, c, delegation.SeeConsents, "", ""); err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	n := names{s.cfg.Policies()}
	resp := &citizenv1.ListConsentsResponse{}
	for _, cn := range all {
		if !c.sees(cn.Journey) {
			continue
		}
		resp.Consents = append(resp.Consents, n.consentView(cn, now))
	}
	return resp, nil
}

// consentStep finds a step that takes consent and the validity asked for (0: the policy's default).
// A step without consent is FailedPrecondition, more days than the maximum InvalidArgument.
func consentStep(b *policy.Bundle, journey, step string, days int32) (*policy.Step, int, time.Duration, error) {
	_, st, i, err := policyStep(b, journey, step)
	if err != nil {
		return nil, 0, 0, err
	}
	if st.Consent == nil {
		return nil, 0, 0, refusal.New(refusal.FailedPrecondition, "step %q of journey %q does not need your consent", step, journey)
	}
	d := int(days)
	if d == 0 {
		d = st.Consent.DefaultDays
	}
	if d > st.Consent.MaxDays {
		return nil, 0, 0, refusal.New(refusal.InvalidArgument, "consent for step %q of journey %q lasts at most %d days, not %d", step, journey, st.Consent.MaxDays, d)
	}
	if d <= 0 {
		return nil, 0, 0, refusal.New(refusal.InvalidArgument, "consent must last at least one day")
	}
	return st, i, time.Duration(d) * day, nil
}

// PreviewConsent implements CitizenService. It changes nothing. On someone's behalf (on_behalf_of),
// the power of attorney must cover giving consent for the journey, the preview shows their current
// consent, and it is logged in their access log before it is answered.
func (s *Service) PreviewConsent(ctx context.Context, req *citizenv1.PreviewConsentRequest) (*citizenv1.PreviewConsentResponse, error) {
	c, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.GrantConsent, req.GetJourney())
	if err != nil {
		return nil, err
	}
	b := s.cfg.Policies()
	st, i, validity, err := consentStep(b, req.GetJourney(), req.GetStep(), req.GetDays())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	n := names{b}
	resp := &citizenv1.PreviewConsentResponse{Step: n.dataPathStep(st, i), ExpiresAt: ts(now.Add(validity))}
	cur, err := s.cfg.Consents.Get(ctx, c.Pseudonym.Value, req.GetJourney(), req.GetStep())
	switch {
	case err == nil:
		resp.Current = n.consentView(cur, now)
	case !errors.Is(err, errNoConsent):
		return nil, unavailable(err, "consent state")
	}
	if err := s.logPreview(ctx, b, c, req.GetJourney(), st, now); err != nil {
		return nil, err
	}
	return resp, nil
}

// logPreview writes a delegate's preview of a consent to the represented citizen's log, naming the
// journey and step, before it is answered (for the caller's own preview it does nothing). The record
// says what was done (DELEGATE_ACTION_PREVIEW_CONSENT), not the scope that allowed it, so that the
// citizen does not read a preview as a consent given. It is counted under the scope it uses
// (grant_consent), as actFor counts a refused one.
func (s *Service) logPreview(ctx context.Context, b *policy.Bundle, c acting, journey string, st *policy.Step, now time.Time) error {
	if c.d == nil {
		return nil
	}
	rec := consentRecord(b, c.Citizen, journey, st, auditv1.AccessKind_ACCESS_KIND_DELEGATE, now, nil)
	// No agency saw anything: the record is the delegate's look, like logDelegate's.
	rec.Agency, rec.Purpose, rec.LegalBasis = "", "", ""
	rec.Delegate = c.delegate(auditv1.DelegateAction_DELEGATE_ACTION_PREVIEW_CONSENT)
	return s.appendDelegated(ctx, c, delegation.GrantConsent, rec)
}

// GrantConsent implements CitizenService. On someone's behalf (on_behalf_of), the consent is logged in
// their access log before it is stored.
func (s *Service) GrantConsent(ctx context.Context, req *citizenv1.GrantConsentRequest) (*citizenv1.GrantConsentResponse, error) {
	c, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.GrantConsent, req.GetJourney())
	if err != nil {
		return nil, err
	}
	b := s.cfg.Policies()
	st, _, validity, err := consentStep(b, req.GetJourney(), req.GetStep(), req.GetDays())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	// Logged first, like every access: no consent counts that the citizen's log does not show. Given on
	// someone's behalf, the one record also says so (delegate): the citizen reads who gave it.
	rec := consentRecord(b, c.Citizen, req.GetJourney(), st, auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED, now,
		&auditv1.Consent{ExpiresAt: timestamppb.New(now.Add(validity))})
	rec.Delegate = c.delegate(auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT)
	err = s.cfg.Log.Append(ctx, rec)
	s.countDelegate(ctx, c, delegation.GrantConsent, err)
	if err != nil {
		s.cfg.ConsentCount.Add(ctx, consent.ChangeGranted, consent.OutcomeFailed)
		return nil, unavailable(err, "the access log")
	}
	cn, err := s.cfg.Consents.Grant(ctx, c.Pseudonym.Value, req.GetJourney(), req.GetStep(), now, validity)
	if err != nil {
		s.cfg.ConsentCount.Add(ctx, consent.ChangeGranted, consent.OutcomeFailed)
		// The log shows a consent that was not stored; no release relies on the log, so nothing is
		// released under it, and the citizen is told to try again.
		s.log.Error("consent logged but not stored", "journey", req.GetJourney(), "step", req.GetStep(), "access", rec.GetId(), "err", err)
		return nil, unavailable(err, "consent state")
	}
	s.cfg.ConsentCount.Add(ctx, consent.ChangeGranted, consent.OutcomeOK)
	s.log.Info("consent granted", "pseudonym", c.Pseudonym.Value, "journey", cn.Journey, "step", cn.Step, "expires", cn.ExpiresAt)
	return &citizenv1.GrantConsentResponse{Consent: names{b}.consentView(cn, now)}, nil
}

// RevokeConsent implements CitizenService. The release path reads consent from the store on every
// release (no cache), so the next release that needs it is refused.
func (s *Service) RevokeConsent(ctx context.Context, req *citizenv1.RevokeConsentRequest) (*citizenv1.RevokeConsentResponse, error) {
	b := s.cfg.Policies()
	_, st, _, err := policyStep(b, req.GetJourney(), req.GetStep())
	if err != nil {
		return nil, err
	}
	// Giving consent is a scope a power of attorney may carry; withdrawing only a parent may do for
	// someone else (the request's pattern admits only a child's id).
	a, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.GrantConsent, req.GetJourney())
	if err != nil {
		return nil, err
	}
	if a.d != nil && a.basis != auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY {
		return nil, refusal.New(refusal.PermissionDenied, "only the citizen can withdraw their consent")
	}
	c := a.Citizen
	now := s.cfg.Now()
	notGiven := refusal.New(refusal.NotFound, "you have not given consent for step %q of journey %q", req.GetStep(), req.GetJourney())
	cur, err := s.cfg.Consents.Get(ctx, c.Pseudonym.Value, req.GetJourney(), req.GetStep())
	switch {
	case errors.Is(err, errNoConsent):
		return nil, notGiven
	case err != nil:
		return nil, unavailable(err, "consent state")
	case cur.RevokedAt != nil:
		// Withdrawn already: nothing changes, nothing more to log.
		return &citizenv1.RevokeConsentResponse{Consent: names{b}.consentView(cur, now)}, nil
	}
	// Logged first: the withdrawal the citizen's log shows is the one that took effect.
	rec := consentRecord(b, c, req.GetJourney(), st, auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED, now,
		&auditv1.Consent{GrantedAt: ts(cur.GrantedAt), ExpiresAt: ts(cur.ExpiresAt)})
	rec.Delegate = a.delegate(auditv1.DelegateAction_DELEGATE_ACTION_REVOKE_CONSENT)
	err = s.cfg.Log.Append(ctx, rec)
	s.countDelegate(ctx, a, delegation.GrantConsent, err)
	if err != nil {
		s.cfg.ConsentCount.Add(ctx, consent.ChangeRevoked, consent.OutcomeFailed)
		return nil, unavailable(err, "the access log")
	}
	cn, err := s.cfg.Consents.Revoke(ctx, c.Pseudonym.Value, req.GetJourney(), req.GetStep(), now)
	if err != nil {
		s.cfg.ConsentCount.Add(ctx, consent.ChangeRevoked, consent.OutcomeFailed)
	}
	switch {
	case errors.Is(err, errNoConsent):
		s.log.Error("consent withdrawal logged but the consent is gone", "journey", req.GetJourney(), "step", req.GetStep(), "access", rec.GetId())
		return nil, notGiven
	case err != nil:
		s.log.Error("consent withdrawal logged but not stored", "journey", req.GetJourney(), "step", req.GetStep(), "access", rec.GetId(), "err", err)
		return nil, unavailable(err, "consent state")
	}
	s.cfg.ConsentCount.Add(ctx, consent.ChangeRevoked, consent.OutcomeOK)
	s.log.Info("consent revoked", "pseudonym", c.Pseudonym.Value, "journey", cn.Journey, "step", cn.Step)
	return &citizenv1.RevokeConsentResponse{Consent: names{b}.consentView(cn, now)}, nil
}

// consentRecord is the access record of a consent given or withdrawn at step st of journey: the step's
// agency (the one the consent lets receive data), purpose and legal basis. No data.
func consentRecord(b *policy.Bundle, c Citizen, journey string, st *policy.Step, kind auditv1.AccessKind, now time.Time, cn *auditv1.Consent) *auditv1.AccessRecord {
	return &auditv1.AccessRecord{
		Id: ids.New("acc", now), Time: timestamppb.New(now), CitizenPseudonym: c.Pseudonym.Value, PseudonymKeyId: c.Pseudonym.KeyID,
		Kind: kind, Agency: st.Agency, Journey: journey, Step: st.ID, Purpose: st.Purpose.EN, LegalBasis: st.LegalBasis,
		Decision: auditv1.Decision_DECISION_RELEASED, PolicyVersion: b.Version, Consent: cn,
	}
}
