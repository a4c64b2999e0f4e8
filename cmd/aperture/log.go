package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

func runLog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, "auditor", "dpo")
	citizen := fs.String("citizen", "", "citizen id whose access records to list")
	limit := fs.Int("limit", 100, "maximum records (newest first)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if *citizen == "" || len(pos) > 0 {
		return usagef("usage: aperture log --citizen CITIZEN_ID [--limit N] [--json]")
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := cf.callContext(ctx)
	defer cancel()
	client := auditv1.NewAuditServiceClient(cc)
	var recs []*auditv1.AccessRecord
	token := ""
	for len(recs) < *limit {
		resp, err := client.ListAccessRecords(ctx, &auditv1.ListAccessRecordsRequest{
			CitizenId: *citizen, PageSize: int32(min(*limit-len(recs), 1000)), PageToken: token,
		})
		if err != nil {
			return refused(err)
		}
		recs = append(recs, resp.GetRecords()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if cf.json {
		return printJSON(stdout, &auditv1.ListAccessRecordsResponse{Records: recs})
	}
	if len(recs) == 0 {
		fmt.Fprintln(stdout, "no access records")
		return nil
	}
	// Reasons and over-sharing go below the table as numbered notes: a line with fewer cells would end
	// the tabwriter's column block and misalign the rows after it.
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDECISION\tAGENCY/CASEWORKER\tDATA\tJOURNEY/STEP\tFIELDS AND FACTS")
	var notes []string
	note := func(text string) string {
		notes = append(notes, text)
		return fmt.Sprintf("[%d]", len(notes))
	}
	for _, r := range recs {
		decision := "released"
		if r.GetDecision() == auditv1.Decision_DECISION_REFUSED {
			why := strings.TrimPrefix(r.GetRefusalReason().String(), "REFUSAL_REASON_")
			if r.GetRefusalReason() == auditv1.RefusalReason_REFUSAL_REASON_UNSPECIFIED {
				why = r.GetCode()
			}
			decision = "REFUSED " + why + " " + note("why: "+r.GetReason())
		}
		if len(r.GetViolations()) > 0 {
			decision += " " + note("authority over-shared (stripped): "+strings.Join(r.GetViolations(), ", "))
		}
		if bg := r.GetBreakGlass(); bg != nil && r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASEWORKER {
			decision += " BREAK-GLASS " + note("break-glass ("+bg.GetReasonCode()+"): "+bg.GetJustification())
		}
		if r.GetHiddenUntil() != nil {
			decision += " COVERT " + note("covert: kept from the citizen until "+cf.clock().ts(r.GetHiddenUntil())+" at the latest")
		}
		what := append(append([]string{}, r.GetFields()...), r.GetDerived()...)
		data := r.GetAuthority() + "." + r.GetDataset()
		switch r.GetKind() {
		case auditv1.AccessKind_ACCESS_KIND_CASE_READ:
			data = "(case read)"
			if r.GetAuthority() != "" {
				// The check with the citizen register before the case was opened: no field, only
				// whether the register holds the citizen.
				data = "(register check) " + r.GetAuthority() + "." + r.GetDataset()
			}
		case auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ:
			data = "(access log read)"
		case auditv1.AccessKind_ACCESS_KIND_DELEGATE:
			basis := "power of attorney "
			if r.GetDelegate().GetBasis() == auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY {
				basis = "parental custody "
			}
			data = "(on the citizen's behalf: " + strings.ToLower(strings.TrimPrefix(r.GetDelegate().GetAction().String(), "DELEGATE_ACTION_")) + ", " + basis + r.GetDelegate().GetDelegationId() + ")"
		case auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK:
			data = "(custody check) " + r.GetAuthority() + "." + r.GetDataset()
		case auditv1.AccessKind_ACCESS_KIND_CORRECTION_REQUESTED:
			decision = "CORRECTION ASKED " + note("correction request "+r.GetCorrection().GetRequestId())
		case auditv1.AccessKind_ACCESS_KIND_CORRECTION_DECIDED:
			decision = "CORRECTION " + strings.TrimPrefix(r.GetCorrection().GetOutcome().String(), "CORRECTION_OUTCOME_") + " " + note("decision on correction request "+r.GetCorrection().GetRequestId())
		case auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED:
			decision = "CONSENT GIVEN " + note("consent given, runs out "+cf.clock().ts(r.GetConsent().GetExpiresAt()))
			data = "(consent)"
		case auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED:
			decision = "CONSENT WITHDRAWN " + note("consent given "+cf.clock().ts(r.GetConsent().GetGrantedAt())+" withdrawn")
			data = "(consent)"
		case auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED:
			decision = "QUESTION ASKED " + note("question "+r.GetQuestion().GetQuestionId()+" about access "+r.GetQuestion().GetAccessId())
			data = "(question)"
		case auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED:
			decision = "QUESTION ANSWERED " + note("answer to question "+r.GetQuestion().GetQuestionId()+" about access "+r.GetQuestion().GetAccessId())
			data = "(question)"
		case auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED:
			cr := r.GetCovertReveal()
			why := "the case was closed"
			if cr.GetCause() == auditv1.CovertRevealCause_COVERT_REVEAL_CAUSE_NEXT_STEP {
				why = "a later step began"
			}
			decision = "COVERT REVEALED " + note(fmt.Sprintf("%d covert access(es) of case %s shown to the citizen before their hidden-until time, because %s", cr.GetAccesses(), r.GetCaseId(), why))
			data = "(covert reveal)"
		case auditv1.AccessKind_ACCESS_KIND_BREAK_GLASS_REVIEW:
			bg := r.GetBreakGlass()
			decision = "REVIEWED " + outcomeWord(bg.GetOutcome()) + " " + note("review of break-glass "+bg.GetReviewedAccessId()+": "+bg.GetReviewNote())
			data = "(break-glass review)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s/%s\t%s\n", cf.clock().ts(r.GetTime()), decision, r.GetAgency(), r.GetCaseworker(),
			data, r.GetJourney(), r.GetStep(), strings.Join(what, ", "))
	}
	tw.Flush()
	for i, n := range notes {
		fmt.Fprintf(stdout, "[%d] %s\n", i+1, n)
	}
	noun := "records"
	if len(recs) == 1 {
		noun = "record"
	}
	fmt.Fprintf(stdout, "%d %s, newest first\n", len(recs), noun)
	return nil
}
