package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/witness"
)

// TestAuditWitnessPolicy runs audit verify and audit prove with the witness policy that aperture dev
// writes: both accept only a log that the quorum of witnesses cosigned, and name the witnesses; a
// policy the cosignatures do not meet fails both.
func TestAuditWitnessPolicy(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.Witnesses = 2 })
	journey, agency, authority, dataset := releasable(t, ts)
	aperture := func(args ...string) (int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(context.Background(), append(args, "--data", ts.dataDir), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	client := func(args ...string) (int, string) {
		return aperture(append(args, "--broker", ts.Broker.Addr(), "--as", agency)...)
	}
	// The auditor is the audit commands' default identity.
	auditor := func(args ...string) (int, string) { return aperture(append(args, "--broker", ts.Broker.Addr())...) }
	policy := devWitnessPolicyFile(ts.dataDir)
	if _, err := os.Stat(policy); err != nil {
		t.Fatalf("aperture dev wrote no witness policy: %v", err)
	}

	code, out := client("case", "open", "--journey", journey, "--citizen", ts.citizenFor(journey))
	caseID := regexp.MustCompile(`case_[0-9a-z]{26}`).FindString(out)
	if code != 0 || caseID == "" {
		t.Fatalf("open: exit %d\n%s", code, out)
	}
	code, out = client("case", "release", caseID, authority+"."+dataset)
	accessID := regexp.MustCompile(`acc_[0-9a-z]+`).FindString(out)
	if code != 0 || accessID == "" {
		t.Fatalf("release: exit %d\n%s", code, out)
	}

	var names []string
	for _, w := range ts.Witnesses {
		names = append(names, w.Name)
	}
	cosignedBy := "cosigned by " + strings.Join(names, ", ")
	trusted := filepath.Join(t.TempDir(), "trusted")
	// Signed within a checkpoint interval, cosigned right after: poll with a generous deadline.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out = auditor("audit", "prove", accessID, "--witness-policy", policy, "--trusted-checkpoint", trusted)
		if code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, "OK: the record is included in the checkpoint of size") || !strings.Contains(out, cosignedBy) {
		t.Fatalf("audit prove --witness-policy: exit %d\n%s", code, out)
	}
	code, out = aperture("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--witness-policy", policy, "--trusted-checkpoint", trusted)
	if code != 0 || !strings.Contains(out, "OK: the log extends the checkpoint of size") || !strings.Contains(out, cosignedBy) {
		t.Fatalf("audit verify --witness-policy: exit %d\n%s", code, out)
	}

	// A policy that also needs a witness that never saw this log is not met.
	_, vkey, err := witness.GenerateKey("absent.example/witness")
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(policy)
	if err != nil {
		t.Fatal(err)
	}
	strict := regexp.MustCompile(`(?m)^group dev all (.*)$`).ReplaceAllString(string(body), "group dev all $1 absent")
	strict = "witness absent " + vkey + "\n" + strict
	strictFile := filepath.Join(t.TempDir(), "strict-policy")
	if err := os.WriteFile(strictFile, []byte(strict), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = auditor("audit", "prove", accessID, "--witness-policy", strictFile, "--trusted-checkpoint", trusted)
	if code == 0 || !strings.Contains(out, "does not meet the witness policy") {
		t.Fatalf("audit prove with an unmet policy: exit %d\n%s", code, out)
	}
	code, out = aperture("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--witness-policy", strictFile, "--trusted-checkpoint", trusted)
	if code == 0 || !strings.Contains(out, "does not meet the witness policy") {
		t.Fatalf("audit verify with an unmet policy: exit %d\n%s", code, out)
	}
}
