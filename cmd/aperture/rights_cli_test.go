package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// TestCLIBreakGlassReview drives the README's break-glass walk-through: a caseworker of the agency a
// break-glass rule names releases with `aperture case break-glass`; the auditor lists it with `aperture
// audit review list`, closes it, and it leaves the open queue; bad input is a usage error.
func TestCLIBreakGlassReview(t *testing.T) {
	ts := newTestStack(t)
	j, bg := breakGlassJourney(t, ts.Broker.Bundle())
	rule := bg.Rules[0]
	aperture := func(wantExit int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--data", ts.dataDir, "--broker", ts.Broker.Addr())
		if code := run(context.Background(), args, &out, &errOut); code != wantExit {
			t.Fatalf("aperture %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	out := aperture(0, "case", "open", "--as", j.Steps[0].Agency, "--journey", j.ID, "--citizen", ts.citizenFor(j.ID))
	caseID := regexp.MustCompile(`case_[0-9a-z]{26}`).FindString(out)
	dataset := rule.Authority + "." + rule.Dataset
	aperture(2, "case", "break-glass", caseID, dataset, "--as", bg.Agency)
	out = aperture(0, "case", "break-glass", caseID, dataset, "--as", bg.Agency, "--reason-code", bg.Reasons[0].Code,
		"--justification", "Unconscious newborn; parents must be told at once.")
	accessID := regexp.MustCompile(`acc_[0-9a-z]{26}`).FindString(out)
	if accessID == "" || !strings.Contains(out, "BREAK-GLASS") || !strings.Contains(out, bg.LegalBasis) {
		t.Fatalf("break-glass printed:\n%s", out)
	}
	out = aperture(0, "audit", "review", "list")
	if !strings.Contains(out, accessID) || !strings.Contains(out, bg.Reasons[0].Code) || !strings.Contains(out, "Unconscious newborn") {
		t.Fatalf("review list printed:\n%s", out)
	}
	aperture(2, "audit", "review", "close", accessID, "--outcome", "maybe", "--note", "x")
	out = aperture(0, "audit", "review", "close", accessID, "--outcome", "justified", "--note", "Confirmed with the ward.")
	if !strings.Contains(out, "closed: justified") {
		t.Fatalf("review close printed:\n%s", out)
	}
	if out = aperture(0, "audit", "review", "list"); !strings.Contains(out, "no break-glass releases waiting") {
		t.Fatalf("after closing, the queue:\n%s", out)
	}
	if out = aperture(0, "audit", "review", "list", "--all"); !strings.Contains(out, "justified by dpo") {
		t.Fatalf("review list --all printed:\n%s", out)
	}
	out = aperture(1, "audit", "review", "close", accessID, "--outcome", "not-justified", "--note", "again")
	if !strings.Contains(out, "FailedPrecondition") {
		t.Fatalf("second close printed:\n%s", out)
	}
}
