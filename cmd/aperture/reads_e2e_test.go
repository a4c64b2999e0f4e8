package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// unknownCase is a well-formed case id no case has.
const unknownCase = "case_00000000000000000000000000"

func (s *syncBuffer) lines(contains ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for line := range strings.Lines(s.b.String()) {
		if !slices.ContainsFunc(contains, func(c string) bool { return !strings.Contains(line, c) }) {
			out = append(out, line)
		}
	}
	return out
}

// withLogs sends the stack's log lines (warnings and above) to buf.
func withLogs(buf *syncBuffer) testOption {
	return func(o *stackOptions) {
		o.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
}

// outsiderOf is an agency of the registry that has no step in j.
func outsiderOf(t *testing.T, reg *policy.Registry, j *policy.Journey) string {
	t.Helper()
	for _, a := range reg.Agencies {
		if !slices.ContainsFunc(j.Steps, func(s *policy.Step) bool { return s.Agency == a.ID }) {
			return a.ID
		}
	}
	t.Fatalf("every agency of the registry takes part in journey %s", j.ID)
	return ""
}

// sameAnswer reports whether err (about case id) is the answer an unknown case id gets (errUnknown),
// word for word but for the id.
func sameAnswer(err, errUnknown error, id string) bool {
	a, u := status.Convert(err), status.Convert(errUnknown)
	return a.Code() == codes.NotFound && u.Code() == codes.NotFound && strings.ReplaceAll(u.Message(), unknownCase, id) == a.Message()
}

// TestNonParticipantIsToldNothing: for every journey, an agency with no step in it asks about a case
// of it through every case call. It gets exactly what an unknown case id gets, the citizen's log is
// unchanged, and each attempt is a warning in the operator's security log naming the agency and the
// case, never the citizen.
func TestNonParticipantIsToldNothing(t *testing.T) {
	var logs syncBuffer
	ts := newTestStack(t, withLogs(&logs))
	b := ts.Broker.Bundle()
	for _, j := range b.Journeys() {
		t.Run(j.ID, func(t *testing.T) {
			outsider := outsiderOf(t, ts.Registry, j)
			citizen := ts.citizenFor(j.ID)
			first := j.Steps[0]
			rule := first.Rules[0]
			c := ts.open(first.Agency, j.ID, citizen)
			before := len(ts.accessRecords(citizen))
			client := ts.agency(outsider)
			calls := map[string]func(id string) error{
				"Release": func(id string) error {
					_, err := client.Release(cw("cw-o"), &brokerv1.ReleaseRequest{CaseId: id, Authority: rule.Authority, Dataset: rule.Dataset})
					return err
				},
				"GetCase": func(id string) error {
					_, err := client.GetCase(cw("cw-o"), &brokerv1.GetCaseRequest{CaseId: id})
					return err
				},
				"CompleteStep": func(id string) error {
					_, err := client.CompleteStep(cw("cw-o"), &brokerv1.CompleteStepRequest{CaseId: id, Step: first.ID})
					return err
				},
				"CloseCase": func(id string) error {
					_, err := client.CloseCase(cw("cw-o"), &brokerv1.CloseCaseRequest{CaseId: id, Reason: "probe"})
					return err
				},
				"ExplainStep": func(id string) error {
					_, err := client.ExplainStep(cw("cw-o"), &brokerv1.ExplainStepRequest{CaseId: id})
					return err
				},
			}
			for name, call := range calls {
				if err := call(c.GetId()); !sameAnswer(err, call(unknownCase), c.GetId()) {
					t.Errorf("%s by %s: %v; an unknown case gets %v", name, outsider, err, call(unknownCase))
				}
				warned := logs.lines("component=security", "method="+name, "agency="+outsider, "case="+c.GetId())
				if len(warned) != 1 {
					t.Errorf("%s by %s: %d security log lines, want 1", name, outsider, len(warned))
				}
			}
			list, err := client.ListCases(cw("cw-o"), &brokerv1.ListCasesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(list.GetCases(), func(x *brokerv1.Case) bool { return x.GetId() == c.GetId() }) {
				t.Errorf("ListCases shows %s a case it takes no part in", outsider)
			}
			if after := len(ts.accessRecords(citizen)); after != before {
				t.Errorf("a non-participant's calls added %d records to the citizen's log", after-before)
			}
			if lines := logs.lines(citizen); len(lines) != 0 {
				t.Errorf("the citizen id is in the log: %q", lines)
			}
			// The case is unharmed: its own agency still acts at the first step.
			if _, err := ts.agency(first.Agency).GetCase(cw("cw-1"), &brokerv1.GetCaseRequest{CaseId: c.GetId()}); err != nil {
				t.Errorf("the first agency lost the case: %v", err)
			}
		})
	}
}

// TestCaseReadsLoggedBeforeAnswer: an agency of a later step cannot see the case before its step
// starts; from then on every GetCase, and every case on a ListCases page, is in the access log itself
// (ACCESS, not only the citizen's index) by the time the answer arrives, and in the citizen's records.
// With the log gone, no case is shown and no auditor listing answers.
func TestCaseReadsLoggedBeforeAnswer(t *testing.T) {
	ts := newTestStack(t)
	b := ts.Broker.Bundle()
	var (
		j  *policy.Journey
		at int
	)
	for _, cand := range b.Journeys() {
		for i, s := range cand.Steps {
			if i > 0 && j == nil && !slices.ContainsFunc(cand.Steps[:i], func(p *policy.Step) bool { return p.Agency == s.Agency }) {
				j, at = cand, i
			}
		}
	}
	if j == nil {
		t.Fatal("the policy has no journey in which a second agency joins at a later step")
	}
	later := j.Steps[at]
	citizen := ts.citizenFor(j.ID)
	c := ts.open(j.Steps[0].Agency, j.ID, citizen)
	client := ts.agency(later.Agency)

	_, errUnknown := client.GetCase(cw("cw-l"), &brokerv1.GetCaseRequest{CaseId: unknownCase})
	_, err := client.GetCase(cw("cw-l"), &brokerv1.GetCaseRequest{CaseId: c.GetId()})
	if !sameAnswer(err, errUnknown, c.GetId()) {
		t.Fatalf("GetCase before %s's step: %v; an unknown case gets %v", later.Agency, err, errUnknown)
	}
	_, errUnknown = client.ExplainStep(cw("cw-l"), &brokerv1.ExplainStepRequest{CaseId: unknownCase})
	_, err = client.ExplainStep(cw("cw-l"), &brokerv1.ExplainStepRequest{CaseId: c.GetId()})
	if !sameAnswer(err, errUnknown, c.GetId()) {
		t.Fatalf("ExplainStep before %s's step: %v; an unknown case gets %v", later.Agency, err, errUnknown)
	}
	list, err := client.ListCases(cw("cw-l"), &brokerv1.ListCasesRequest{})
	if err != nil || len(list.GetCases()) != 0 {
		t.Fatalf("ListCases before %s's step: %v, %v", later.Agency, list.GetCases(), err)
	}
	// Only the register check made before the case was opened is in the citizen's records.
	rest, checks := ts.splitChecks(ts.accessRecords(citizen))
	if len(rest) != 0 {
		t.Fatalf("%d records for reads that showed nothing: %v", len(rest), rest)
	}
	ts.wantChecks(t, checks, c.GetId())
	for _, s := range j.Steps[:at] {
		if _, err := ts.agency(s.Agency).CompleteStep(cw("cw-1"), &brokerv1.CompleteStepRequest{CaseId: c.GetId(), Step: s.ID}); err != nil {
			t.Fatal(err)
		}
	}

	// inLog reads the access log itself for case reads of the case by agency and caseworker.
	inLog := func(caseworker string) int {
		n := 0
		err := ts.Broker.AccessLog().Records(context.Background(), 1, func(_ uint64, _ int, leaf []byte) error {
			var r auditv1.AccessRecord
			if err := proto.Unmarshal(leaf, &r); err != nil {
				return err
			}
			if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ && r.GetCaseId() == c.GetId() && r.GetAgency() == later.Agency && r.GetCaseworker() == caseworker {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	got, err := client.GetCase(cw("cw-get"), &brokerv1.GetCaseRequest{CaseId: c.GetId()})
	if err != nil || got.GetCase().GetCitizenId() != citizen {
		t.Fatalf("GetCase at %s's step: %v, %v", later.Agency, got, err)
	}
	if n := inLog("cw-get"); n != 1 {
		t.Fatalf("%d case reads in the log when GetCase answered, want 1", n)
	}
	list, err = client.ListCases(cw("cw-list"), &brokerv1.ListCasesRequest{})
	if err != nil || !slices.ContainsFunc(list.GetCases(), func(x *brokerv1.Case) bool { return x.GetId() == c.GetId() }) {
		t.Fatalf("ListCases at %s's step: %v, %v", later.Agency, list, err)
	}
	if n := inLog("cw-list"); n != 1 {
		t.Fatalf("%d case reads in the log when ListCases answered, want 1", n)
	}
	var reads []*auditv1.AccessRecord
	rest, _ = ts.splitChecks(ts.accessRecords(citizen))
	for _, r := range rest {
		if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ {
			reads = append(reads, r)
		}
	}
	if len(reads) != 2 || reads[0].GetStep() != later.ID || reads[0].GetPurpose() != later.Purpose.EN || reads[0].GetDecision() != auditv1.Decision_DECISION_RELEASED {
		t.Fatalf("case reads in the citizen's records: %v", reads)
	}

	// The auditor's listing above is logged too (and left out by accessRecords).
	recs, err := ts.auditor().ListAccessRecords(context.Background(), &auditv1.ListAccessRecordsRequest{CitizenId: citizen})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(recs.GetRecords(), func(r *auditv1.AccessRecord) bool {
		return r.GetKind() == auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ && r.GetAgency() == ts.Registry.Auditors[0].ID
	}) {
		t.Fatalf("no auditor read among %v", recs.GetRecords())
	}

	// The ACCESS stream is gone (an operator's mistake): no case, no listing is shown.
	js, err := jetstream.New(ts.Broker.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "ACCESS"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(cw("cw-down"), 30*time.Second)
	defer cancel()
	got, err = client.GetCase(ctx, &brokerv1.GetCaseRequest{CaseId: c.GetId()})
	if got != nil {
		t.Fatalf("GetCase answered without a log: %v", got)
	}
	wantCode(t, err, codes.Unavailable)
	list, err = client.ListCases(ctx, &brokerv1.ListCasesRequest{})
	if list != nil {
		t.Fatalf("ListCases answered without a log: %v", list)
	}
	wantCode(t, err, codes.Unavailable)
	recs, err = ts.auditor().ListAccessRecords(ctx, &auditv1.ListAccessRecordsRequest{CitizenId: citizen})
	if recs != nil {
		t.Fatalf("ListAccessRecords answered without a log: %v", recs)
	}
	wantCode(t, err, codes.Unavailable)
}
