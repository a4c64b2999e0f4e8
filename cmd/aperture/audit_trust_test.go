package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// releaseN makes n releases on one case of the first journey whose first step needs no consent,
// and returns their access ids in order.
func (ts *testStack) releaseN(n int) []string {
	ts.t.Helper()
	for _, j := range ts.Broker.Bundle().Journeys() {
		step := j.Steps[0]
		if step.Consent != nil || len(step.Rules) == 0 {
			continue
		}
		c := ts.open(step.Agency, j.ID, ts.citizenFor(j.ID))
		var ids []string
		for range n {
			resp, err := ts.agency(step.Agency).Release(cw("cw-audit"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: step.Rules[0].Authority, Dataset: step.Rules[0].Dataset})
			if err != nil {
				ts.t.Fatalf("release: %v", err)
			}
			ids = append(ids, resp.GetAccessId())
		}
		return ids
	}
	ts.t.Fatal("no journey whose first step releases without consent")
	return nil
}

// jetStream connects to the stack's NATS as another client (the attacker with storage access).
func (ts *testStack) jetStream() jetstream.JetStream {
	ts.t.Helper()
	nc, err := ts.nats.Connect(broker.NATSOptions("e2e-storage")...)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		ts.t.Fatal(err)
	}
	return js
}

// waitSigned waits until a checkpoint covers size records.
func (ts *testStack) waitSigned(size uint64) *auditv1.GetCheckpointResponse {
	ts.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cp, err := ts.auditor().GetCheckpoint(context.Background(), &auditv1.GetCheckpointRequest{})
		if err == nil && cp.GetTreeSize() >= size {
			return cp
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("no checkpoint of size %d: %v %v", size, cp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (ts *testStack) cli(args ...string) (int, string) {
	ts.t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append(args, "--data", ts.dataDir), &out, &errOut)
	return code, out.String() + errOut.String()
}

// TestAuditTrustedCheckpoint: the history-rewrite attack of issue 11. The tree's storage is deleted
// and one record rewritten. The broker's integrator (anchored outside NATS) refuses to sign the
// rewritten tree; and when someone who holds the key signs it anyway, `audit verify` and `audit
// prove` with the checkpoint they trusted earlier fail and name it.
func TestAuditTrustedCheckpoint(t *testing.T) {
	ts := newTestStack(t)
	ids := ts.releaseN(6)
	ts.waitSigned(6)
	trustedFile := filepath.Join(t.TempDir(), "trusted")
	code, out := ts.cli("audit", "prove", ids[2], "--broker", ts.Broker.Addr(), "--trusted-checkpoint", trustedFile)
	if code != 0 || !strings.Contains(out, "on first use") {
		t.Fatalf("audit prove: exit %d\n%s", code, out)
	}
	more := ts.releaseN(3)
	ts.waitSigned(9)
	code, out = ts.cli("audit", "prove", more[0], "--broker", ts.Broker.Addr(), "--trusted-checkpoint", trustedFile)
	if code != 0 || !strings.Contains(out, "now trusting size") {
		t.Fatalf("audit prove after growth: exit %d\n%s", code, out)
	}
	code, out = ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", trustedFile)
	if code != 0 || !strings.Contains(out, "consistent with the trusted checkpoint") {
		t.Fatalf("audit verify: exit %d\n%s", code, out)
	}

	// The attack: delete the tree's storage, rewrite one record.
	js := ts.jetStream()
	ctx := context.Background()
	for _, kv := range []string{tlog.TreeBucket, tlog.LeaseBucket} {
		if err := js.DeleteKeyValue(ctx, kv); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{tlog.LeafStream, tlog.CheckpointStream} {
		if err := js.DeleteStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	keyDir := filepath.Join(ts.dataDir, "keys")
	rewriteFirstRecord(t, js, keyDir)

	signer, err := tlog.OpenLocalSigner(keyDir, "")
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := keys.OpenLocalSealer(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := accesslog.Open(ctx, js, accesslog.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	// The attacker holds every key, so they make the per-citizen index match the rewritten record.
	if _, err := log.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	tree, err := tlog.Open(ctx, js, signer.Verifier(), tlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A restarted broker's integrator has its anchor file: it rebuilds and refuses.
	in, err := tlog.StartIntegrator(ctx, tree, log, signer, tlog.IntegratorOptions{
		ID: "restarted-broker", Interval: 20 * time.Millisecond, LeaseTTL: time.Second, AnchorFile: ts.Broker.AnchorFile(),
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !in.Halted() {
		if time.Now().After(deadline) {
			t.Fatal("the anchored integrator did not refuse the rewritten history")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("anchored integrator: %v", in.Err())
	in.Close()
	if _, err := tree.LatestCheckpoint(ctx); err == nil {
		t.Fatal("a checkpoint of the rewritten history was signed")
	}

	// Someone with the key and no anchor signs the rewritten history (what the broker did before).
	rogue, err := tlog.StartIntegrator(ctx, tree, log, signer, tlog.IntegratorOptions{ID: "rogue", Interval: 20 * time.Millisecond, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rogue.Close)
	ts.waitSigned(9)

	code, out = ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", trustedFile)
	if code == 0 || !strings.Contains(out, "trusted checkpoint "+trustedFile) {
		t.Fatalf("audit verify of the rewritten log: exit %d\n%s", code, out)
	}
	t.Logf("audit verify: %s", out)
	code, out = ts.cli("audit", "verify", "--json", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", trustedFile)
	if code == 0 || !strings.Contains(out, `"ok": false`) || !strings.Contains(out, `"error": "`) {
		t.Fatalf("audit verify --json of the rewritten log: exit %d\n%s", code, out)
	}
	code, out = ts.cli("audit", "prove", more[1], "--broker", ts.Broker.Addr(), "--trusted-checkpoint", trustedFile)
	if code == 0 || !strings.Contains(out, "NOT consistent with the trusted checkpoint "+trustedFile) {
		t.Fatalf("audit prove against the rewritten log: exit %d\n%s", code, out)
	}
	t.Logf("audit prove: %s", out)
	// Without the trusted checkpoint the rewrite is invisible: that is what the file is for.
	code, out = ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", filepath.Join(t.TempDir(), "new"))
	if code != 0 {
		t.Fatalf("audit verify with nothing trusted: exit %d\n%s", code, out)
	}
}

// rewriteFirstRecord changes the purpose of the first access record, recreating ACCESS with the
// same configuration (its deny-delete flag only guards single messages).
// The attacker holds every key of the broker (checkpoint and data key) and re-seals the batch: only
// the verifiers' and the integrator's memory of earlier checkpoints can catch this.
func rewriteFirstRecord(t *testing.T, js jetstream.JetStream, keyDir string) {
	t.Helper()
	sealer, err := keys.OpenLocalSealer(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := js.Stream(ctx, accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	var batch auditv1.AccessBatch
	if err := proto.Unmarshal(msgs[0].Data, &batch); err != nil {
		t.Fatal(err)
	}
	var rec auditv1.AccessRecord
	if err := proto.Unmarshal(batch.Records[0], &rec); err != nil {
		t.Fatal(err)
	}
	rec.Purpose = "rewritten"
	batch.Records[0], _ = proto.MarshalOptions{Deterministic: true}.Marshal(&rec)
	if msgs[0].Data, err = accesslog.SealBatch(sealer, batch.Records); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, accesslog.AccessStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditProofSelfCheck: a proof built from a corrupted tile is not served: the audit API answers
// Internal naming the tile, and `audit verify` names it too. A repointed access-id lookup makes
// `audit prove` fail instead of proving another record.
func TestAuditProofSelfCheck(t *testing.T) {
	ts := newTestStack(t)
	ids := ts.releaseN(4)
	ts.waitSigned(4)
	js := ts.jetStream()
	ctx := context.Background()

	// Repoint the lookup of ids[0] to the leaf of ids[1].
	other, err := ts.Broker.Transparency().LeafByID(ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, tlog.LookupSubject(ids[0]), tlog.AppendLookup(nil, ids[0], other)); err != nil {
		t.Fatal(err)
	}
	code, out := ts.cli("audit", "prove", ids[0], "--broker", ts.Broker.Addr(), "--trusted-checkpoint", filepath.Join(t.TempDir(), "t"))
	if code == 0 || strings.Contains(out, "OK") || !strings.Contains(out, "another id") {
		t.Fatalf("audit prove with a repointed lookup: exit %d\n%s", code, out)
	}
	t.Logf("audit prove (repointed): %s", out)

	// Corrupt the stored hash of leaf 0 (the tile is partial: fewer than 256 leaves).
	kv, err := js.KeyValue(ctx, tlog.TreeBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "tile.0.0.p")
	if err != nil {
		t.Fatal(err)
	}
	tile := bytes.Clone(e.Value())
	tile[0] ^= 0xff
	if _, err := kv.Put(ctx, "tile.0.0.p", tile); err != nil {
		t.Fatal(err)
	}
	_, err = ts.auditor().GetInclusionProof(ctx, &auditv1.GetInclusionProofRequest{Leaf: &auditv1.GetInclusionProofRequest_LeafIndex{LeafIndex: 1}})
	wantCode(t, err, codes.Internal, "tile 0/0")
	t.Logf("GetInclusionProof: %v", err)
	_, err = ts.auditor().GetConsistencyProof(ctx, &auditv1.GetConsistencyProofRequest{FromSize: 1})
	wantCode(t, err, codes.Internal, "tile 0/0")
	code, out = ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", filepath.Join(t.TempDir(), "t"))
	if code == 0 || !strings.Contains(out, "tile 0/0") {
		t.Fatalf("audit verify with a corrupted tile: exit %d\n%s", code, out)
	}
	t.Logf("audit verify: %s", out)
}

// TestCheckInclusionComparesID: a broker that answers with another record's valid proof is caught by
// the client, whatever the server checked.
func TestCheckInclusionComparesID(t *testing.T) {
	rec, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&auditv1.AccessRecord{Id: "acc_other"})
	err := checkInclusion(&auditv1.GetInclusionProofResponse{Record: rec}, "acc_asked", nil)
	if err == nil || !strings.Contains(err.Error(), "not the one asked for") {
		t.Fatalf("checkInclusion: %v", err)
	}
}
