package citizen_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestListedAccessesCarryTheirLeaf: every access ListAccesses returns carries its leaf index and
// the exact leaf bytes, which are that leaf of the log and prove inclusion in a tree built over the
// log with transparency-dev/merkle alone.
func TestListedAccessesCarryTheirLeaf(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range 30 {
		who := anna
		if i%3 == 0 {
			who = bo
		}
		e.appendRecord(who, base.Add(time.Duration(i)*time.Second), "x", "", nil)
	}
	var leaves [][]byte
	if err := e.b.AccessLog().Records(context.Background(), 1, func(_ uint64, _ int, leaf []byte) error {
		leaves = append(leaves, bytes.Clone(leaf))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h := rfc6962.DefaultHasher
	tree := testonly.New(h)
	tree.AppendData(leaves...)

	got := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{PageSize: 7})
	if len(got) != 20 {
		t.Fatalf("Anna sees %d accesses, want 20", len(got))
	}
	seen := map[uint64]bool{}
	for _, a := range got {
		i := a.GetLeafIndex()
		if len(a.GetLeaf()) == 0 || i >= tree.Size() || !bytes.Equal(a.GetLeaf(), leaves[i]) || seen[i] {
			t.Fatalf("access %s: leaf %d is not its leaf of the log (or listed twice)", a.GetId(), i)
		}
		seen[i] = true
		var rec auditv1.AccessRecord
		if err := proto.Unmarshal(a.GetLeaf(), &rec); err != nil || rec.GetId() != a.GetId() {
			t.Fatalf("access %s: its leaf is record %q, %v", a.GetId(), rec.GetId(), err)
		}
		p, err := tree.InclusionProof(i, tree.Size())
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(h, i, tree.Size(), h.HashLeaf(a.GetLeaf()), p, tree.Hash()); err != nil {
			t.Fatalf("access %s as leaf %d: %v", a.GetId(), i, err)
		}
	}
}

// TestWatchedAccessCarriesItsLeaf: a streamed access carries its leaf and leaf index too.
func TestWatchedAccessCarriesItsLeaf(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendRecord(bo, time.Now(), "x", "", nil) // leaf 0 is someone else's
	ctx, cancel := context.WithTimeout(as(tokAnna), 10*time.Second)
	defer cancel()
	s, err := e.citizen().WatchAccesses(ctx, &citizenv1.WatchAccessesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Header(); err != nil {
		t.Fatal(err)
	}
	r := e.appendRecord(anna, time.Now(), "x", "", nil)
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	a := resp.GetAccess()
	var rec auditv1.AccessRecord
	if err := proto.Unmarshal(a.GetLeaf(), &rec); err != nil || a.GetId() != r.GetId() || rec.GetId() != r.GetId() || a.GetLeafIndex() != 1 {
		t.Fatalf("streamed access %s with leaf %d (%q, %v); want %s as leaf 1", a.GetId(), a.GetLeafIndex(), rec.GetId(), err, r.GetId())
	}
}
