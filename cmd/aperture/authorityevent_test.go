package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/aperture-gov/aperture/broker/policy"
)

// TestAuthorityEventCLI: `aperture authority event` publishes as the authority with its certificate in
// the data directory; the same --id again opens nothing new; an authority the policies do not let
// publish the type exits non-zero with the broker's reason. Event and journey from events.yaml.
func TestAuthorityEventCLI(t *testing.T) {
	ts := newTestStack(t)
	var ev *policy.LifeEvent
	for _, e := range ts.Broker.Bundle().Events() {
		if len(e.Starts) > 0 {
			ev = e
			break
		}
	}
	if ev == nil {
		t.Fatal("no life event starts a journey")
	}
	citizen := ts.Population.Featured()[0].ID
	aperture := func(wantExit int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--data", ts.dataDir, "--broker", ts.Broker.Addr())
		if code := run(context.Background(), args, &out, &errOut); code != wantExit {
			t.Fatalf("aperture %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	out := aperture(0, "authority", "event", "--as", ev.PublishedBy[0], "--type", ev.Type, "--citizen", citizen, "--id", "cli-1")
	caseID := regexp.MustCompile(`case_[0-9a-z]{26}`).FindString(out)
	if caseID == "" || !strings.Contains(out, "journey "+ev.Starts[0].Journey) || !strings.Contains(out, "published") {
		t.Fatalf("first publish printed:\n%s", out)
	}
	out = aperture(0, "authority", "event", "--as", ev.PublishedBy[0], "--type", ev.Type, "--citizen", citizen, "--id", "cli-1")
	if !strings.Contains(out, "nothing new opened") || !strings.Contains(out, caseID) {
		t.Fatalf("redelivery printed:\n%s", out)
	}
	for _, a := range ts.Registry.Authorities {
		if !ev.MayPublish(a.ID) {
			out = aperture(1, "authority", "event", "--as", a.ID, "--type", ev.Type, "--citizen", citizen)
			if !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, ev.Type) {
				t.Fatalf("refused publish printed:\n%s", out)
			}
			break
		}
	}
	aperture(2, "authority", "event", "--type", ev.Type)
}
