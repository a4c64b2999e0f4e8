package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/questions"
)

// TestCLIWalkthrough drives the `aperture` commands the way the README walk-through does: open a
// sickness-benefit case, release step 1, be refused a field of a later step, complete the step,
// release step 2's derived fact, and list the citizen's access log as the auditor.
func TestCLIWalkthrough(t *testing.T) {
	ts := newTestStack(t)
	dir := ts.dataDir
	citizen := ts.citizenFor("sickness-benefit")
	aperture := func(wantExit int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--data", dir, "--broker", ts.Broker.Addr())
		if code := run(context.Background(), args, &out, &errOut); code != wantExit {
			t.Fatalf("aperture %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}

	out := aperture(0, "case", "open", "--journey", "sickness-benefit", "--citizen", citizen)
	caseID := regexp.MustCompile(`case_[0-9a-z]{26}`).FindString(out)
	if caseID == "" || !strings.Contains(out, "open, at step register-absence") {
		t.Fatalf("open printed:\n%s", out)
	}
	out = aperture(0, "case", "explain", caseID)
	for _, want := range []string{"register-absence", "Sygedagpengeloven", "population.person"} {
		if !strings.Contains(out, want) {
			t.Fatalf("explain does not mention %q:\n%s", want, out)
		}
	}
	out = aperture(0, "case", "release", caseID, "population.person")
	if !strings.Contains(out, "acc_") || !strings.Contains(out, `"familyName"`) || strings.Contains(out, "civilStatus") {
		t.Fatalf("release printed:\n%s", out)
	}
	accessID := regexp.MustCompile(`acc_[0-9a-z]{26}`).FindString(out)

	// The citizen questions the release (in the portal; here straight into the store, as the citizen
	// API would); the caseworker lists and answers it.
	q, err := ts.Broker.Questions.Ask(context.Background(), "municipality", ts.Pseudonyms.Pseudonym(citizen).Value, accessID, "Why did you need my name?", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out = aperture(0, "case", "questions", "--open")
	if !strings.Contains(out, q.ID) || !strings.Contains(out, accessID) || !strings.Contains(out, "Why did you need my name?") || !strings.Contains(out, "open") {
		t.Fatalf("questions printed:\n%s", out)
	}
	aperture(2, "case", "answer", q.ID)
	out = aperture(0, "case", "answer", q.ID, "--text", "To write to you about your sickness benefit.")
	if !strings.Contains(out, "answered") {
		t.Fatalf("answer printed:\n%s", out)
	}
	if out = aperture(0, "case", "questions", "--open"); !strings.Contains(out, "no questions") {
		t.Fatalf("after answering, open questions:\n%s", out)
	}
	if got, err := ts.Broker.Questions.GetForAgency(context.Background(), "municipality", q.ID); err != nil || got.AnsweredBy != "municipality-cw-1" {
		t.Fatalf("answer recorded by %q (%v), want the agency's default demo caseworker", answeredBy(got), err)
	}

	out = aperture(1, "case", "release", caseID, "health.patient", "--fields", "sick_notes.work_capacity_percent")
	if !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "health.patient") {
		t.Fatalf("refusal printed:\n%s", out)
	}
	out = aperture(0, "case", "complete", caseID)
	if !strings.Contains(out, "open, at step check-employment-requirement") {
		t.Fatalf("complete printed:\n%s", out)
	}
	out = aperture(0, "case", "release", caseID, "tax.income", "--json")
	if !strings.Contains(out, `"earned_above_threshold_6_of_12"`) || strings.Contains(out, "grossDkk") {
		t.Fatalf("release --json printed:\n%s", out)
	}
	out = aperture(0, "log", "--citizen", citizen)
	// Two releases, one refusal, the case read `case complete` made to find the current step, and the
	// caseworker's answer to the question (logged before it was stored); before them the register check
	// `case open` made, named as such with the register it asked.
	want := 5 + ts.checksPerOpen()
	if !strings.Contains(out, fmt.Sprintf("%d records", want)) || !strings.Contains(out, "REFUSED DATASET_NOT_RELEASED [1]") || !strings.Contains(out, "[1] why: ") ||
		!strings.Contains(out, "QUESTION ANSWERED [2]") || !strings.Contains(out, "[2] answer to question "+q.ID) {
		t.Fatalf("log printed (want %d records):\n%s", want, out)
	}
	if reg := ts.Broker.Bundle().Registry.CitizenRegister; reg != nil && !strings.Contains(out, "(register check) "+reg.Authority+"."+reg.Dataset) {
		t.Fatalf("log does not show the register check of %s.%s:\n%s", reg.Authority, reg.Dataset, out)
	}
	// The table stays aligned: the agency column starts at the same place on every row.
	col := -1
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "municipality/"); i > 0 && regexp.MustCompile(`^\d{4}-\d{2}-\d{2} `).MatchString(line) {
			if col >= 0 && i != col {
				t.Fatalf("log columns misaligned:\n%s", out)
			}
			col = i
		}
	}
	out = aperture(0, "case", "list")
	if !strings.Contains(out, caseID) {
		t.Fatalf("list printed:\n%s", out)
	}
	// Acting as an agency that takes no part in the case.
	out = aperture(1, "case", "show", caseID, "--as", "tax")
	if !strings.Contains(out, "NotFound") {
		t.Fatalf("show as tax printed:\n%s", out)
	}
	aperture(2, "case", "release", caseID)
}

func answeredBy(q *questions.Question) string {
	if q == nil {
		return ""
	}
	return q.AnsweredBy
}
