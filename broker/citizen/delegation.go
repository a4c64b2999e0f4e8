package citizen

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Delegations keeps powers of attorney (delegation.Store).
type Delegations interface {
	Grant(ctx context.Context, giver, holder string, scopes []delegation.Scope, journeys []string, expires, now time.Time) (*delegation.Delegation, error)
	Revoke(ctx context.Context, giver, id string, now time.Time) (*delegation.Delegation, error)
	Resolve(ctx context.Context, holder, id string) (*delegation.Delegation, error)
	ListGiven(ctx context.Context, giver string) ([]*delegation.Delegation, error)
	ListHeld(ctx context.Context, holder string) ([]*delegation.Delegation, error)
}

// acting is whom a call acts for: the caller, or the citizen whose power of attorney the caller
// holds (then Citizen carries only that citizen's pseudonym: nothing on this path may fetch from an
// authority, which needs the citizen id).
type acting struct {
	Citizen
	d *delegation.Delegation // nil: the caller's own data
	// basis is why the caller may act: a power of attorney, or parental custody (then d is made up for
	// the call from the custody register).
	basis auditv1.DelegateBasis
}

// sees reports whether the call may see what is about journey: always for the caller's own data; for
// a delegation, only journeys it reaches (nothing that is not about a journey, when it names some).
func (a acting) sees(journey string) bool {
	if a.d == nil || len(a.d.Journeys) == 0 {
		return true
	}
	return journey != "" && a.d.Covers(journey)
}

// Actions of a delegate, as the access record and the metrics name them.
var (
	scopeAction = map[delegation.Scope]auditv1.DelegateAction{
		delegation.SeeAccesses:  auditv1.DelegateAction_DELEGATE_ACTION_VIEW_ACCESSES,
		delegation.SeeCases:     auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES,
		delegation.SeeConsents:  auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CONSENTS,
		delegation.GrantConsent: auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT,
	}
	actionMetric = map[delegation.Scope]string{
		delegation.SeeAccesses: "view_accesses", delegation.SeeCases: "view_cases",
		delegation.SeeConsents: "view_consents", delegation.GrantConsent: "grant_consent",
	}
	scopeFromAPI = map[citizenv1.DelegationScope]delegation.Scope{
		citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_ACCESSES:  delegation.SeeAccesses,
		citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES:     delegation.SeeCases,
		citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CONSENTS:  delegation.SeeConsents,
		citizenv1.DelegationScope_DELEGATION_SCOPE_GRANT_CONSENT: delegation.GrantConsent,
	}
)

// actFor returns whom the call acts for. With onBehalfOf empty, the caller. Otherwise the caller must
// hold that delegation, it must be active now and its scope must cover scope (and journey, when the
// call is about one): a delegation the caller does not hold, or that is expired, revoked or does not
// authenticate, is NotFound, exactly as if it never existed; one whose scope does not cover the call
// PermissionDenied. Nothing is read about the represented citizen before these checks.
func (s *Service) actFor(ctx context.Context, onBehalfOf string, scope delegation.Scope, journey string) (acting, error) {
	c, err := citizenOf(ctx)
	if err != nil || onBehalfOf == "" {
		return acting{Citizen: c}, err
	}
	deny := func(err error) (acting, error) {
		s.cfg.DelegationCount.Add(ctx, actionMetric[scope], delegation.OutcomeDenied)
		return acting{}, err
	}
	if isCustodyID(onBehalfOf) {
		a, err := s.actForChild(ctx, c, onBehalfOf)
		if err != nil {
			return deny(err)
		}
		return a, nil
	}
	if s.cfg.Delegations == nil {
		return deny(refusal.New(refusal.Unavailable, "acting for someone else is not available on this broker"))
	}
	notFound := refusal.New(refusal.NotFound, "you hold no active power of attorney %s", onBehalfOf)
	d, err := s.cfg.Delegations.Resolve(ctx, c.Pseudonym.Value, onBehalfOf)
	switch {
	case errors.Is(err, delegation.ErrNotFound), errors.Is(err, delegation.ErrUnverified):
		return deny(notFound)
	case err != nil:
		return deny(unavailable(err, "powers of attorney"))
	case !d.ActiveAt(s.cfg.Now()):
		return deny(notFound)
	case !d.Allows(scope, journey):
		return deny(refusal.New(refusal.PermissionDenied, "the power of attorney %s does not cover this", onBehalfOf))
	}
	return acting{Citizen: Citizen{Pseudonym: keys.Pseudonym{Value: d.Giver, KeyID: c.Pseudonym.KeyID}}, d: d,
		basis: auditv1.DelegateBasis_DELEGATE_BASIS_POWER_OF_ATTORNEY}, nil
}

// delegate marks a record of what someone acting for the citizen did (nil for the caller's own data).
func (a acting) delegate(action auditv1.DelegateAction) *auditv1.Delegate {
	if a.d == nil {
		return nil
	}
	return &auditv1.Delegate{Basis: a.basis, Action: action, DelegationId: a.d.ID}
}

// logDelegate writes what a delegate looked at to the represented citizen's access log, durably,
// before anything is answered; for the caller's own data it does nothing. The record names the
// delegation, never the delegate. (A consent given for the citizen is instead marked on the consent's
// own record: see GrantConsent.)
func (s *Service) logDelegate(ctx context.Context, a acting, scope delegation.Scope, caseID, journey string) error {
	if a.d == nil {
		return nil
	}
	now := s.cfg.Now()
	rec := &auditv1.AccessRecord{
		Id:               ids.New("acc", now),
		Time:             timestamppb.New(now),
		CitizenPseudonym: a.Pseudonym.Value,
		PseudonymKeyId:   a.Pseudonym.KeyID,
		Kind:             auditv1.AccessKind_ACCESS_KIND_DELEGATE,
		CaseId:           caseID,
		Journey:          journey,
		Decision:         auditv1.Decision_DECISION_RELEASED,
		PolicyVersion:    s.cfg.Policies().Version,
		Delegate:         a.delegate(scopeAction[scope]),
	}
	return s.appendDelegated(ctx, a, scope, rec)
}

// appendDelegated writes rec, a delegate's look, durably and counts the call under scope: nil only
// once the record is durable.
func (s *Service) appendDelegated(ctx context.Context, a acting, scope delegation.Scope, rec *auditv1.AccessRecord) error {
	err := s.cfg.Log.Append(ctx, rec)
	s.countDelegate(ctx, a, scope, err)
	if err != nil {
		return refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was shown")
	}
	return nil
}

// countDelegate counts a call on someone's behalf by whether its record was logged (appendErr nil:
// allowed); for the caller's own data it counts nothing.
func (s *Service) countDelegate(ctx context.Context, a acting, scope delegation.Scope, appendErr error) {
	if a.d == nil {
		return
	}
	outcome := delegation.OutcomeAllowed
	if appendErr != nil {
		outcome = delegation.OutcomeDenied
	}
	s.cfg.DelegationCount.Add(ctx, actionMetric[scope], outcome)
}

// Words of a delegate's action, for the represented citizen.
var delegateWords = map[auditv1.DelegateAction]*citizenv1.Text{
	auditv1.DelegateAction_DELEGATE_ACTION_VIEW_ACCESSES: {
		En: "Someone you gave power of attorney looked at who has seen your data",
		Da: "En, du har givet fuldmagt, så, hvem der har set dine data",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES: {
		En: "Someone you gave power of attorney looked at your cases",
		Da: "En, du har givet fuldmagt, så dine sager",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CONSENTS: {
		En: "Someone you gave power of attorney looked at your consents",
		Da: "En, du har givet fuldmagt, så dine samtykker",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT: {
		En: "Someone you gave power of attorney gave consent for you",
		Da: "En, du har givet fuldmagt, gav samtykke for dig",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_PREVIEW_CONSENT: {
		En: "Someone you gave power of attorney looked at what a consent for you would share",
		Da: "En, du har givet fuldmagt, så, hvad et samtykke for dig ville dele",
	},
}

// Words of a parent's action, for the child.
var parentWords = map[auditv1.DelegateAction]*citizenv1.Text{
	auditv1.DelegateAction_DELEGATE_ACTION_VIEW_ACCESSES: {
		En: "A parent with custody of you looked at who has seen your data",
		Da: "En forælder med forældremyndighed over dig så, hvem der har set dine data",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES: {
		En: "A parent with custody of you looked at your cases",
		Da: "En forælder med forældremyndighed over dig så dine sager",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CONSENTS: {
		En: "A parent with custody of you looked at your consents",
		Da: "En forælder med forældremyndighed over dig så dine samtykker",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT: {
		En: "A parent with custody of you gave consent for you",
		Da: "En forælder med forældremyndighed over dig gav samtykke for dig",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_REVOKE_CONSENT: {
		En: "A parent with custody of you withdrew a consent for you",
		Da: "En forælder med forældremyndighed over dig trak et samtykke tilbage for dig",
	},
	auditv1.DelegateAction_DELEGATE_ACTION_PREVIEW_CONSENT: {
		En: "A parent with custody of you looked at what a consent for you would share",
		Da: "En forælder med forældremyndighed over dig så, hvad et samtykke for dig ville dele",
	},
}

// delegateAccess words a delegate's action for the citizen.
func delegateAccess(a *citizenv1.Access, rec *auditv1.AccessRecord) {
	a.Delegate = rec.GetDelegate()
	parent := rec.GetDelegate().GetBasis() == auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY
	words := delegateWords
	if parent {
		words = parentWords
	}
	if w, ok := words[rec.GetDelegate().GetAction()]; ok {
		a.Purpose = w
	}
	if rec.GetCaseId() != "" && rec.GetDelegate().GetAction() == auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES {
		a.Purpose = &citizenv1.Text{
			En: "Someone you gave power of attorney looked at one of your cases",
			Da: "En, du har givet fuldmagt, så en af dine sager",
		}
		if parent {
			a.Purpose = &citizenv1.Text{
				En: "A parent with custody of you looked at one of your cases",
				Da: "En forælder med forældremyndighed over dig så en af dine sager",
			}
		}
	}
}

// DelegationService implements aperture.citizen.v1.CitizenDelegationService: a citizen gives,
// lists and revokes powers of attorney. It shares the Service's configuration and acts, like it, for
// the citizen of the call only.
type DelegationService struct {
	citizenv1.UnimplementedCitizenDelegationServiceServer
	s *Service
}

// NewDelegationService returns the delegation service over s's configuration (s.Config.Delegations
// must be set).
func NewDelegationService(s *Service) (*DelegationService, error) {
	if s == nil || s.cfg.Delegations == nil {
		return nil, errors.New("citizen delegations: service with a delegation store is required")
	}
	return &DelegationService{s: s}, nil
}

// GrantDelegation implements CitizenDelegationService.
func (ds *DelegationService) GrantDelegation(ctx context.Context, req *citizenv1.GrantDelegationRequest) (*citizenv1.GrantDelegationResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	b := ds.s.cfg.Policies()
	for _, j := range req.GetJourneys() {
		if _, ok := b.Journey(j); !ok {
			return nil, refusal.New(refusal.NotFound, "there is no journey %q", j)
		}
	}
	var scopes []delegation.Scope
	for _, sc := range req.GetScopes() {
		v, ok := scopeFromAPI[sc]
		if !ok {
			return nil, refusal.New(refusal.InvalidArgument, "unknown scope %v", sc)
		}
		scopes = append(scopes, v)
	}
	holder := ds.s.cfg.Pseudonyms.Pseudonym(req.GetHolderCitizenId())
	now := ds.s.cfg.Now()
	d, err := ds.s.cfg.Delegations.Grant(ctx, c.Pseudonym.Value, holder.Value, scopes, req.GetJourneys(), req.GetExpiresAt().AsTime(), now)
	switch {
	case errors.Is(err, delegation.ErrInvalid):
		return nil, refusal.Wrap(refusal.InvalidArgument, err, "%s", err.Error())
	case err != nil:
		return nil, unavailable(err, "powers of attorney")
	}
	ds.s.cfg.DelegationCount.Add(ctx, "grant", delegation.OutcomeGranted)
	ds.s.log.Info("power of attorney granted", "delegation", d.ID, "expires", d.ExpiresAt)
	return &citizenv1.GrantDelegationResponse{Delegation: names{b}.delegationView(d, now)}, nil
}

// ListDelegations implements CitizenDelegationService.
func (ds *DelegationService) ListDelegations(ctx context.Context, _ *citizenv1.ListDelegationsRequest) (*citizenv1.ListDelegationsResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	given, err := ds.s.cfg.Delegations.ListGiven(ctx, c.Pseudonym.Value)
	if err != nil {
		return nil, unavailable(err, "powers of attorney")
	}
	held, err := ds.s.cfg.Delegations.ListHeld(ctx, c.Pseudonym.Value)
	if err != nil {
		return nil, unavailable(err, "powers of attorney")
	}
	now := ds.s.cfg.Now()
	n := names{ds.s.cfg.Policies()}
	resp := &citizenv1.ListDelegationsResponse{}
	for _, d := range given {
		resp.Granted = append(resp.Granted, n.delegationView(d, now))
	}
	for _, d := range held {
		// The holder sees only what they may use now: not the giver's revocations or lapsed ones.
		if d.ActiveAt(now) {
			resp.Held = append(resp.Held, n.delegationView(d, now))
		}
	}
	kids, err := ds.s.children(ctx, c)
	if err != nil {
		return nil, err
	}
	for _, ch := range kids {
		resp.Held = append(resp.Held, childView(ch))
	}
	return resp, nil
}

// RevokeDelegation implements CitizenDelegationService for a delegation the caller gave.
func (ds *DelegationService) RevokeDelegation(ctx context.Context, req *citizenv1.RevokeDelegationRequest) (*citizenv1.RevokeDelegationResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	now := ds.s.cfg.Now()
	d, err := ds.s.cfg.Delegations.Revoke(ctx, c.Pseudonym.Value, req.GetId(), now)
	switch {
	case errors.Is(err, delegation.ErrNotFound):
		return nil, refusal.New(refusal.NotFound, "you gave no power of attorney %s", req.GetId())
	case err != nil:
		return nil, unavailable(err, "powers of attorney")
	}
	ds.s.cfg.DelegationCount.Add(ctx, "revoke", delegation.OutcomeRevoked)
	ds.s.log.Info("power of attorney revoked", "delegation", d.ID)
	return &citizenv1.RevokeDelegationResponse{Delegation: names{ds.s.cfg.Policies()}.delegationView(d, now)}, nil
}

func (n names) delegationView(d *delegation.Delegation, now time.Time) *citizenv1.Delegation {
	out := &citizenv1.Delegation{Id: d.ID, GrantedAt: ts(d.GrantedAt), ExpiresAt: ts(d.ExpiresAt), Basis: citizenv1.DelegationBasis_DELEGATION_BASIS_POWER_OF_ATTORNEY}
	switch {
	case d.Unverified:
		out.State = citizenv1.DelegationState_DELEGATION_STATE_UNVERIFIED
		return out
	case d.RevokedAt != nil:
		out.State, out.RevokedAt = citizenv1.DelegationState_DELEGATION_STATE_REVOKED, ts(*d.RevokedAt)
	case !d.ActiveAt(now):
		out.State = citizenv1.DelegationState_DELEGATION_STATE_EXPIRED
	default:
		out.State = citizenv1.DelegationState_DELEGATION_STATE_ACTIVE
	}
	for api, sc := range scopeFromAPI {
		for _, have := range d.Scopes {
			if have == sc {
				out.Scopes = append(out.Scopes, api)
			}
		}
	}
	slices.Sort(out.Scopes)
	for _, j := range d.Journeys {
		ref, _ := n.journey(j)
		out.Journeys = append(out.Journeys, ref)
	}
	return out
}
