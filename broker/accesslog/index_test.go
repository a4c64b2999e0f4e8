package accesslog_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// treeLeaves reads ACCESS directly (not through the log) and returns the leaves of the authentic
// batches in tree order, and the sequences of the others.
func treeLeaves(t *testing.T, e *env) (leaves [][]byte, unauthentic []uint64) {
	t.Helper()
	s, err := e.js.Stream(ctx(t), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx(t), seq)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := accesslog.OpenBatch(e.sealer, m.Data)
		if err != nil {
			unauthentic = append(unauthentic, seq)
			continue
		}
		leaves = append(leaves, ls...)
	}
	return leaves, unauthentic
}

// listEntries pages through a citizen's entries.
func listEntries(t *testing.T, l *accesslog.Log, p string) []accesslog.Entry {
	t.Helper()
	var all []accesslog.Entry
	token := ""
	for range 1000 {
		es, next, err := l.ListEntries(ctx(t), p, 7, token)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
		if next == "" {
			return all
		}
		token = next
	}
	t.Fatal("ListEntries never ended")
	return nil
}

// caughtUp waits until the indexer has acknowledged every batch in ACCESS.
func caughtUp(t *testing.T, l *accesslog.Log) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lag, err := l.IndexLag(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if lag.Batches == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("index lag stays at %d batches", lag.Batches)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawConn is a connection of someone with write access to NATS but not the broker's keys.
func rawConn(t *testing.T, e *env) jetstream.JetStream {
	t.Helper()
	nc, err := e.srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestForgedBatchIsNotALeaf publishes ACCESS messages that are valid AccessBatch encodings but not
// authenticated by the broker: Records stops at each with a BatchError naming it, the indexer
// counts but does not list them, and the leaves after them are numbered over authentic batches.
func TestForgedBatchIsNotALeaf(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	raw := rawConn(t, e)
	appendN := func(from, n int) {
		for i := from; i < from+n; i++ {
			if err := l.Append(ctx(t), record(i%2, fmt.Sprintf("c%d-%d", i%2, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, 3)

	forged := func(id string) []byte { return leaf(t, record(1, id)) }
	tests := []struct {
		name string
		data func() []byte
	}{
		{"no MAC", func() []byte {
			b, err := proto.Marshal(&auditv1.AccessBatch{Records: [][]byte{forged("c1-forged-nomac")}})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"MAC under another key", func() []byte {
			b, err := accesslog.SealBatch(newSealer(t), [][]byte{forged("c1-forged-otherkey")})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"MAC copied onto other records", func() []byte {
			genuine, err := accesslog.SealBatch(e.sealer, [][]byte{forged("c1-forged-template")})
			if err != nil {
				t.Fatal(err)
			}
			_, _, n := protowire.ConsumeField(genuine) // the one record
			b := protowire.AppendTag(nil, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, forged("c1-forged-swapped"))
			return append(b, genuine[n:]...)
		}},
		{"record after the MAC", func() []byte {
			b, err := accesslog.SealBatch(e.sealer, nil)
			if err != nil {
				t.Fatal(err)
			}
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			return protowire.AppendBytes(b, forged("c1-forged-after"))
		}},
	}
	var forgedSeqs []uint64
	for _, tt := range tests {
		ack, err := raw.Publish(ctx(t), accesslog.LogSubject, tt.data())
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		forgedSeqs = append(forgedSeqs, ack.Sequence)
	}
	appendN(3, 3)

	// Records: the integrator's view. It stops at every forged batch, naming it.
	from := uint64(1)
	for i, want := range forgedSeqs {
		n := 0
		err := l.Records(ctx(t), from, func(uint64, int, []byte) error { n++; return nil })
		var be *accesslog.BatchError
		if !errors.As(err, &be) || be.Seq != want || !errors.Is(err, accesslog.ErrUnauthenticBatch) {
			t.Fatalf("%s: Records from %d = %v, want BatchError{Seq: %d} wrapping ErrUnauthenticBatch", tests[i].name, from, err, want)
		}
		if i == 0 && n != 3 {
			t.Fatalf("Records passed on %d records before the forged batch, want 3", n)
		}
		from = want + 1
	}

	// The indexer skips them: six records listed, none forged, leaves numbered 0..5.
	e.waitIndexed(testShards, 6)
	caughtUp(t, l)
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().UnauthenticBatches != uint64(len(tests)) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want %d unauthentic batches counted", l.Stats(), len(tests))
		}
		time.Sleep(20 * time.Millisecond)
	}
	leaves, unauthentic := treeLeaves(t, e)
	if !slices.Equal(unauthentic, forgedSeqs) || len(leaves) != 6 {
		t.Fatalf("ACCESS: %d leaves, unauthentic %v; want 6 and %v", len(leaves), unauthentic, forgedSeqs)
	}
	seen := map[uint64]bool{}
	for c := range 2 {
		for _, en := range listEntries(t, l, pseudonym(c)) {
			if bytes.Contains(en.Leaf, []byte("forged")) {
				t.Fatalf("a forged record is listed: %s", en.Record.GetId())
			}
			if en.LeafIndex >= uint64(len(leaves)) || !bytes.Equal(leaves[en.LeafIndex], en.Leaf) || seen[en.LeafIndex] {
				t.Fatalf("record %s listed as leaf %d, which is not its leaf (or listed twice)", en.Record.GetId(), en.LeafIndex)
			}
			seen[en.LeafIndex] = true
		}
	}
	if len(seen) != 6 {
		t.Fatalf("%d leaves listed, want 6", len(seen))
	}

	rep, err := l.VerifyIndex(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !slices.Equal(rep.UnauthenticBatches, forgedSeqs) || len(rep.Differences) != 0 || rep.Leaves != 6 {
		t.Fatalf("VerifyIndex = %+v: want the forged batches named and no index difference", rep)
	}
}

// TestListingsBoundToTree: every listed record's leaf index and leaf bytes are its leaf in an RFC
// 6962 tree built (with transparency-dev/merkle only) over the log's leaves, and each proves
// inclusion against that tree's root.
func TestListingsBoundToTree(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	const citizens, perCitizen = 5, 12
	var wg sync.WaitGroup
	for c := range citizens {
		wg.Go(func() {
			for i := range perCitizen {
				if err := l.Append(ctx(t), record(c, fmt.Sprintf("c%d-%d", c, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	e.waitIndexed(testShards, citizens*perCitizen)

	var leaves [][]byte
	if err := l.Records(ctx(t), 1, func(_ uint64, _ int, lf []byte) error {
		leaves = append(leaves, bytes.Clone(lf))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	direct, _ := treeLeaves(t, e)
	if len(leaves) != citizens*perCitizen || len(direct) != len(leaves) {
		t.Fatalf("Records gave %d leaves, ACCESS holds %d, want %d", len(leaves), len(direct), citizens*perCitizen)
	}
	h := rfc6962.DefaultHasher
	tree := testonly.New(h)
	tree.AppendData(leaves...)
	size, root := tree.Size(), tree.Hash()

	listed := map[uint64]string{}
	for c := range citizens {
		for _, en := range listEntries(t, l, pseudonym(c)) {
			if en.LeafIndex >= size || !bytes.Equal(en.Leaf, leaves[en.LeafIndex]) {
				t.Fatalf("record %s: leaf %d is not the listed leaf", en.Record.GetId(), en.LeafIndex)
			}
			var rec auditv1.AccessRecord
			if err := proto.Unmarshal(en.Leaf, &rec); err != nil || !proto.Equal(&rec, en.Record) {
				t.Fatalf("record %s: the listed record is not its leaf decoded", en.Record.GetId())
			}
			p, err := tree.InclusionProof(en.LeafIndex, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(h, en.LeafIndex, size, h.HashLeaf(en.Leaf), p, root); err != nil {
				t.Fatalf("record %s as leaf %d: %v", en.Record.GetId(), en.LeafIndex, err)
			}
			if prev, dup := listed[en.LeafIndex]; dup {
				t.Fatalf("leaf %d listed for %s and %s", en.LeafIndex, prev, en.Record.GetId())
			}
			listed[en.LeafIndex] = en.Record.GetId()
		}
	}
	if uint64(len(listed)) != size {
		t.Fatalf("%d leaves listed, the tree has %d", len(listed), size)
	}
}

// indexMsg finds the index message of a leaf in its shard.
func indexMsg(t *testing.T, e *env, en accesslog.Entry) (jetstream.Stream, *jetstream.RawStreamMsg) {
	t.Helper()
	shard := accesslog.ShardOf(testShards, en.Record.GetCitizenPseudonym())
	s, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(testShards, shard))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx(t), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(accesslog.HeaderLeafIndex) == strconv.FormatUint(en.LeafIndex, 10) {
			return s, m
		}
	}
	t.Fatalf("no index message for leaf %d", en.LeafIndex)
	return nil, nil
}

// TestVerifyIndexNamesDifferences deletes one index entry, alters another and copies a third:
// VerifyIndex names each (kind, leaf, access id, shard), the listing never shows the altered one,
// and Repair makes the index equal to the log again.
func TestVerifyIndexNamesDifferences(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	for i := range 12 {
		if err := l.Append(ctx(t), record(i%3, fmt.Sprintf("c%d-%d", i%3, i))); err != nil {
			t.Fatal(err)
		}
	}
	e.waitIndexed(testShards, 12)
	caughtUp(t, l)
	if rep, err := l.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Leaves != 12 || rep.Entries != 12 {
		t.Fatalf("VerifyIndex before tampering: %+v, %v", rep, err)
	}
	ents := listEntries(t, l, pseudonym(0))
	if len(ents) != 4 {
		t.Fatalf("citizen 0 has %d entries, want 4", len(ents))
	}
	del, alt, dup := ents[0], ents[1], ents[2]
	raw := rawConn(t, e)

	// Delete.
	s, m := indexMsg(t, e, del)
	if err := s.DeleteMsg(ctx(t), m.Sequence); err != nil {
		t.Fatal(err)
	}
	// Alter: same headers (MAC included, and the server's own headers of the copy, which a reader
	// must not take for the server's), one field changed, the original removed.
	s, m = indexMsg(t, e, alt)
	changed := proto.Clone(alt.Record).(*auditv1.AccessRecord)
	changed.Caseworker = "someone-else"
	h := nats.Header{}
	for k, v := range m.Header {
		if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Nats-Expected-") { // a copy, not a check of where it goes
			h[k] = v
		}
	}
	if _, err := raw.PublishMsg(ctx(t), &nats.Msg{Subject: m.Subject, Header: h, Data: leaf(t, changed)}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx(t), m.Sequence); err != nil {
		t.Fatal(err)
	}
	// Copy a genuine entry.
	_, m = indexMsg(t, e, dup)
	h = nats.Header{}
	for k, v := range m.Header {
		if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Nats-Expected-") { // a copy, not a check of where it goes
			h[k] = v
		}
	}
	if _, err := raw.PublishMsg(ctx(t), &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}); err != nil {
		t.Fatal(err)
	}

	for _, en := range listEntries(t, l, pseudonym(0)) {
		if en.Record.GetCaseworker() == "someone-else" {
			t.Fatal("the altered entry is listed")
		}
	}
	if l.Stats().UnauthenticEntries == 0 {
		t.Fatalf("stats %+v: the altered entry was not counted", l.Stats())
	}

	rep, err := l.VerifyIndex(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	shard := func(en accesslog.Entry) int {
		return accesslog.ShardOf(testShards, en.Record.GetCitizenPseudonym())
	}
	type key struct {
		kind accesslog.DifferenceKind
		leaf uint64
		id   string
	}
	want := map[key]bool{
		{accesslog.DiffMissing, del.LeafIndex, del.Record.GetId()}:     true,
		{accesslog.DiffMissing, alt.LeafIndex, alt.Record.GetId()}:     true,
		{accesslog.DiffUnauthentic, alt.LeafIndex, alt.Record.GetId()}: true,
		{accesslog.DiffUnauthentic, dup.LeafIndex, dup.Record.GetId()}: true, // a linked entry copied elsewhere
	}
	got := map[key]bool{}
	for _, d := range rep.Differences {
		got[key{d.Kind, d.LeafIndex, d.AccessID}] = true
		if d.Shard != shard(del) {
			t.Errorf("%s: shard %d, want %d", d, d.Shard, shard(del))
		}
		t.Log(d)
	}
	if rep.OK() || len(got) != len(want) || len(rep.Differences) != len(want) {
		t.Fatalf("VerifyIndex found %v, want %v", got, want)
	}
	// An auditor's read-only view (no indexer, nothing created) finds the same.
	r, err := accesslog.OpenReader(ctx(t), e.js, accesslog.Options{Sealer: e.sealer})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rrep, err := r.VerifyIndex(ctx(t)); err != nil || fmt.Sprint(rrep) != fmt.Sprint(rep) {
		t.Fatalf("read-only VerifyIndex = %+v, %v; want %+v", rrep, err, rep)
	}
	if _, err := r.Repair(ctx(t)); !errors.Is(err, accesslog.ErrReadOnly) {
		t.Fatalf("read-only Repair: %v", err)
	}
	if err := r.Append(ctx(t), record(0, "c0-reader")); !errors.Is(err, accesslog.ErrClosed) {
		t.Fatalf("read-only Append: %v", err)
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("VerifyIndex did not name %v; found %v", k, got)
		}
	}

	if _, err := l.Repair(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if rep, err := l.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Entries != 12 {
		t.Fatalf("VerifyIndex after Repair: %+v, %v", rep, err)
	}
	var ids []string
	for _, en := range listEntries(t, l, pseudonym(0)) {
		ids = append(ids, en.Record.GetId())
	}
	slices.Sort(ids)
	if fmt.Sprint(ids) != "[c0-0 c0-3 c0-6 c0-9]" {
		t.Fatalf("after Repair citizen 0 sees %v", ids)
	}
}

// TestIndexSurvivesRestart restarts the server and the log with the indexer's consumer reset to
// the start of ACCESS (as if every ack had been lost): nothing is indexed twice, nothing skipped,
// and leaf numbering goes on where it stood.
func TestIndexSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	for i := range 20 {
		if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-%d", i%4, i))); err != nil {
			t.Fatal(err)
		}
	}
	e.waitIndexed(testShards, 20)
	l.Close()
	e.stop()
	e.restart()

	s, err := e.js.Stream(ctx(t), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConsumer(ctx(t), accesslog.IndexerConsumer); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateConsumer(ctx(t), jetstream.ConsumerConfig{
		Durable: accesslog.IndexerConsumer, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckAllPolicy,
		FilterSubject: accesslog.LogSubject, PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{"indexer"}, PinnedTTL: 5 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}

	l = e.open(accesslog.Options{})
	for i := 20; i < 30; i++ {
		if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-%d", i%4, i))); err != nil {
			t.Fatal(err)
		}
	}
	e.waitIndexed(testShards, 30)
	// Let the consumer redeliver everything it has; the index must not grow.
	caughtUp(t, l)
	e.waitIndexed(testShards, 30)
	rep, err := l.VerifyIndex(ctx(t))
	if err != nil || !rep.OK() || rep.Leaves != 30 || rep.Entries != 30 {
		t.Fatalf("VerifyIndex after restart: %+v, %v", rep, err)
	}
	at, _ := logOrder(t, l)
	for c := range 4 {
		if n := checkListed(t, l, c, at, 3); n != map[int]int{0: 8, 1: 8, 2: 7, 3: 7}[c] {
			t.Fatalf("citizen %d: %d listed", c, n)
		}
	}
}

// TestIndexFullThenRecovered fills the index (a byte limit on its stream: what a full disk does to
// it) while releases go on: every append still succeeds, the listing misses records meanwhile, and
// once there is room again every acknowledged record is listed, once, and VerifyIndex agrees.
func TestIndexFullThenRecovered(t *testing.T) {
	e := newEnv(t)
	opts := accesslog.Options{IndexShards: 1, IndexMaxBytes: 4096, PublishTimeout: time.Second}
	l := e.open(opts)
	for i := range 30 {
		if err := l.Append(ctx(t), record(i%3, fmt.Sprintf("c%d-%d", i%3, i))); err != nil {
			t.Fatalf("Append with the index full: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().IndexFailures == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: the full index never refused a write; the test proves nothing", l.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.indexMsgs(1); n >= 30 {
		t.Fatalf("the full index holds %d entries", n)
	}
	l.Close()

	opts.IndexMaxBytes = 0
	l = e.open(opts)
	e.waitIndexed(1, 30)
	caughtUp(t, l)
	rep, err := l.VerifyIndex(ctx(t))
	if err != nil || !rep.OK() || rep.Leaves != 30 {
		t.Fatalf("VerifyIndex after recovery: %+v, %v", rep, err)
	}
	total := 0
	for c := range 3 {
		total += len(listEntries(t, l, pseudonym(c)))
	}
	if total != 30 {
		t.Fatalf("%d records listed after recovery, want 30", total)
	}
}

// TestTwoReplicas: two brokers on one NATS append concurrently; one indexes at a time (the pinned
// one) and the index is exactly the log. When that broker stops, the other takes over where the
// index stands.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t)
	open := func() *accesslog.Log { return e.openReplica(accesslog.Options{IndexShards: testShards}) }
	a, b := open(), open()
	var wg sync.WaitGroup
	for r, l := range []*accesslog.Log{a, b} {
		for g := range 4 {
			wg.Go(func() {
				for i := range 25 {
					c := (g + i) % 4
					if err := l.Append(ctx(t), record(c, fmt.Sprintf("c%d-r%d-g%d-%d", c, r, g, i))); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	caughtUp(t, a)
	e.waitIndexed(testShards, 200)
	if rep, err := b.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Leaves != 200 || rep.Entries != 200 {
		t.Fatalf("VerifyIndex with two replicas: %+v, %v", rep, err)
	}

	// Stop both in turn; whichever indexed, the survivor goes on.
	a.Close()
	for i := range 20 {
		if err := b.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-after-%d", i%4, i))); err != nil {
			t.Fatal(err)
		}
	}
	caughtUp(t, b)
	e.waitIndexed(testShards, 220)
	if rep, err := b.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Leaves != 220 {
		t.Fatalf("VerifyIndex after one replica stopped: %+v, %v", rep, err)
	}
	leaves, _ := treeLeaves(t, e)
	seen := map[uint64]bool{}
	for c := range 4 {
		for _, en := range listEntries(t, b, pseudonym(c)) {
			if !bytes.Equal(leaves[en.LeafIndex], en.Leaf) || seen[en.LeafIndex] {
				t.Fatalf("record %s listed as leaf %d, which is not its leaf (or twice)", en.Record.GetId(), en.LeafIndex)
			}
			seen[en.LeafIndex] = true
		}
	}
	if len(seen) != 220 {
		t.Fatalf("%d leaves listed, want 220", len(seen))
	}
}

// TestMissingMarker opens a log whose index has entries but no position marker. Entries of the
// first batch alone are what a replica writes before its first marker (the other replica of
// TestTwoReplicas, mid-way through it): they are kept, not wiped under that replica's feet.
// Entries of later batches mean the marker was lost: the index is rebuilt from the log. Either way
// every leaf ends up listed exactly once, well within the streams' duplicate window (a rebuild
// whose entries the window swallowed would leave them missing while the marker moved past them).
func TestMissingMarker(t *testing.T) {
	tests := []struct {
		name    string
		batches int // written before the marker is lost, one record each
		rebuilt bool
	}{
		{"first batch without its marker is kept", 1, false},
		{"later batches without a marker are rebuilt", 5, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			l := e.open(accesslog.Options{})
			for i := range tc.batches {
				if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-%d", i%4, i))); err != nil {
					t.Fatal(err)
				}
			}
			e.waitIndexed(testShards, uint64(tc.batches))
			caughtUp(t, l)
			l.Close()
			created := func() []time.Time {
				var ts []time.Time
				for i := range testShards {
					s, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(testShards, i))
					if err != nil {
						t.Fatal(err)
					}
					ts = append(ts, s.CachedInfo().Created)
				}
				return ts
			}
			before := created()
			ms, err := e.js.Stream(ctx(t), accesslog.MarkerStream)
			if err != nil {
				t.Fatal(err)
			}
			if err := ms.Purge(ctx(t)); err != nil {
				t.Fatal(err)
			}

			l = e.open(accesslog.Options{})
			caughtUp(t, l)
			e.waitIndexed(testShards, uint64(tc.batches))
			if rebuilt := !slices.Equal(before, created()); rebuilt != tc.rebuilt {
				t.Fatalf("index rebuilt: %v, want %v", rebuilt, tc.rebuilt)
			}
			for i := tc.batches; i < tc.batches+8; i++ {
				if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-%d", i%4, i))); err != nil {
					t.Fatal(err)
				}
			}
			total := uint64(tc.batches + 8)
			caughtUp(t, l)
			e.waitIndexed(testShards, total)
			rep, err := l.VerifyIndex(ctx(t))
			if err != nil || !rep.OK() || rep.Leaves != total || rep.Entries != total {
				t.Fatalf("VerifyIndex after the marker was lost: %+v, %v", rep, err)
			}
			listed := 0
			for c := range 4 {
				listed += len(listEntries(t, l, pseudonym(c)))
			}
			if listed != int(total) {
				t.Fatalf("%d records listed, want %d", listed, total)
			}
		})
	}
}

// TestRestartAfterPartialGroup: an indexer writes the entries of a group of batches and then one
// marker, so a crash can leave any batches after the marker partly indexed, each shard holding a
// prefix (in log order) of its entries of the group. Reopened, the log indexes exactly what each
// shard lacks: the index ends complete with no entry twice, even when the entries have no message
// ids (a crash longer ago than the duplicate window, so JetStream's dedupe cannot hide a second
// copy), and without repair having to fix anything.
func TestRestartAfterPartialGroup(t *testing.T) {
	type at struct{ batch, idx int } // batch: 0 to 2, the group's batches after the marker
	upTo := func(a at) func(int) at { return func(int) at { return a } }
	tests := []struct {
		name string
		// cut is, per shard, the first entry the crash left out: the shard holds its entries of
		// the group before it.
		cut         func(shard int) at
		alsoWithIDs bool
	}{
		{"nothing of the group written", upTo(at{0, 0}), false},
		{"first batch partly", upTo(at{0, 3}), false},
		{"first batch whole, second partly", upTo(at{1, 2}), false},
		{"third batch partly", upTo(at{2, 4}), false},
		{"shards at different batches", func(shard int) at {
			return []at{{3, 0}, {0, 0}, {1, 4}, {2, 1}}[shard%4]
		}, true},
		{"whole group, marker not written", upTo(at{3, 0}), false},
	}
	const before, perBatch = 3, 6
	for _, tc := range tests {
		ids := []bool{false}
		if tc.alsoWithIDs {
			ids = append(ids, true) // the usual recent crash: dedupe would also drop a second copy
		}
		for _, withID := range ids {
			t.Run(fmt.Sprintf("%s/message ids %v", tc.name, withID), func(t *testing.T) {
				e := newEnv(t)
				l := e.open(accesslog.Options{})
				for i := range before {
					if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-before-%d", i%4, i))); err != nil {
						t.Fatal(err)
					}
				}
				caughtUp(t, l)
				e.waitIndexed(testShards, before)
				l.Close()

				// Three batches no indexer saw, and the entries a crashed group left of them.
				written := uint64(0)
				for b := range 3 {
					var leaves [][]byte
					var shards []int
					for j := range perBatch {
						c := (b + 2*j) % 7
						leaves = append(leaves, leaf(t, record(c, fmt.Sprintf("c%d-group-%d-%d", c, b, j))))
						shards = append(shards, accesslog.ShardOf(testShards, pseudonym(c)))
					}
					data, err := accesslog.SealBatch(e.sealer, leaves)
					if err != nil {
						t.Fatal(err)
					}
					ack, err := e.js.Publish(ctx(t), accesslog.LogSubject, data)
					if err != nil {
						t.Fatal(err)
					}
					keep := func(shard, idx int) bool {
						c := tc.cut(shard)
						return b < c.batch || b == c.batch && idx < c.idx
					}
					for j, s := range shards {
						if keep(s, j) {
							written++
						}
					}
					opts := accesslog.Options{IndexShards: testShards, Sealer: e.sealer}
					first := uint64(before + b*perBatch)
					if err := accesslog.PublishEntriesAsCrashed(ctx(t), e.js, opts, ack.Sequence, first, data, keep, withID); err != nil {
						t.Fatal(err)
					}
				}
				if got := e.indexMsgs(testShards); got != before+written {
					t.Fatalf("after the crash the index holds %d entries, want %d", got, before+written)
				}

				l = e.open(accesslog.Options{})
				total := uint64(before + 3*perBatch)
				caughtUp(t, l)
				e.waitIndexed(testShards, total)
				rep, err := l.VerifyIndex(ctx(t))
				if err != nil || !rep.OK() || rep.Leaves != total || rep.Entries != total {
					t.Fatalf("VerifyIndex after the partial group: %+v, %v", rep, err)
				}
				if st := l.Stats(); st.Repaired != 0 || st.IndexFailures != 0 {
					t.Fatalf("stats %+v: the restart rule alone should have completed the index", st)
				}
				leaves, _ := treeLeaves(t, e)
				seen := map[uint64]bool{}
				for c := range 7 {
					for _, en := range listEntries(t, l, pseudonym(c)) {
						if !bytes.Equal(leaves[en.LeafIndex], en.Leaf) || seen[en.LeafIndex] {
							t.Fatalf("record %s listed as leaf %d, which is not its leaf (or twice)", en.Record.GetId(), en.LeafIndex)
						}
						seen[en.LeafIndex] = true
					}
				}
				if uint64(len(seen)) != total {
					t.Fatalf("%d leaves listed, want %d", len(seen), total)
				}
			})
		}
	}
}

// TestRacingIndexers: two indexers index the same batch (a replica catching up with batches the
// consumer delivered to the other). One reads where the index stands; before it writes, the other
// stores some or all of the batch's entries. The first must not store them again: its entries in
// those shards are refused, and the index, completed by a restart, holds each record once.
func TestRacingIndexers(t *testing.T) {
	const before, perBatch = 3, 8
	for _, tc := range []struct {
		name string
		keep func(shard, idx int) bool // what the other writer stores first
	}{
		{"all of the batch", func(int, int) bool { return true }},
		{"the batch's first half", func(_, idx int) bool { return idx < perBatch/2 }},
		{"one entry", func(_, idx int) bool { return idx == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			l := e.open(accesslog.Options{})
			for i := range before {
				if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("c%d-before-%d", i%4, i))); err != nil {
					t.Fatal(err)
				}
			}
			caughtUp(t, l)
			e.waitIndexed(testShards, before)
			l.Close()

			var leaves [][]byte
			for j := range perBatch {
				c := j % 7
				leaves = append(leaves, leaf(t, record(c, fmt.Sprintf("c%d-raced-%d", c, j))))
			}
			data, err := accesslog.SealBatch(e.sealer, leaves)
			if err != nil {
				t.Fatal(err)
			}
			ack, err := e.js.Publish(ctx(t), accesslog.LogSubject, data)
			if err != nil {
				t.Fatal(err)
			}
			opts := accesslog.Options{IndexShards: testShards, Sealer: e.sealer}
			err = accesslog.IndexRacing(ctx(t), e.js, opts, ack.Sequence, func() error {
				return accesslog.PublishEntriesAsCrashed(ctx(t), e.js, opts, ack.Sequence, before, data, tc.keep, false)
			})
			if !errors.Is(err, accesslog.ErrUnavailable) {
				t.Fatalf("indexing the batch the other writer wrote to: %v, want its entries refused", err)
			}
			// Shards the other writer did not touch take the first indexer's entries; no shard
			// takes a record twice.
			if got := e.indexMsgs(testShards); got > before+perBatch {
				t.Fatalf("after the race the index holds %d entries for %d records", got, before+perBatch)
			}

			l = e.open(accesslog.Options{})
			total := uint64(before + perBatch)
			caughtUp(t, l)
			e.waitIndexed(testShards, total)
			rep, err := l.VerifyIndex(ctx(t))
			if err != nil || !rep.OK() || rep.Leaves != total || rep.Entries != total {
				t.Fatalf("VerifyIndex after the race: %+v, %v", rep, err)
			}
		})
	}
}

// TestIndexShardsKeptOrChanged: a new index has DefaultIndexShards shards; an index there is keeps
// its count unless another is asked for, which rebuilds it at Open; and a running log that finds the
// index re-laid out by another replica stops with ErrIndexLayout instead of rebuilding it back.
func TestIndexShardsKeptOrChanged(t *testing.T) {
	e := newEnv(t)
	indexStreams := func() map[string]time.Time {
		t.Helper()
		created := map[string]time.Time{}
		lister := e.js.ListStreams(ctx(t), jetstream.WithStreamListSubject(accesslog.IndexSubjectPrefix+">"))
		for info := range lister.Info() {
			created[info.Config.Name] = info.Created
		}
		if err := lister.Err(); err != nil {
			t.Fatal(err)
		}
		return created
	}
	listed := func(l *accesslog.Log, want int) {
		t.Helper()
		n := 0
		for c := range 4 {
			n += len(listEntries(t, l, pseudonym(c)))
		}
		if n != want {
			t.Fatalf("%d entries listed, want %d", n, want)
		}
	}
	appendN := func(l *accesslog.Log, from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if err := l.Append(ctx(t), record(i%4, fmt.Sprintf("r%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		caughtUp(t, l)
	}

	l := e.open(accesslog.Options{IndexShards: 3})
	appendN(l, 0, 12)
	before := indexStreams()
	if len(before) != 3 {
		t.Fatalf("%d index streams, want 3", len(before))
	}
	l.Close()

	// Zero keeps the index there is: no rebuild, the same streams.
	l, err := accesslog.Open(ctx(t), e.js, accesslog.Options{Sealer: e.sealer})
	if err != nil {
		t.Fatal(err)
	}
	if after := indexStreams(); !maps.Equal(after, before) {
		t.Fatalf("index streams changed when reopened without a shard count: %v, were %v", after, before)
	}
	appendN(l, 12, 4)
	listed(l, 16)
	l.Close()

	// Another count rebuilds it with that many shards.
	a := e.open(accesslog.Options{IndexShards: 5})
	if got := len(indexStreams()); got != 5 {
		t.Fatalf("%d index streams after asking for 5, want 5", got)
	}
	caughtUp(t, a)
	e.waitIndexed(5, 16)
	listed(a, 16)

	// A replica started with 2 re-lays it out under a, which must not rebuild it back. It creates
	// the new layout before it deletes the old, so a never finds no index at all (which it would
	// lay out again): JetStream's advisories give the order.
	advisories, err := e.nc.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.>")
	if err != nil {
		t.Fatal(err)
	}
	defer advisories.Unsubscribe()
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	b := e.open(accesslog.Options{IndexShards: 2})
	e.waitIndexed(2, 16)
	var events []string // "created 2" / "deleted 5", in order
	for {
		m, err := advisories.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		tokens := strings.Split(m.Subject, ".") // $JS.EVENT.ADVISORY.STREAM.<ACTION>.<stream>
		for n := range 6 {
			for i := range n {
				if tokens[5] == accesslog.IndexStreamName(n, i) && (tokens[4] == "CREATED" || tokens[4] == "DELETED") {
					events = append(events, fmt.Sprintf("%s %d", strings.ToLower(tokens[4]), n))
				}
			}
		}
	}
	want := []string{"created 2", "created 2", "deleted 5", "deleted 5", "deleted 5", "deleted 5", "deleted 5"}
	if !slices.Equal(events, want) {
		t.Fatalf("relaying out 5 shards as 2: %v, want %v", events, want)
	}
	laidOut := indexStreams()
	if err := accesslog.EnsureIndexStreams(ctx(t), a); !errors.Is(err, accesslog.ErrIndexLayout) {
		t.Fatalf("a running log with 5 shards finding 2: %v, want ErrIndexLayout", err)
	}
	if now := indexStreams(); !maps.Equal(now, laidOut) {
		t.Fatalf("the running log changed the index: %v, was %v", now, laidOut)
	}
	listed(b, 16)

	// A new index has the default count.
	f := newEnv(t)
	fl, err := accesslog.Open(ctx(t), f.js, accesslog.Options{Sealer: f.sealer})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	n := 0
	for range f.js.StreamNames(ctx(t), jetstream.WithStreamListSubject(accesslog.IndexSubjectPrefix+">")).Name() {
		n++
	}
	if n != accesslog.DefaultIndexShards {
		t.Fatalf("a new index has %d shards, want %d", n, accesslog.DefaultIndexShards)
	}

	// An index of the format before shard counts were in the names (ACCESS_INDEX_<shard>) keeps its
	// count and is rebuilt under the new names.
	g := newEnv(t)
	for i := range 3 {
		prefix := fmt.Sprintf("%s%02x.", accesslog.IndexSubjectPrefix, i)
		if _, err := g.js.CreateStream(ctx(t), jetstream.StreamConfig{Name: fmt.Sprintf("%s_%02x", accesslog.IndexStream, i),
			Subjects: []string{prefix + "*"}, Metadata: map[string]string{accesslog.MetaShards: "3"}}); err != nil {
			t.Fatal(err)
		}
	}
	gl, err := accesslog.Open(ctx(t), g.js, accesslog.Options{Sealer: g.sealer})
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	var names []string
	for name := range g.js.StreamNames(ctx(t), jetstream.WithStreamListSubject(accesslog.IndexSubjectPrefix+">")).Name() {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{accesslog.IndexStreamName(3, 0), accesslog.IndexStreamName(3, 1), accesslog.IndexStreamName(3, 2)}; !slices.Equal(names, want) {
		t.Fatalf("index streams after opening an index of the earlier format: %v, want %v", names, want)
	}
}

// TestStaleReplicaAfterRelayout: one replica indexes under load while another starts with another
// shard count, which re-lays the index out. The index's streams and subjects name their shard
// count, so the running replica cannot write a single entry into the new layout (where no listing
// looks for it): its writes and listings fail, its index check says why, and the new layout ends
// up with exactly one entry per leaf, each where its citizen's listing finds it.
func TestStaleReplicaAfterRelayout(t *testing.T) {
	const oldShards, newShards = 5, 2
	// Citizens whose old shard is also a shard of the new layout, but not theirs there: an entry
	// written under the old count would land in a stream of the new layout, in the wrong place.
	var citizens []int
	for c := 0; len(citizens) < 8; c++ {
		p := pseudonym(c)
		if o := accesslog.ShardOf(oldShards, p); o < newShards && o != accesslog.ShardOf(newShards, p) {
			citizens = append(citizens, c)
		}
	}
	e := newEnv(t)
	a := e.openReplica(accesslog.Options{IndexShards: oldShards})

	var (
		stop     atomic.Bool
		appended atomic.Uint64
		wg       sync.WaitGroup
	)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				c := citizens[(g+i)%len(citizens)]
				if err := a.Append(ctx(t), record(c, fmt.Sprintf("c%d-g%d-%d", c, g, i))); err != nil {
					t.Error(err)
					return
				}
				appended.Add(1)
			}
		})
	}
	appendedReach := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for appended.Load() < n {
			if time.Now().After(deadline) || t.Failed() {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("%d records appended, want %d", appended.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	appendedReach(200)
	b := e.openReplica(accesslog.Options{IndexShards: newShards})
	appendedReach(appended.Load() + 400)
	stop.Store(true)
	wg.Wait()

	// a still runs with 5 shards: it lists nothing rather than a wrong list, and says why.
	if err := a.CheckIndex(ctx(t)); !errors.Is(err, accesslog.ErrIndexLayout) {
		t.Fatalf("CheckIndex of the replica with the old count: %v, want ErrIndexLayout", err)
	}
	if err := b.CheckIndex(ctx(t)); err != nil {
		t.Fatalf("CheckIndex of the replica with the new count: %v", err)
	}
	for _, c := range citizens {
		if entries, _, err := a.ListEntries(ctx(t), pseudonym(c), 10, ""); err == nil {
			t.Fatalf("the replica with the old count listed %d entries of citizen %d, want an error", len(entries), c)
		}
	}
	a.Close() // b takes over indexing
	total := appended.Load()
	caughtUp(t, b)
	e.waitIndexed(newShards, total)
	if rep, err := b.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Leaves != total || rep.Entries != total {
		t.Fatalf("VerifyIndex after the relayout: %+v, %v; want %d leaves and entries, no differences", rep, err, total)
	}
	var names, want []string
	for name := range e.js.StreamNames(ctx(t), jetstream.WithStreamListSubject(accesslog.IndexSubjectPrefix+">")).Name() {
		names = append(names, name)
	}
	for i := range newShards {
		want = append(want, accesslog.IndexStreamName(newShards, i))
	}
	if slices.Sort(names); !slices.Equal(names, want) {
		t.Fatalf("index streams %v, want %v", names, want)
	}
	var listed uint64
	for _, c := range citizens {
		listed += uint64(len(listAll(t, b, pseudonym(c), accesslog.MaxPageSize)))
	}
	if listed != total {
		t.Fatalf("%d records listed, want %d", listed, total)
	}
}

// TestIndexerStuckOnAnotherLayout: an indexer that must recreate a shard while streams of another
// layout are there does not touch them and stops; CheckIndex says so (while shard 0 is still
// there) until the other layout is gone, and then the index is rebuilt and complete.
func TestIndexerStuckOnAnotherLayout(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	citizen := 0
	for accesslog.ShardOf(testShards, pseudonym(citizen)) == 0 {
		citizen++
	}
	for i := range 8 {
		if err := l.Append(ctx(t), record(citizen, fmt.Sprintf("r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	caughtUp(t, l)
	e.waitIndexed(testShards, 8)

	const otherShards = 7
	other := accesslog.IndexStreamName(otherShards, 0)
	if _, err := e.js.CreateStream(ctx(t), jetstream.StreamConfig{Name: other,
		Subjects: []string{accesslog.IndexShardPrefix(otherShards, 0) + "*"},
		Metadata: map[string]string{accesslog.MetaShards: strconv.Itoa(otherShards)}}); err != nil {
		t.Fatal(err)
	}
	if err := l.CheckIndex(ctx(t)); err != nil {
		t.Fatalf("CheckIndex before the indexer met the other layout: %v", err)
	}
	if err := e.js.DeleteStream(ctx(t), accesslog.IndexStreamName(testShards, accesslog.ShardOf(testShards, pseudonym(citizen)))); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx(t), record(citizen, "r8")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for err := l.CheckIndex(ctx(t)); !errors.Is(err, accesslog.ErrIndexLayout); err = l.CheckIndex(ctx(t)) {
		if time.Now().After(deadline) {
			t.Fatalf("CheckIndex with the indexer unable to recreate its shard: %v, want ErrIndexLayout", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.js.Stream(ctx(t), other); err != nil {
		t.Fatalf("the running indexer touched the other layout: %v", err)
	}

	if err := e.js.DeleteStream(ctx(t), other); err != nil {
		t.Fatal(err)
	}
	for err := l.CheckIndex(ctx(t)); err != nil; err = l.CheckIndex(ctx(t)) {
		if time.Now().After(deadline.Add(15 * time.Second)) {
			t.Fatalf("CheckIndex after the other layout went: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.waitIndexed(testShards, 9)
	if n := len(listEntries(t, l, pseudonym(citizen))); n != 9 {
		t.Fatalf("%d entries listed after the rebuild, want 9", n)
	}
}

// TestIndexGroupWindow: within the group window, batches that arrive after a group's first are
// indexed with it (one position marker for the lot: on a cluster, one Raft commit per shard and
// group instead of per batch); the window is on by default only for replicated streams.
func TestIndexGroupWindow(t *testing.T) {
	for _, tc := range []struct {
		opts accesslog.Options
		want time.Duration
	}{
		{accesslog.Options{}, 0},
		{accesslog.Options{Replicas: 1}, 0},
		{accesslog.Options{Replicas: 3}, accesslog.DefaultIndexGroupWindow},
		{accesslog.Options{Replicas: 3, IndexGroupWindow: -1}, 0},
		{accesslog.Options{Replicas: 1, IndexGroupWindow: time.Second}, time.Second},
	} {
		if got := accesslog.WithDefaults(tc.opts).IndexGroupWindow; got != tc.want {
			t.Errorf("replicas %d, window %s: got %s, want %s", tc.opts.Replicas, tc.opts.IndexGroupWindow, got, tc.want)
		}
	}

	e := newEnv(t)
	l := e.open(accesslog.Options{IndexGroupWindow: 1500 * time.Millisecond})
	const batches = 5
	for i := range batches {
		if i > 0 {
			time.Sleep(20 * time.Millisecond) // each record its own batch, each batch well after the last
		}
		if err := l.Append(ctx(t), record(i, fmt.Sprintf("w-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.waitIndexed(testShards, batches)
	if got := listEntries(t, l, pseudonym(batches-1)); len(got) != 1 {
		t.Fatalf("the last citizen has %d entries listed, want 1", len(got))
	}
	// The first batch is indexed alone (its marker must exist before entries of later batches);
	// the other four arrived within the window of the second and share one marker.
	s, err := e.js.Stream(ctx(t), accesslog.MarkerStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.LastSeq; got != 2 {
		t.Fatalf("%d position markers written for %d batches, want 2 (batch 1, then batches 2-%d as one group)", got, batches, batches)
	}
}
