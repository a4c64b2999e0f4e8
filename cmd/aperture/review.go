package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

const reviewUsage = `usage:
  aperture audit review list [--all] [--json]
  aperture audit review close ACCESS_ID --outcome justified|not-justified --note TEXT [--json]

Common flags: --as AUDITOR (default dpo) --broker ADDR --data DIR`

// outcomes are the --outcome words.
var outcomes = map[string]auditv1.BreakGlassOutcome{
	"justified":     auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_JUSTIFIED,
	"not-justified": auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_NOT_JUSTIFIED,
}

// runAuditReview is `aperture audit review`: the auditors' break-glass review queue.
func runAuditReview(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, reviewUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("audit review "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(stderr, reviewUsage); fs.PrintDefaults() }
	var cf clientFlags
	cf.register(fs, "auditor", "dpo")
	all := fs.Bool("all", false, "also list closed reviews (list)")
	outcome := fs.String("outcome", "", "justified or not-justified (close)")
	note := fs.String("note", "", "why, in words the citizen understands; the citizen reads it (close)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	var req func(auditv1.AuditServiceClient, context.Context) (proto.Message, error)
	switch sub {
	case "list":
		if len(pos) != 0 {
			return usagef("%s", reviewUsage)
		}
		req = func(c auditv1.AuditServiceClient, ctx context.Context) (proto.Message, error) {
			return c.ListBreakGlassReviews(ctx, &auditv1.ListBreakGlassReviewsRequest{IncludeClosed: *all})
		}
	case "close":
		o, ok := outcomes[*outcome]
		if len(pos) != 1 || !ok || strings.TrimSpace(*note) == "" {
			return usagef("close needs ACCESS_ID, --outcome justified|not-justified and --note\n%s", reviewUsage)
		}
		req = func(c auditv1.AuditServiceClient, ctx context.Context) (proto.Message, error) {
			return c.CloseBreakGlassReview(ctx, &auditv1.CloseBreakGlassReviewRequest{AccessId: pos[0], Outcome: o, Note: *note})
		}
	default:
		return usagef("unknown subcommand %q\n%s", sub, reviewUsage)
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := cf.callContext(ctx)
	defer cancel()
	resp, err := req(auditv1.NewAuditServiceClient(cc), ctx)
	if err != nil {
		return refused(err)
	}
	if cf.json {
		return printJSON(stdout, resp)
	}
	switch r := resp.(type) {
	case *auditv1.ListBreakGlassReviewsResponse:
		printReviews(stdout, cf.clock(), r.GetReviews())
	case *auditv1.CloseBreakGlassReviewResponse:
		fmt.Fprintf(stdout, "closed: %s (logged to the citizen's access log as %s)\n", outcomeWord(r.GetReview().GetOutcome()), r.GetReview().GetClosureAccessId())
		printReviews(stdout, cf.clock(), []*auditv1.BreakGlassReview{r.GetReview()})
	}
	return nil
}

func outcomeWord(o auditv1.BreakGlassOutcome) string {
	for w, v := range outcomes {
		if v == o {
			return w
		}
	}
	return "open"
}

func printReviews(w io.Writer, ck clock, rs []*auditv1.BreakGlassReview) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no break-glass releases waiting for review")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCESS\tTIME\tAGENCY/CASEWORKER\tJOURNEY\tDATA\tREASON\tSTATUS\tJUSTIFICATION")
	for _, r := range rs {
		st := outcomeWord(r.GetOutcome())
		if r.GetClosedAt() != nil {
			st += " by " + r.GetAuditor() + " " + ck.ts(r.GetClosedAt())
		}
		data := r.GetAuthority() + "." + r.GetDataset() + " " + strings.Join(append(append([]string{}, r.GetFields()...), r.GetDerived()...), ",")
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", r.GetAccessId(), ck.ts(r.GetTime()), r.GetAgency(), r.GetCaseworker(),
			r.GetJourney(), oneLine(data, 50), r.GetReasonCode(), st, oneLine(r.GetJustification(), 60))
	}
	tw.Flush()
}
