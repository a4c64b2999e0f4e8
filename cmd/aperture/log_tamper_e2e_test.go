package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/accesslog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// releaseFor opens a case for a journey whose first step needs no consent and releases n times.
func (ts *testStack) releaseFor(n int) (citizen string, accessIDs []string) {
	ts.t.Helper()
	journey, agency, authority, dataset := releasable(ts.t, ts)
	citizen = ts.citizenFor(journey)
	c := ts.open(agency, journey, citizen)
	for range n {
		resp, err := ts.agency(agency).Release(cw("cw-tamper"), &brokerv1.ReleaseRequest{CaseId: c.GetId(), Authority: authority, Dataset: dataset})
		if err != nil {
			ts.t.Fatalf("release: %v", err)
		}
		accessIDs = append(accessIDs, resp.GetAccessId())
	}
	return citizen, accessIDs
}

// leafIndexes reads the access log itself and returns the leaf index of every record, by access id:
// records are leaves in log order.
func (ts *testStack) leafIndexes() map[string]uint64 {
	ts.t.Helper()
	out := map[string]uint64{}
	n := uint64(0)
	err := ts.Broker.AccessLog().Records(context.Background(), 1, func(_ uint64, _ int, leaf []byte) error {
		var r auditv1.AccessRecord
		if err := proto.Unmarshal(leaf, &r); err != nil {
			return err
		}
		out[r.GetId()] = n
		n++
		return nil
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	return out
}

// auditVerifyUntil runs audit verify until its output says want (the indexer and the integrator run
// in the background), and returns the last exit code and output.
func (ts *testStack) auditVerifyUntil(want string) (int, string) {
	ts.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out := ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", ts.t.TempDir()+"/trusted")
		if strings.Contains(out, want) || time.Now().After(deadline) {
			return code, out
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAuditVerifyNamesIndexTampering: what citizens and auditors are shown is the per-citizen index, a
// copy of the log. An entry deleted from it, or one replaced by altered bytes, leaves the listing
// different from the tree: audit verify names both, with the access ids.
func TestAuditVerifyNamesIndexTampering(t *testing.T) {
	ts := newTestStack(t)
	citizen, ids := ts.releaseFor(3)
	if code, out := ts.auditVerifyUntil("lists each of the"); code != 0 {
		t.Fatalf("audit verify before tampering: exit %d\n%s", code, out)
	}

	js := ts.jetStream()
	ctx := context.Background()
	subject := accesslog.IndexSubject(accesslog.DefaultIndexShards, ts.Pseudonyms.Pseudonym(citizen).Value)
	name, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]*jetstream.RawStreamMsg{}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil || m.Subject != subject {
			continue
		}
		var rec auditv1.AccessRecord
		if err := proto.Unmarshal(m.Data, &rec); err != nil {
			t.Fatalf("index entry %d: %v", seq, err)
		}
		entries[rec.GetId()] = m
	}
	deleted, altered := entries[ids[0]], entries[ids[1]]
	if deleted == nil || altered == nil {
		t.Fatalf("index entries of %v not found among %d", ids[:2], len(entries))
	}
	// Deleted: the access vanishes from the citizen's listing.
	if err := st.DeleteMsg(ctx, deleted.Sequence); err != nil {
		t.Fatal(err)
	}
	// Altered: the same headers, a record that says something else.
	var rec auditv1.AccessRecord
	if err := proto.Unmarshal(altered.Data, &rec); err != nil {
		t.Fatal(err)
	}
	rec.Purpose = "nothing to see here"
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, altered.Sequence); err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	for k, v := range altered.Header {
		if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Nats-Expected-") { // else JetStream drops the copy, or refuses it where it goes
			hdr[k] = v
		}
	}
	if ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: hdr, Data: data}); err != nil || ack.Duplicate {
		t.Fatalf("publish the altered entry: %v %v", ack, err)
	}

	code, out := ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", t.TempDir()+"/trusted")
	if code == 0 || !strings.Contains(out, "the per-citizen index does not match the log") {
		t.Fatalf("audit verify after tampering: exit %d\n%s", code, out)
	}
	leaf := ts.leafIndexes()
	for _, want := range []string{fmt.Sprintf("missing: leaf %d", leaf[ids[0]]), ids[0], fmt.Sprintf("unauthentic: leaf %d", leaf[ids[1]]), ids[1]} {
		if !strings.Contains(out, want) {
			t.Errorf("audit verify does not name %q:\n%s", want, out)
		}
	}
	t.Logf("aperture audit verify:\n%s", out)
}

// TestForgedBatchHaltsIntegration: someone with write access to ACCESS publishes a well-formed batch
// without the broker's MAC. It never becomes a leaf or a listed access; the integrator halts, the
// broker's transparency health goes NOT_SERVING, and audit verify names the message.
func TestForgedBatchHaltsIntegration(t *testing.T) {
	ts := newTestStack(t)
	citizen, ids := ts.releaseFor(2)
	ts.waitSigned(uint64(len(ids)))
	health := grpc_health_v1.NewHealthClient(ts.conn("auditor", "dpo"))
	ctx := context.Background()
	check := func() grpc_health_v1.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: broker.TransparencyHealthService})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return resp.GetStatus()
	}
	if st := check(); st != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("transparency health before the forgery: %v", st)
	}

	// A copy of a genuine record, claiming another access, in a batch with no MAC.
	recs := ts.accessRecords(citizen)
	forged := proto.Clone(recs[0]).(*auditv1.AccessRecord)
	forged.Id = "acc_forged"
	forged.Purpose = "fabricated"
	leaf, err := proto.MarshalOptions{Deterministic: true}.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&auditv1.AccessBatch{Records: [][]byte{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	js := ts.jetStream()
	ack, err := js.Publish(ctx, accesslog.LogSubject, data)
	if err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(20 * time.Second)
	for check() != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("the transparency health did not go NOT_SERVING after a forged batch")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := ts.Broker.TransparencyErr(); err == nil {
		t.Fatal("TransparencyErr is nil while the health says NOT_SERVING")
	}
	for _, r := range ts.accessRecords(citizen) {
		if r.GetId() == forged.Id {
			t.Fatal("the forged record is listed")
		}
	}
	// Releases go on: every access is still durably logged, only integration stopped.
	if _, more := ts.releaseFor(1); len(more) != 1 {
		t.Fatal("no release after the forgery")
	}
	code, out := ts.cli("audit", "verify", "--nats-url", ts.nats.ClientURL(), "--trusted-checkpoint", t.TempDir()+"/trusted")
	if code == 0 || !strings.Contains(out, "is not authenticated by the broker") || !strings.Contains(out, "ACCESS message") {
		t.Fatalf("audit verify after a forged batch (ACCESS message %d): exit %d\n%s", ack.Sequence, code, out)
	}
	t.Logf("aperture audit verify:\n%s", out)
}
