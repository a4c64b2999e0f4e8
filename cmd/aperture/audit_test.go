package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// TestAuditCLI releases data, then proves the access is in a signed checkpoint and verifies the
// whole log from storage, as an auditor would with `aperture audit`.
func TestAuditCLI(t *testing.T) {
	ts := newTestStack(t)
	citizen := ts.citizenFor("sickness-benefit")
	aperture := func(args ...string) (int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(context.Background(), append(args, "--data", ts.dataDir), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	client := func(args ...string) (int, string) { return aperture(append(args, "--broker", ts.Broker.Addr())...) }
	trustedFile := filepath.Join(t.TempDir(), "trusted-checkpoint")

	code, out := client("case", "open", "--journey", "sickness-benefit", "--citizen", citizen)
	caseID := regexp.MustCompile(`case_[0-9a-z]{26}`).FindString(out)
	if code != 0 || caseID == "" {
		t.Fatalf("open: exit %d\n%s", code, out)
	}
	code, out = client("case", "release", caseID, "population.person")
	accessID := regexp.MustCompile(`acc_[0-9a-z]+`).FindString(out)
	if code != 0 || accessID == "" {
		t.Fatalf("release: exit %d\n%s", code, out)
	}

	// The record is in a checkpoint within about one checkpoint interval (1s).
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out = client("audit", "prove", accessID, "--trusted-checkpoint", trustedFile)
		if code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, "OK: the record is included in the signed checkpoint") || !regexp.MustCompile(`aperture\.local/access-log/[0-9a-f]{8}\n`).MatchString(out) || !strings.Contains(out, "on first use") {
		t.Fatalf("audit prove: exit %d\n%s", code, out)
	}
	t.Logf("aperture audit prove %s:\n%s", accessID, out)

	code, out = aperture("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", trustedFile)
	if code != 0 || !strings.Contains(out, "OK: ") || !strings.Contains(out, "consistent with the trusted checkpoint") {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}
	t.Logf("aperture audit verify:\n%s", out)
	code, out = aperture("audit", "verify", "--json", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", trustedFile)
	var rep struct {
		OK      bool   `json:"ok"`
		Records uint64 `json:"records"`
		Latest  struct {
			Size uint64 `json:"size"`
			Root string `json:"root_hex"`
		} `json:"latest"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.OK || rep.Records == 0 || rep.Latest.Size == 0 || len(rep.Latest.Root) != 64 {
		t.Fatalf("audit verify --json: exit %d, %v\n%s", code, err, out)
	}

	// The API, as a third party uses it.
	audit := ts.auditor()
	cp, err := audit.GetCheckpoint(context.Background(), &auditv1.GetCheckpointRequest{})
	if err != nil || cp.GetTreeSize() < 1 || !strings.HasPrefix(cp.GetOrigin(), "aperture.local/access-log/") || len(cp.GetRootHash()) != 32 {
		t.Fatalf("GetCheckpoint: %v %v", cp, err)
	}
	cons, err := audit.GetConsistencyProof(context.Background(), &auditv1.GetConsistencyProofRequest{FromSize: 1})
	if err != nil || cons.GetToSize() != cp.GetTreeSize() || len(cons.GetCheckpoint()) == 0 {
		t.Fatalf("GetConsistencyProof: %v %v", cons, err)
	}
	incl, err := audit.GetInclusionProof(context.Background(), &auditv1.GetInclusionProofRequest{Leaf: &auditv1.GetInclusionProofRequest_LeafIndex{LeafIndex: 0}})
	if err != nil || len(incl.GetLeafHash()) != 32 {
		t.Fatalf("GetInclusionProof by index: %v %v", incl, err)
	}
	_, err = audit.GetConsistencyProof(context.Background(), &auditv1.GetConsistencyProofRequest{FromSize: 5, ToSize: 2})
	wantCode(t, err, codes.InvalidArgument, "to_size")
	_, err = audit.GetConsistencyProof(context.Background(), &auditv1.GetConsistencyProofRequest{FromSize: 1, ToSize: 1 << 40})
	wantCode(t, err, codes.InvalidArgument, "tree size")
	_, err = audit.GetInclusionProof(context.Background(), &auditv1.GetInclusionProofRequest{})
	wantCode(t, err, codes.InvalidArgument, "leaf")
	// Agencies are not auditors.
	_, err = auditv1.NewAuditServiceClient(ts.conn("agency", "municipality")).GetCheckpoint(cw("x1"), &auditv1.GetCheckpointRequest{})
	wantCode(t, err, codes.PermissionDenied)
	code, out = client("audit", "prove", "acc_doesnotexist", "--trusted-checkpoint", trustedFile)
	if code != 1 || !strings.Contains(out, "NotFound") {
		t.Fatalf("audit prove of an unknown id: exit %d\n%s", code, out)
	}
	if code, out = aperture("audit", "bogus"); code != 2 {
		t.Fatalf("audit bogus: exit %d\n%s", code, out)
	}
}
