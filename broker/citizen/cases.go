package citizen

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/pagetoken"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// ListCases implements CitizenService: the citizen's cases, newest first.
//
// The cases store has no index by citizen yet, so this reads every case and keeps the citizen's (by
// pseudonym): fine at the scale of a municipality's demo, a per-pseudonym index is needed at national
// scale (the same holds for the agencies' ListCases).
//
// On someone's behalf (on_behalf_of), it lists that citizen's cases of the journeys the power of
// attorney reaches, and logs the look in their access log first.
func (s *Service) ListCases(ctx context.Context, req *citizenv1.ListCasesRequest) (*citizenv1.ListCasesResponse, error) {
	c, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.SeeCases, "")
	if err != nil {
		return nil, err
	}
	// A keyset cursor (the last case shown), bound to whom the listing is for: paging while a case is
	// opened never shows a case twice or skips one, and a token is no use for another citizen.
	query := pagetoken.Query{"CitizenListCases", c.Pseudonym.Value, req.GetOnBehalfOf()}
	after, err := pagetoken.ParseKeyset(req.GetPageToken(), query)
	if err != nil {
		return nil, err
	}
	all, err := s.cfg.Cases.List(ctx, func(cs *cases.Case) bool {
		return cs.Pseudonym == c.Pseudonym.Value && c.sees(cs.Journey) && (after == "" || cs.ID < after) // newest first: ids sort by creation
	})
	if err != nil {
		return nil, unavailable(err, "case state")
	}
	now := s.cfg.Now()
	n := names{s.cfg.Policies()}
	var visible []*citizenv1.Case
	for _, cs := range all {
		pc, err := s.caseView(ctx, n, c.Citizen, cs, now)
		if err != nil {
			return nil, err
		}
		if pc != nil {
			visible = append(visible, pc)
		}
	}
	if err := s.logDelegate(ctx, c, delegation.SeeCases, "", ""); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	resp := &citizenv1.ListCasesResponse{Cases: visible[:min(size, len(visible))]}
	if len(visible) > size {
		resp.NextPageToken = pagetoken.Keyset(query, resp.Cases[len(resp.Cases)-1].GetId())
	}
	return resp, nil
}

// GetCase implements CitizenService. Another citizen's case, like a case that does not exist, is not
// found. On someone's behalf, so is a case of a journey the power of attorney does not reach; the look
// is logged in their access log first.
func (s *Service) GetCase(ctx context.Context, req *citizenv1.GetCaseRequest) (*citizenv1.GetCaseResponse, error) {
	c, err := s.actFor(ctx, req.GetOnBehalfOf(), delegation.SeeCases, "")
	if err != nil {
		return nil, err
	}
	notFound := refusal.New(refusal.NotFound, "you have no case %s", req.GetCaseId())
	cs, err := s.cfg.Cases.Get(ctx, req.GetCaseId())
	switch {
	case errors.Is(err, cases.ErrNotFound):
		return nil, notFound
	case err != nil:
		return nil, unavailable(err, "case state")
	case cs.Pseudonym != c.Pseudonym.Value, !c.sees(cs.Journey):
		return nil, notFound
	}
	pc, err := s.caseView(ctx, names{s.cfg.Policies()}, c.Citizen, cs, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	if pc == nil {
		return nil, notFound
	}
	if err := s.logDelegate(ctx, c, delegation.SeeCases, cs.ID, cs.Journey); err != nil {
		return nil, err
	}
	return &citizenv1.GetCaseResponse{Case: pc}, nil
}

// masked reports whether the citizen must not yet see that covert step idx of their case has begun.
//
// A covert step keeps its accesses from the citizen until its policy's reveal point (by default the
// case closing) or its maximum delay, so showing the step as current (or as done, with its dates) while
// those accesses are hidden would give the check away. The choice made here: while masked, a covert
// step is shown exactly like a step not reached yet (pending, no dates); once revealed, it is shown as
// it is, and every access it made is in the access list with the reason. A case in which nothing is
// visible but such masked steps is not shown at all, because its mere existence would give the check
// away. The data path of the journey, including that it has a covert step and why, stays public.
func masked(st *policy.Step, cs *cases.Case, idx int, now time.Time) bool {
	step := cs.Steps[idx]
	if st == nil || st.Covert == nil || step.StartedAt == nil {
		return false
	}
	if at := cases.RevealedAt(st, cs, idx); !at.IsZero() && !at.After(now) {
		return false
	}
	return step.State == cases.StepCurrent || now.Before(step.StartedAt.Add(st.Covert.MaxDelay()))
}

// caseView is cs as the citizen may see it at now, or nil when the citizen may not see it at all yet.
func (s *Service) caseView(ctx context.Context, n names, c Citizen, cs *cases.Case, now time.Time) (*citizenv1.Case, error) {
	jref, j := n.journey(cs.Journey)
	out := &citizenv1.Case{
		Id:          cs.ID,
		Journey:     jref,
		Status:      citizenv1.CaseStatus_CASE_STATUS_OPEN,
		OpenedBy:    n.agency(cs.OpenedBy),
		CloseReason: cs.CloseReason,
	}
	if p := cs.Proactive; p != nil {
		out.Proactive = &citizenv1.ProactiveStart{Event: n.event(p.Event), Authority: n.authority(p.Authority)}
		if !p.OccurredAt.IsZero() {
			out.Proactive.OccurredAt = timestamppb.New(p.OccurredAt)
		}
	}
	if cs.State == cases.StateClosed {
		out.Status = citizenv1.CaseStatus_CASE_STATUS_CLOSED
	}
	var (
		anyMasked     bool
		firstVisible  time.Time // the earliest visible step start
		latestVisible time.Time // the latest visible change
	)
	for i, st := range cs.Steps {
		ref, pst := stepRef(j, st.ID)
		step := &citizenv1.CaseStep{Step: ref, Agency: n.agency(st.Agency), Status: stepStatus(st.State)}
		if masked(pst, cs, i, now) {
			anyMasked = true
			step.Status = citizenv1.StepStatus_STEP_STATUS_PENDING
			if cs.State == cases.StateClosed {
				// A closed case has nothing to come; "not done" is as much as may be said yet.
				step.Status = citizenv1.StepStatus_STEP_STATUS_SKIPPED
			}
		} else {
			if st.StartedAt != nil {
				step.StartedAt = ts(*st.StartedAt)
				if firstVisible.IsZero() || st.StartedAt.Before(firstVisible) {
					firstVisible = *st.StartedAt
				}
				latestVisible = maxTime(latestVisible, *st.StartedAt)
			}
			if st.CompletedAt != nil {
				step.CompletedAt = ts(*st.CompletedAt)
				latestVisible = maxTime(latestVisible, *st.CompletedAt)
			}
			if st.State == cases.StepCurrent && cs.State == cases.StateOpen {
				out.CurrentStep, out.CurrentAgency = ref, n.agency(st.Agency)
			}
		}
		if pst != nil && pst.Consent != nil {
			step.ConsentRequired = true
			cn, err := s.cfg.Consents.Get(ctx, c.Pseudonym.Value, cs.Journey, st.ID)
			switch {
			case err == nil:
				step.ConsentGiven = cn.ValidAt(now, pst.Consent.MaxDays)
			case !errors.Is(err, errNoConsent):
				return nil, unavailable(err, "consent state")
			}
		}
		out.Steps = append(out.Steps, step)
	}
	if !anyMasked {
		out.OpenedAt, out.UpdatedAt = ts(cs.OpenedAt), ts(cs.UpdatedAt)
		return out, nil
	}
	if firstVisible.IsZero() {
		return nil, nil // nothing but a covert step so far (even if the case closed after it)
	}
	// Dates would tell when a masked step began or ended: show only what visible steps tell.
	out.OpenedAt, out.UpdatedAt = ts(firstVisible), ts(latestVisible)
	if cs.State == cases.StateClosed {
		out.UpdatedAt = ts(maxTime(latestVisible, cs.UpdatedAt))
	}
	return out, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func stepStatus(s cases.State) citizenv1.StepStatus {
	switch s {
	case cases.StepPending:
		return citizenv1.StepStatus_STEP_STATUS_PENDING
	case cases.StepCurrent:
		return citizenv1.StepStatus_STEP_STATUS_CURRENT
	case cases.StepCompleted:
		return citizenv1.StepStatus_STEP_STATUS_COMPLETED
	case cases.StepSkipped:
		return citizenv1.StepStatus_STEP_STATUS_SKIPPED
	}
	return citizenv1.StepStatus_STEP_STATUS_UNSPECIFIED
}
