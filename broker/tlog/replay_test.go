package tlog_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// TestReplay: Replay hands over exactly the checkpoint's leaves, in order, with or without the data
// key, and fails when the stored records are not the ones the checkpoint signed or are too few.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	e.append(t, 40)
	e.integrator(t, "a")
	cp := e.waitCheckpoint(t, 40)
	e.append(t, 5) // beyond the checkpoint: not replayed
	for _, sealer := range []bool{true, false} {
		var ids []string
		var s accesslog.Sealer
		if sealer {
			s = testSealer
		}
		err := tlog.Replay(ctx(t), e.js, cp, s, func(i uint64, leaf []byte) error {
			var r auditv1.AccessRecord
			if err := proto.Unmarshal(leaf, &r); err != nil {
				return err
			}
			if i != uint64(len(ids)) {
				t.Fatalf("leaf index %d after %d leaves", i, len(ids))
			}
			ids = append(ids, r.GetId())
			return nil
		})
		if err != nil || uint64(len(ids)) != cp.Size {
			t.Fatalf("Replay (sealer %v): %d leaves, %v", sealer, len(ids), err)
		}
	}
	// A checkpoint claiming more records than stored.
	big := cp
	big.Size = 1000
	if err := tlog.Replay(ctx(t), e.js, big, nil, func(uint64, []byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "records are missing") {
		t.Fatalf("Replay past the end: %v", err)
	}
	// A stored record rewritten: the recomputed root differs from the signed one.
	rewriteStream(t, e.js, "ACCESS", func(msgs [][]byte) [][]byte {
		recs := batchRecords(t, msgs[0])
		var r auditv1.AccessRecord
		if err := proto.Unmarshal(recs[0], &r); err != nil {
			t.Fatal(err)
		}
		r.Agency = "someone-else"
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		recs[0] = b
		msgs[0] = batchOf(t, recs)
		return msgs
	})
	err := tlog.Replay(ctx(t), e.js, cp, nil, func(uint64, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not the ones signed") {
		t.Fatalf("Replay of a rewritten record: %v", err)
	}
}
