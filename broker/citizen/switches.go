package citizen

import (
	"context"
	"errors"
	"time"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/switchoff"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Switches keeps the citizens' switch-offs (switchoff.Store).
type Switches interface {
	Set(ctx context.Context, pseudonym, journey, step string, off bool, now time.Time) (*switchoff.Switch, error)
	List(ctx context.Context, pseudonym string) ([]*switchoff.Switch, error)
	Off(ctx context.Context, pseudonym, journey, step string) (switchoff.Scope, error)
}

func (s *Service) switches() (Switches, error) {
	if s.cfg.Switches == nil {
		return nil, refusal.New(refusal.Unavailable, "switching off is not available on this broker")
	}
	return s.cfg.Switches, nil
}

// switchKey indexes the stored switches: journey "" is the switch for all journeys, step "" a
// journey's own.
type switchKey struct{ journey, step string }

// ListSwitches implements CitizenService. Only the caller's own switches are read: the pseudonym
// comes from the token, never from the request.
func (s *Service) ListSwitches(ctx context.Context, _ *citizenv1.ListSwitchesRequest) (*citizenv1.ListSwitchesResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	store, err := s.switches()
	if err != nil {
		return nil, err
	}
	stored, err := store.List(ctx, c.Pseudonym.Value)
	if err != nil {
		return nil, unavailable(err, "your switches")
	}
	byKey := map[switchKey]*switchoff.Switch{}
	for _, sw := range stored {
		byKey[switchKey{sw.Journey, sw.Step}] = sw
	}
	b := s.cfg.Policies()
	n := names{b}
	resp := &citizenv1.ListSwitchesResponse{All: switchView(nil, nil, byKey[switchKey{}])}
	for _, j := range b.Journeys() {
		ref := &citizenv1.JourneyRef{Id: j.ID, Title: text(j.Title)}
		sj := &citizenv1.SwitchableJourney{Journey: ref, Switch: switchView(ref, nil, byKey[switchKey{j.ID, ""}])}
		if j.Optional != nil {
			sj.OptionalWhy = text(j.Optional.Why)
		}
		for i, st := range j.Steps {
			step := &citizenv1.SwitchStep{
				Step:       &citizenv1.StepRef{Id: st.ID, Title: text(st.Title), Number: int32(i + 1)},
				Agency:     n.agency(st.Agency),
				LegalBasis: st.LegalBasis,
			}
			if o := j.OptionalAt(st); o != nil {
				step.Optional, step.OptionalWhy = true, text(o.Why)
				step.Switch = switchView(ref, step.Step, byKey[switchKey{j.ID, st.ID}])
			}
			sj.Steps = append(sj.Steps, step)
		}
		resp.Journeys = append(resp.Journeys, sj)
	}
	return resp, nil
}

func switchView(j *citizenv1.JourneyRef, st *citizenv1.StepRef, sw *switchoff.Switch) *citizenv1.Switch {
	out := &citizenv1.Switch{Journey: j, Step: st}
	if sw != nil {
		out.Off, out.Unverified = sw.Off, sw.Unverified
		if !sw.ChangedAt.IsZero() {
			out.ChangedAt = ts(sw.ChangedAt)
		}
	}
	return out
}

// SetSwitch implements CitizenService for the caller's own switch: of all journeys, of one journey,
// or of one optional step of a journey. What may be switched off is the policy's: a journey with
// nothing optional, or a mandatory step, is refused with the law that requires it.
func (s *Service) SetSwitch(ctx context.Context, req *citizenv1.SetSwitchRequest) (*citizenv1.SetSwitchResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	store, err := s.switches()
	if err != nil {
		return nil, err
	}
	ref, stepRef, err := s.switchTarget(req.GetJourney(), req.GetStep())
	if err != nil {
		return nil, err
	}
	sw, err := store.Set(ctx, c.Pseudonym.Value, req.GetJourney(), req.GetStep(), req.GetOff(), s.cfg.Now())
	if err != nil {
		return nil, unavailable(err, "your switches")
	}
	s.log.Info("citizen switch set", "journey", req.GetJourney(), "step", req.GetStep(), "off", req.GetOff())
	return &citizenv1.SetSwitchResponse{Switch: switchView(ref, stepRef, sw)}, nil
}

// switchTarget checks that the policy lets the citizen switch journey (and step) off, and names them.
func (s *Service) switchTarget(journey, step string) (*citizenv1.JourneyRef, *citizenv1.StepRef, error) {
	if journey == "" {
		if step != "" {
			return nil, nil, refusal.New(refusal.InvalidArgument, "a step's switch needs its journey")
		}
		return nil, nil, nil
	}
	j, ok := s.cfg.Policies().Journey(journey)
	if !ok {
		return nil, nil, refusal.New(refusal.NotFound, "there is no journey %q", journey)
	}
	if !j.HasOptional() {
		return nil, nil, refusal.New(refusal.FailedPrecondition, "journey %q has nothing optional: every step is required by law", journey)
	}
	ref := &citizenv1.JourneyRef{Id: j.ID, Title: text(j.Title)}
	if step == "" {
		return ref, nil, nil
	}
	st, i, ok := j.Step(step)
	if !ok {
		return nil, nil, refusal.New(refusal.NotFound, "journey %q has no step %q", journey, step)
	}
	if j.OptionalAt(st) == nil {
		return nil, nil, refusal.New(refusal.FailedPrecondition, "step %d of %q, %q, is required by law (%s): it cannot be switched off",
			i+1, j.Title.EN, st.Title.EN, st.LegalBasis)
	}
	return ref, &citizenv1.StepRef{Id: st.ID, Title: text(st.Title), Number: int32(i + 1)}, nil
}

// switchedOff is which of the citizen's switches turns step of journey off now (step "": the journey
// as a whole); SWITCH_SCOPE_UNVERIFIED when one cannot be verified, which the broker treats as off.
func (s *Service) switchedOff(ctx context.Context, c Citizen, journey, step string) (citizenv1.SwitchScope, error) {
	if s.cfg.Switches == nil {
		return citizenv1.SwitchScope_SWITCH_SCOPE_UNSPECIFIED, nil
	}
	scope, err := s.cfg.Switches.Off(ctx, c.Pseudonym.Value, journey, step)
	if errors.Is(err, switchoff.ErrUnverified) {
		return citizenv1.SwitchScope_SWITCH_SCOPE_UNVERIFIED, nil
	}
	if err != nil {
		return citizenv1.SwitchScope_SWITCH_SCOPE_UNSPECIFIED, unavailable(err, "your switches")
	}
	return switchScopes[scope], nil
}

var switchScopes = map[switchoff.Scope]citizenv1.SwitchScope{
	switchoff.ScopeNone:    citizenv1.SwitchScope_SWITCH_SCOPE_UNSPECIFIED,
	switchoff.ScopeAll:     citizenv1.SwitchScope_SWITCH_SCOPE_ALL_JOURNEYS,
	switchoff.ScopeJourney: citizenv1.SwitchScope_SWITCH_SCOPE_JOURNEY,
	switchoff.ScopeStep:    citizenv1.SwitchScope_SWITCH_SCOPE_STEP,
}

// Texts of break-glass accesses, in the citizen's words.
var (
	breakGlassStepTitle = &citizenv1.Text{En: "Emergency access (outside the usual steps)", Da: "Nødadgang (uden for de sædvanlige trin)"}
	reviewOutcome       = map[auditv1.BreakGlassOutcome]*citizenv1.Text{
		auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_JUSTIFIED:     {En: "justified", Da: "berettiget"},
		auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_NOT_JUSTIFIED: {En: "not justified", Da: "ikke berettiget"},
	}
)

// breakGlassAccess words a break-glass release, or an auditor's review of one, for the citizen: the
// rule's purpose and the reason code's title from the policy.
func (n names) breakGlassAccess(a *citizenv1.Access, rec *auditv1.AccessRecord, j *policy.Journey) {
	a.BreakGlass = rec.GetBreakGlass()
	code := rec.GetBreakGlass().GetReasonCode()
	a.BreakGlassReason = &citizenv1.Text{En: code}
	var bg *policy.BreakGlass
	if j != nil && rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASEWORKER {
		bg, _ = j.BreakGlassFor(rec.GetAgency())
	} else if j != nil {
		for _, r := range j.BreakGlass {
			if _, ok := r.Reason(code); ok {
				bg = r
			}
		}
	}
	if bg != nil {
		if r, ok := bg.Reason(code); ok {
			a.BreakGlassReason = text(r.Title)
		}
	}
	if rec.GetKind() == auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW {
		a.Agency = n.auditor(rec.GetAgency())
		out := reviewOutcome[rec.GetBreakGlass().GetOutcome()]
		name := a.Agency.GetName()
		a.Purpose = &citizenv1.Text{
			En: name.GetEn() + " reviewed an emergency access to your data and found it " + out.GetEn(),
			Da: orEN(name.GetDa(), name.GetEn()) + " har gennemgået en nødadgang til dine data og fundet den " + out.GetDa(),
		}
		return
	}
	a.Step = &citizenv1.StepRef{Id: rec.GetStep(), Title: breakGlassStepTitle}
	if bg != nil && (bg.Purpose.EN == rec.GetPurpose() || rec.GetPurpose() == "") {
		a.Purpose = text(bg.Purpose)
	}
}
