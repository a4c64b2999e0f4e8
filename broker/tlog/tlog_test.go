package tlog_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// recordID is record i's access id, in the form of package ids: created 10 ms after record i-1's, so
// a hundred ids share a second of the tree's access-id lookup.
func recordID(i int) string { return accessIDAt(1_700_000_000_000+10*int64(i), uint64(i)) }

// accessIDAt is an access id as package ids makes it, created at Unix millisecond ms, with n in
// place of its random bits (so the same arguments give the same id).
func accessIDAt(ms int64, n uint64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(ms)<<16)
	binary.BigEndian.PutUint64(b[8:], n)
	return ids.FromBytes("acc", b)
}

func record(i int) *auditv1.AccessRecord {
	return &auditv1.AccessRecord{
		Id: recordID(i), Time: timestamppb.New(time.Unix(1_700_000_000+int64(i), 0)),
		CitizenPseudonym: fmt.Sprintf("%032x", 0xc0ffee0000+i%7), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
		Agency: "tax", Caseworker: "cw-1", Journey: "moving", Step: "register", Authority: "population",
		Dataset: "person", Fields: []string{"address.street"}, Purpose: "p", LegalBasis: "lb",
		Decision: auditv1.Decision_DECISION_RELEASED,
	}
}

// env is one embedded NATS server with the access log and the tree on it.
type env struct {
	js     jetstream.JetStream
	log    *accesslog.Log
	tree   *tlog.Tree
	signer tlog.Signer
	keyDir string
	n      int
}

// testSealer is the broker's sealing key in these tests: the access log authenticates every ACCESS
// batch with it.
var testSealer = func() *keys.AEADRing {
	r := keys.NewAEADRing()
	if err := r.Add(1, bytes.Repeat([]byte{7}, keys.KeySize)); err != nil {
		panic(err)
	}
	if err := r.SetCurrent(1); err != nil {
		panic(err)
	}
	return r
}()

func newEnv(t testing.TB) *env {
	t.Helper()
	js := natstest.JetStream(t)
	l, err := accesslog.Open(ctx(t), js, accesslog.Options{IndexShards: 2, Sealer: testSealer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	keyDir := t.TempDir()
	signer, err := tlog.OpenLocalSigner(keyDir, "test.aperture/log")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := tlog.Open(ctx(t), js, signer.Verifier(), tlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{js: js, log: l, tree: tree, signer: signer, keyDir: keyDir}
}

// append writes n records, concurrently in groups, so batches hold several records.
func (e *env) append(t testing.TB, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := e.log.Append(context.Background(), record(i)); err != nil {
				errs <- err
			}
		}(e.n + i)
		if i%16 == 15 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.n += n
}

func (e *env) integrator(t testing.TB, id string) *tlog.Integrator {
	t.Helper()
	return e.integratorWith(t, id, tlog.IntegratorOptions{})
}

func (e *env) integratorWith(t testing.TB, id string, opts tlog.IntegratorOptions) *tlog.Integrator {
	t.Helper()
	opts.ID, opts.Interval, opts.LeaseTTL = id, 20*time.Millisecond, time.Second
	in, err := tlog.StartIntegrator(ctx(t), e.tree, e.log, e.signer, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return in
}

// waitCheckpoint waits for a checkpoint of at least size.
func (e *env) waitCheckpoint(t testing.TB, size uint64) tlog.Checkpoint {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		cp, err := e.tree.LatestCheckpoint(ctx(t))
		if err == nil && cp.Size >= size {
			return cp
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size %d: last %+v, %v", size, cp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestThirdPartyVerification(t *testing.T) {
	e := newEnv(t)
	e.append(t, 300)
	e.integrator(t, "a")
	first := e.waitCheckpoint(t, 300)

	// The checkpoint is a C2SP tlog-checkpoint signed note: parse it with transparency-dev/formats
	// and a verifier built only from the published verifier key.
	v, err := note.NewVerifier(e.vkey(t))
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := log.ParseCheckpoint(first.Note, "test.aperture/log", v)
	if err != nil {
		t.Fatalf("formats/log rejects the checkpoint: %v\n%s", err, first.Note)
	}
	if cp.Size != 300 || string(cp.Hash) != string(first.Root) {
		t.Fatalf("parsed checkpoint %d/%x, want 300/%x", cp.Size, cp.Hash, first.Root)
	}

	h := rfc6962.DefaultHasher
	for _, i := range []int{0, 1, 2, 127, 255, 256, 257, 299} {
		leaf, err := e.tree.LeafByID(ctx(t), record(i).GetId())
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if leaf.Index != uint64(i) {
			// Concurrent appends may reorder records within a group; the leaf bytes decide.
			t.Logf("record %d is leaf %d", i, leaf.Index)
		}
		raw, err := e.tree.Record(ctx(t), leaf)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(record(i))
		if string(raw) != string(want) {
			t.Fatalf("record %d: stored leaf is not the record's encoding", i)
		}
		p, err := e.tree.InclusionProof(ctx(t), leaf.Index, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(h, leaf.Index, cp.Size, h.HashLeaf(raw), p, cp.Hash); err != nil {
			t.Fatalf("inclusion proof of leaf %d does not verify: %v", leaf.Index, err)
		}
		if err := proof.VerifyInclusion(h, leaf.Index, cp.Size, h.HashLeaf([]byte("forged")), p, cp.Hash); err == nil {
			t.Fatal("an inclusion proof verified for a forged leaf")
		}
	}

	e.append(t, 500)
	second := e.waitCheckpoint(t, 800)
	for _, sizes := range [][2]uint64{{first.Size, second.Size}, {1, second.Size}, {256, 512}, {255, 257}} {
		p, err := e.tree.ConsistencyProof(ctx(t), sizes[0], sizes[1])
		if err != nil {
			t.Fatal(err)
		}
		r1, r2 := rootAt(t, e, sizes[0]), rootAt(t, e, sizes[1])
		if err := proof.VerifyConsistency(h, sizes[0], sizes[1], p, r1, r2); err != nil {
			t.Fatalf("consistency %v does not verify: %v", sizes, err)
		}
	}
	if _, err := e.tree.InclusionProof(ctx(t), 0, 100_000); err == nil {
		t.Fatal("proof for a tree size beyond the integrated tree")
	}
	res, err := tlog.Verify(ctx(t), e.js, e.signer.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 800 || res.Latest.Size != 800 {
		t.Fatalf("verify: %+v", res)
	}
}

// rootAt computes the root of the first size leaves from the records with merkle's reference
// tree, independently of the stored tiles.
func rootAt(t testing.TB, e *env, size uint64) []byte {
	t.Helper()
	ref := testonly.New(rfc6962.DefaultHasher)
	err := e.log.Records(ctx(t), 1, func(_ uint64, _ int, leaf []byte) error {
		if ref.Size() < size {
			ref.AppendData(leaf)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ref.Hash()
}

// vkey is the published verifier key text: all an outside party needs.
func (e *env) vkey(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.keyDir, tlog.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (e *env) lastCheckpoint(t testing.TB) tlog.Checkpoint {
	t.Helper()
	cp, err := e.tree.LatestCheckpoint(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// TestLeafByID: the access-id lookup is filed by the second an id was created in, a few messages per
// integration round rather than one per record; every id is found across seconds and rounds, the
// newest entry of an id counts, a message that does not decode is reported rather than taken as
// "not found", and a store's older one-message-per-id lookups are still read.
func TestLeafByID(t *testing.T) {
	e := newEnv(t)
	const n = 2000 // 20 seconds of ids, several rounds per second
	e.append(t, n)
	e.integratorWith(t, "a", tlog.IntegratorOptions{MaxLeaves: 64})
	e.waitCheckpoint(t, n)

	seen := map[uint64]bool{}
	for i := range n {
		leaf, err := e.tree.LeafByID(ctx(t), recordID(i))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		raw, err := e.tree.Record(ctx(t), leaf)
		if err != nil {
			t.Fatal(err)
		}
		var got auditv1.AccessRecord
		if err := proto.Unmarshal(raw, &got); err != nil || got.GetId() != recordID(i) || seen[leaf.Index] {
			t.Fatalf("record %d: lookup leads to leaf %d holding %q (seen before: %v)", i, leaf.Index, got.GetId(), seen[leaf.Index])
		}
		seen[leaf.Index] = true
	}
	leaves, err := e.js.Stream(ctx(t), tlog.LeafStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := leaves.Info(ctx(t), jetstream.WithSubjectFilter(tlog.LookupSubjectPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	// One message per second a round touches: at most rounds + seconds, far fewer than records.
	if msgs, rounds := info.State.Msgs, uint64(n/64+1); msgs > rounds+n/100+1 || len(info.State.Subjects) != n/100 {
		t.Fatalf("lookup holds %d messages on %d subjects for %d records in %d rounds", msgs, len(info.State.Subjects), n, rounds)
	}
	t.Logf("lookup: %d messages on %d subjects, %d bytes stored, for %d records", info.State.Msgs, len(info.State.Subjects), info.State.Bytes, n)

	// The newest entry counts: pointing record 0's id at record 1's leaf is what the callers' record
	// check must catch (the citizen and audit tests do).
	one, err := e.tree.LeafByID(ctx(t), recordID(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx(t), tlog.LookupSubject(recordID(0)), tlog.AppendLookup(nil, recordID(0), one)); err != nil {
		t.Fatal(err)
	}
	if got, err := e.tree.LeafByID(ctx(t), recordID(0)); err != nil || got != one {
		t.Fatalf("after repointing: %+v, %v; want %+v", got, err, one)
	}

	// A message that does not decode: ids found elsewhere are still found; an id not found is
	// ErrCorrupt, not ErrNotFound.
	if _, err := e.js.Publish(ctx(t), tlog.LookupSubject(recordID(5)), []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tree.LeafByID(ctx(t), recordID(5)); err != nil {
		t.Fatalf("record 5 after a bad message in its second: %v", err)
	}
	absent := accessIDAt(1_700_000_000_000, 1<<40) // created in record 0's second, never logged
	if _, err := e.tree.LeafByID(ctx(t), absent); !errors.Is(err, tlog.ErrCorrupt) {
		t.Fatalf("absent id in a second with a bad message: %v, want ErrCorrupt", err)
	}

	// An id of another second with no entry is not found; one in the older per-id form is.
	old := accessIDAt(1_600_000_000_000, 1<<40)
	if _, err := e.tree.LeafByID(ctx(t), old); !errors.Is(err, tlog.ErrNotFound) {
		t.Fatalf("unknown id: %v, want ErrNotFound", err)
	}
	loc := binary.AppendUvarint(nil, one.Index)
	loc = binary.AppendUvarint(loc, one.Seq)
	loc = binary.AppendUvarint(loc, uint64(one.Pos))
	if _, err := e.js.Publish(ctx(t), tlog.LeafSubjectPrefix+base64.RawURLEncoding.EncodeToString([]byte(old)), loc); err != nil {
		t.Fatal(err)
	}
	if got, err := e.tree.LeafByID(ctx(t), old); err != nil || got != one {
		t.Fatalf("older per-id lookup: %+v, %v; want %+v", got, err, one)
	}
}

// TestOpenUpgradesLookupStream: a store whose TLOG_LEAVES kept one message per access id (the form
// before the lookup was filed by second) is opened and updated in place, its entries still read.
func TestOpenUpgradesLookupStream(t *testing.T) {
	js := natstest.JetStream(t)
	s, err := js.CreateStream(ctx(t), jetstream.StreamConfig{
		Name: tlog.LeafStream, Subjects: []string{tlog.LeafSubjectPrefix + "*"}, Storage: jetstream.FileStorage,
		MaxMsgsPerSubject: 1, AllowDirect: true, PersistMode: jetstream.AsyncPersistMode,
	})
	if err != nil {
		t.Fatal(err)
	}
	id := recordID(7)
	if _, err := js.Publish(ctx(t), tlog.LeafSubjectPrefix+base64.RawURLEncoding.EncodeToString([]byte(id)), []byte{3, 1, 2}); err != nil {
		t.Fatal(err)
	}
	tree, err := tlog.Open(ctx(t), js, nil, tlog.Options{})
	if err != nil {
		t.Fatalf("open a store with the older lookup: %v", err)
	}
	if got, err := tree.LeafByID(ctx(t), id); err != nil || got != (tlog.Leaf{Index: 3, Seq: 1, Pos: 2}) {
		t.Fatalf("older entry: %+v, %v", got, err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxMsgsPerSubject != -1 || len(info.Config.Subjects) != 2 {
		t.Fatalf("stream not updated: %+v", info.Config)
	}
}
