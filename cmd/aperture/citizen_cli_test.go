package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// TestCLICitizen drives the README's citizen walk-through: a demo citizen signs in through the dev
// stack's development login and, with `aperture citizen`, lists what can be switched off, switches one
// optional step off (the broker then refuses the release at it), cannot switch off a mandatory step
// (told which law requires it), switches it on again, lists consents, and reads their own access log in
// the portal's words, in English and Danish; mistakes in the command line exit 2, and a CPR number
// that is not a demo citizen cannot sign in and is not echoed.
func TestCLICitizen(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.PortalListen, o.CitizenListen = "127.0.0.1:0", "127.0.0.1:0" })
	b := ts.Broker.Bundle()
	j, idx, mand := optionalOwnStep(t, b)
	step, mandatory := j.Steps[idx], j.Steps[mand]
	cj, cs := consentStep(t, b)
	citizen := ts.Population.Featured()[0].ID
	c := ts.open(j.Steps[0].Agency, j.ID, citizen)
	ts.advance(j, c, idx)
	ts.grantConsent(citizen, cj.ID, cs.ID)
	release := func() error {
		_, err := ts.agency(step.Agency).Release(cw("cw-5"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: step.Rules[0].Authority, Dataset: step.Rules[0].Dataset})
		return err
	}
	aperture := func(wantExit int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(append([]string{"citizen"}, args...), "--data", ts.dataDir,
			"--portal", strings.TrimPrefix(ts.Portal.base, "http://"), "--citizen-api", ts.Broker.CitizenAddr())
		if code := run(context.Background(), args, &out, &errOut); code != wantExit {
			t.Fatalf("aperture %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
		}
		t.Logf("aperture %s\n%s%s", strings.Join(args[:len(args)-6], " "), out.String(), errOut.String()) // what a citizen reads, with -v
		return out.String() + errOut.String()
	}
	as := func(wantExit int, args ...string) string {
		t.Helper()
		return aperture(wantExit, append(args, "--citizen", citizen)...)
	}
	wantAll := func(what, out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s does not say %q:\n%s", what, w, out)
			}
		}
	}

	out := as(0, "switches", "list")
	wantAll("switches list", out, j.Title.EN, step.Title.EN, step.Optional.Why.EN, mandatory.LegalBasis, "cannot be switched off")
	out = as(0, "switches", "off", j.ID, "--step", step.ID)
	wantAll("switches off --step", out, "Switched off", j.Title.EN, step.Title.EN)
	wantReason(t, release(), "SWITCHED_OFF", "journey", j.ID, "step", step.ID, "scope", "step")
	out = as(0, "switches", "list", "--lang", "da")
	wantAll("switches list --lang da", out, j.Title.In("da"), step.Optional.Why.In("da"), "Dit valg: Slået fra siden")

	out = as(1, "switches", "off", j.ID, "--step", mandatory.ID)
	wantAll("switching off a mandatory step", out, "FailedPrecondition", "required by law", mandatory.LegalBasis)

	// The log: the refusal in the citizen's words, with labels and a formatted date, no codes or ids.
	out = as(0, "log")
	wantAll("log", out, "You have switched this off, so nothing was shared.", j.Title.EN, "Why: ", "Law: ")
	for _, bad := range []string{"REFUSAL_REASON", "SWITCHED_OFF", "acc_", c.GetId(), citizen} {
		if strings.Contains(out, bad) {
			t.Errorf("log shows %q:\n%s", bad, out)
		}
	}
	out = as(0, "log", "--lang", "da")
	wantAll("log --lang da", out, "Du har slået dette fra, så intet blev delt.", j.Title.In("da"), "Lov: ")

	as(0, "switches", "on", j.ID, "--step", step.ID)
	if err := release(); err != nil {
		t.Fatalf("switched on again with the CLI, the release is refused: %v", err)
	}
	out = as(0, "switches", "off", "--all")
	wantAll("switches off --all", out, "All optional steps, in every matter: Switched off")
	wantReason(t, release(), "SWITCHED_OFF", "scope", "all")
	as(0, "switches", "on", "--all")

	if out = as(0, "switches", "list", "--json"); !strings.Contains(out, `"journeys"`) || !strings.Contains(out, `"optionalWhy"`) {
		t.Errorf("switches list --json:\n%s", out)
	}
	out = as(0, "consents", "list")
	wantAll("consents list", out, cj.Title.EN, cs.Title.EN, "Given", "Valid until")

	// Usage errors: exit 2, nothing signed in.
	aperture(2, "switches", "list")
	as(2, "switches", "list", "--lang", "fr")
	as(2, "switches", "off")
	as(2, "switches", "off", j.ID, "--all")
	as(2, "switches", "list", "--step", step.ID)
	as(2, "letters")
	// Not a demo citizen: refused, without the number in the message.
	stranger := "0000000000"
	if stranger == citizen {
		t.Fatal("the stranger is a demo citizen")
	}
	out = aperture(1, "log", "--citizen", stranger)
	wantAll("a stranger's sign-in", out, "not one of the development stack's demo citizens")
	if strings.Contains(out, stranger) {
		t.Errorf("the refusal echoes the CPR number:\n%s", out)
	}
}
