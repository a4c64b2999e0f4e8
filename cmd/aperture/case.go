package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

const caseUsage = `Usage:
  aperture case open --journey JOURNEY --citizen CITIZEN_ID
  aperture case show CASE_ID
  aperture case list [--current]
  aperture case explain CASE_ID
  aperture case release CASE_ID AUTHORITY.DATASET [--fields PATH,…] [--derived NAME,…]
  aperture case break-glass CASE_ID AUTHORITY.DATASET --reason-code CODE --justification TEXT [--fields PATH,…]
                        emergency release outside the current step, where the journey's policy has a
                        break-glass rule for the agency: flagged, shown to the citizen at once, reviewed
  aperture case complete CASE_ID [STEP]
  aperture case close CASE_ID --reason TEXT
  aperture case questions [--open]
  aperture case answer QUESTION_ID --text TEXT

Common flags: --as AGENCY (default municipality) --caseworker ID --broker ADDR --data DIR --json --utc
Times are local, with their zone; --utc prints them in UTC.
`

func runCase(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, caseUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("case "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, caseUsage); fs.PrintDefaults() }
	var cf clientFlags
	cf.register(fs, "agency", "municipality")
	var (
		journey = fs.String("journey", "", "journey id (open)")
		citizen = fs.String("citizen", "", "citizen id (open)")
		current = fs.Bool("current", false, "only cases waiting for this agency (list)")
		fields  = fs.String("fields", "", "comma-separated field paths (release; default: all the step allows)")
		derived = fs.String("derived", "", "comma-separated derived facts (release)")
		reason  = fs.String("reason", "", "why the case is closed (close)")
		open    = fs.Bool("open", false, "only questions not answered yet (questions)")
		text    = fs.String("text", "", "the answer, in plain words the citizen understands (answer)")
		code    = fs.String("reason-code", "", "one of the break-glass rule's reason codes (break-glass)")
		justify = fs.String("justification", "", "why the emergency needs the data now; the citizen reads it (break-glass)")
	)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	want := map[string][2]int{"open": {0, 0}, "show": {1, 1}, "list": {0, 0}, "explain": {1, 1}, "release": {2, 2}, "complete": {1, 2}, "close": {1, 1}, "questions": {0, 0}, "answer": {1, 1}, "break-glass": {2, 2}}
	n, ok := want[sub]
	if !ok {
		return usagef("unknown subcommand %q\n%s", sub, caseUsage)
	}
	if len(pos) < n[0] || len(pos) > n[1] {
		return usagef("wrong number of arguments\n%s", caseUsage)
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	client := brokerv1.NewBrokerServiceClient(cc)
	ctx, cancel := cf.callContext(ctx)
	defer cancel()

	var resp proto.Message
	switch sub {
	case "open":
		if *journey == "" || *citizen == "" {
			return usagef("open needs --journey and --citizen")
		}
		resp, err = client.OpenCase(ctx, &brokerv1.OpenCaseRequest{Journey: *journey, CitizenId: *citizen})
	case "show":
		resp, err = client.GetCase(ctx, &brokerv1.GetCaseRequest{CaseId: pos[0]})
	case "list":
		resp, err = client.ListCases(ctx, &brokerv1.ListCasesRequest{OnlyCurrent: *current})
	case "explain":
		resp, err = client.ExplainStep(ctx, &brokerv1.ExplainStepRequest{CaseId: pos[0]})
	case "release":
		auth, ds, ok := strings.Cut(pos[1], ".")
		if !ok {
			return usagef("dataset must be AUTHORITY.DATASET, e.g. population.person")
		}
		resp, err = client.Release(ctx, &brokerv1.ReleaseRequest{CaseId: pos[0], Authority: auth, Dataset: ds, Fields: splitList(*fields), Derived: splitList(*derived)})
	case "break-glass":
		auth, ds, ok := strings.Cut(pos[1], ".")
		if !ok {
			return usagef("dataset must be AUTHORITY.DATASET, e.g. population.person")
		}
		if *code == "" || strings.TrimSpace(*justify) == "" {
			return usagef("break-glass needs --reason-code and --justification")
		}
		resp, err = client.BreakGlassRelease(ctx, &brokerv1.BreakGlassReleaseRequest{CaseId: pos[0], Authority: auth, Dataset: ds,
			Fields: splitList(*fields), Derived: splitList(*derived), ReasonCode: *code, Justification: *justify})
	case "complete":
		step := ""
		if len(pos) == 2 {
			step = pos[1]
		} else {
			got, gerr := client.GetCase(ctx, &brokerv1.GetCaseRequest{CaseId: pos[0]})
			if gerr != nil {
				return refused(gerr)
			}
			step = got.GetCase().GetCurrentStep()
			if step == "" {
				return fmt.Errorf("case %s is closed", pos[0])
			}
		}
		resp, err = client.CompleteStep(ctx, &brokerv1.CompleteStepRequest{CaseId: pos[0], Step: step})
	case "close":
		resp, err = client.CloseCase(ctx, &brokerv1.CloseCaseRequest{CaseId: pos[0], Reason: *reason})
	case "questions":
		resp, err = client.ListQuestions(ctx, &brokerv1.ListQuestionsRequest{OnlyOpen: *open})
	case "answer":
		if strings.TrimSpace(*text) == "" {
			return usagef("answer needs --text")
		}
		resp, err = client.AnswerQuestion(ctx, &brokerv1.AnswerQuestionRequest{QuestionId: pos[0], Answer: *text})
	}
	if err != nil {
		return refused(err)
	}
	if cf.json {
		return printJSON(stdout, resp)
	}
	ck := cf.clock()
	switch r := resp.(type) {
	case *brokerv1.OpenCaseResponse:
		printCase(stdout, ck, r.GetCase())
	case *brokerv1.GetCaseResponse:
		printCase(stdout, ck, r.GetCase())
	case *brokerv1.CompleteStepResponse:
		printCase(stdout, ck, r.GetCase())
	case *brokerv1.CloseCaseResponse:
		printCase(stdout, ck, r.GetCase())
	case *brokerv1.ListCasesResponse:
		printCaseList(stdout, ck, r)
	case *brokerv1.ExplainStepResponse:
		printExplain(stdout, ck, r)
	case *brokerv1.ReleaseResponse:
		return printRelease(stdout, r)
	case *brokerv1.BreakGlassReleaseResponse:
		fmt.Fprintf(stdout, "BREAK-GLASS release: the citizen sees it now, and an auditor must review it; %d more allowed for you in the rule's window\n", r.GetRemaining())
		return printRelease(stdout, &brokerv1.ReleaseResponse{AccessId: r.GetAccessId(), Record: r.GetRecord(), Derived: r.GetDerived(),
			Fields: r.GetFields(), Step: "break-glass", Purpose: r.GetPurpose(), LegalBasis: r.GetLegalBasis()})
	case *brokerv1.ListQuestionsResponse:
		printQuestions(stdout, ck, r.GetQuestions())
	case *brokerv1.AnswerQuestionResponse:
		printQuestions(stdout, ck, []*citizenv1.Question{r.GetQuestion()})
	}
	return nil
}

// printQuestions lists citizens' questions about the agency's accesses: the access is how the
// caseworker finds the case (the citizen is not named).
func printQuestions(w io.Writer, ck clock, qs []*citizenv1.Question) {
	if len(qs) == 0 {
		fmt.Fprintln(w, "no questions")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUESTION\tASKED\tSTATUS\tACCESS\tQUESTION TEXT")
	for _, q := range qs {
		st := "open"
		if q.GetStatus() == citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED {
			st = "answered " + ck.ts(q.GetAnsweredAt())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", q.GetId(), ck.ts(q.GetAskedAt()), st, q.GetAccessId(), oneLine(q.GetMessage(), 60))
	}
	tw.Flush()
}

// oneLine is s on one line, cut to at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// refused turns a gRPC status into an error that shows the code and the broker's reason.
func refused(err error) error {
	st := status.Convert(err)
	return fmt.Errorf("refused (%s): %s", st.Code(), st.Message())
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := indentJSON(m, "")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// indentJSON encodes m as protojson with stable indentation (protojson varies its spacing on purpose;
// people and diffs want the same text every time).
func indentJSON(m proto.Message, prefix string) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, prefix, "  "); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return out.Bytes(), nil
}

var stepStateWords = map[brokerv1.StepState]string{
	brokerv1.StepState_STEP_STATE_PENDING:   "to come",
	brokerv1.StepState_STEP_STATE_CURRENT:   "current",
	brokerv1.StepState_STEP_STATE_COMPLETED: "done",
	brokerv1.StepState_STEP_STATE_SKIPPED:   "skipped",
}

func printCase(w io.Writer, ck clock, c *brokerv1.Case) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "case\t%s\n", c.GetId())
	fmt.Fprintf(tw, "journey\t%s\n", c.GetJourney())
	fmt.Fprintf(tw, "citizen\t%s\n", c.GetCitizenId())
	state := "open, at step " + c.GetCurrentStep()
	if c.GetState() == brokerv1.CaseState_CASE_STATE_CLOSED {
		state = "closed"
		if c.GetCloseReason() != "" {
			state += ": " + c.GetCloseReason()
		}
	}
	fmt.Fprintf(tw, "state\t%s\n", state)
	fmt.Fprintf(tw, "opened\t%s by %s\n", ck.ts(c.GetOpenedAt()), c.GetOpenedBy())
	tw.Flush()
	fmt.Fprintln(w, "steps")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, s := range c.GetSteps() {
		when := ""
		switch s.GetState() {
		case brokerv1.StepState_STEP_STATE_CURRENT:
			when = "since " + ck.ts(s.GetStartedAt())
		case brokerv1.StepState_STEP_STATE_COMPLETED:
			when = ck.ts(s.GetCompletedAt()) + " by " + s.GetCompletedBy()
		}
		fmt.Fprintf(tw, "  %d. %s\t%s\t%s\t%s\t%s\n", i+1, s.GetId(), s.GetTitle(), s.GetAgency(), stepStateWords[s.GetState()], when)
	}
	tw.Flush()
}

func printCaseList(w io.Writer, ck clock, r *brokerv1.ListCasesResponse) {
	if len(r.GetCases()) == 0 {
		fmt.Fprintln(w, "no cases")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tJOURNEY\tSTATE\tCURRENT STEP\tUPDATED")
	for _, c := range r.GetCases() {
		state := "open"
		if c.GetState() == brokerv1.CaseState_CASE_STATE_CLOSED {
			state = "closed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.GetId(), c.GetJourney(), state, c.GetCurrentStep(), ck.ts(c.GetUpdatedAt()))
	}
	tw.Flush()
	if r.GetNextPageToken() != "" {
		fmt.Fprintln(w, "(more cases: use --json and page tokens)")
	}
}

func printExplain(w io.Writer, ck clock, r *brokerv1.ExplainStepResponse) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "case\t%s (%s)\n", r.GetCaseId(), r.GetJourney())
	fmt.Fprintf(tw, "current step\t%s — %s\n", r.GetStep(), r.GetStepTitle())
	fmt.Fprintf(tw, "acted by\t%s (%s)\n", r.GetAgency(), r.GetRole())
	fmt.Fprintf(tw, "purpose\t%s\n", r.GetPurpose())
	fmt.Fprintf(tw, "legal basis\t%s\n", r.GetLegalBasis())
	if r.GetConsentRequired() {
		c := "needed, not given"
		if r.GetConsentValid() {
			c = "given, valid until " + ck.ts(r.GetConsentExpiresAt())
		} else if r.GetConsentExpiresAt() != nil {
			c = "needed; the last consent ended " + ck.ts(r.GetConsentExpiresAt())
		}
		fmt.Fprintf(tw, "citizen consent\t%s\n", c)
	}
	if !r.GetCallerMayRelease() {
		fmt.Fprintf(tw, "note\tyour agency does not act at this step, so it cannot release anything now\n")
	}
	tw.Flush()
	fmt.Fprintln(w, "may see")
	for _, a := range r.GetReleases() {
		fmt.Fprintf(w, "  %s.%s\n", a.GetAuthority(), a.GetDataset())
		for _, f := range a.GetFields() {
			fmt.Fprintf(w, "    field  %s\n", f)
		}
		for _, d := range a.GetDerived() {
			fmt.Fprintf(w, "    fact   %s — %s\n", d.GetName(), d.GetDescription())
		}
	}
}

func printRelease(w io.Writer, r *brokerv1.ReleaseResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "access\t%s (in the citizen's access log)\n", r.GetAccessId())
	fmt.Fprintf(tw, "step\t%s\n", r.GetStep())
	fmt.Fprintf(tw, "purpose\t%s\n", r.GetPurpose())
	fmt.Fprintf(tw, "legal basis\t%s\n", r.GetLegalBasis())
	fmt.Fprintf(tw, "fields\t%s\n", strings.Join(r.GetFields(), ", "))
	tw.Flush()
	if len(r.GetFields()) > 0 {
		fmt.Fprintln(w, "record")
		b, err := indentJSON(r.GetRecord(), "  ")
		if err != nil {
			return fmt.Errorf("decode record (is its schema compiled into this binary?): %w", err)
		}
		fmt.Fprintf(w, "  %s\n", b)
	}
	if len(r.GetDerived()) > 0 {
		fmt.Fprintln(w, "derived facts")
		for _, d := range r.GetDerived() {
			v, _ := protojson.Marshal(d.GetValue())
			fmt.Fprintf(w, "  %s = %s\n      %s\n", d.GetName(), v, d.GetDescription())
		}
	}
	return nil
}
