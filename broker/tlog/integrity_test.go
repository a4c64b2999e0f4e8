package tlog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// unauthenticSource is the access log as the integrator reads it, with one ACCESS message reported
// as not written by the broker, as accesslog.Log reports a batch whose MAC does not verify.
type unauthenticSource struct {
	inner *accesslog.Log
	bad   uint64
	calls atomic.Int64
}

func (s *unauthenticSource) Records(ctx context.Context, from uint64, fn func(uint64, int, []byte) error) error {
	s.calls.Add(1)
	return s.inner.Records(ctx, from, func(seq uint64, i int, leaf []byte) error {
		if seq == s.bad {
			return fmt.Errorf("read access log: %w", &accesslog.BatchError{Seq: seq, Err: accesslog.ErrUnauthenticBatch})
		}
		return fn(seq, i, leaf)
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIntegratorHaltsOnUnauthenticBatch: an ACCESS message the broker did not write is never made a
// leaf; the records before it are signed, then integration halts loudly and stays halted.
func TestIntegratorHaltsOnUnauthenticBatch(t *testing.T) {
	e := newEnv(t)
	e.append(t, 50)
	// Someone with write access to NATS publishes a record of their own.
	forged := record(9999)
	leaf, _ := proto.MarshalOptions{Deterministic: true}.Marshal(forged)
	batch, _ := proto.Marshal(&auditv1.AccessBatch{Records: [][]byte{leaf}})
	ack, err := e.js.Publish(ctx(t), accesslog.LogSubject, batch)
	if err != nil {
		t.Fatal(err)
	}
	e.append(t, 50)

	src := &unauthenticSource{inner: e.log, bad: ack.Sequence}
	logs := &lockedWriter{w: &strings.Builder{}}
	in, err := tlog.StartIntegrator(ctx(t), e.tree, src, e.signer, tlog.IntegratorOptions{
		ID: "a", Interval: 20 * time.Millisecond, LeaseTTL: time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	waitFor(t, "the integrator to halt", in.Halted)
	if err := in.Err(); !errors.Is(err, tlog.ErrHalted) || !errors.Is(err, accesslog.ErrUnauthenticBatch) || !strings.Contains(err.Error(), fmt.Sprintf("ACCESS message %d", ack.Sequence)) {
		t.Fatalf("halt reason %v does not name ACCESS message %d", err, ack.Sequence)
	}
	if a := in.Alarms(); a.UnauthenticBatches != 1 {
		t.Fatalf("alarms %+v, want one unauthentic batch", a)
	}
	cp := e.lastCheckpoint(t)
	if cp.Size != 50 {
		t.Fatalf("checkpoint size %d, want the 50 records before the forged batch", cp.Size)
	}
	if _, err := e.tree.LeafByID(ctx(t), forged.GetId()); !errors.Is(err, tlog.ErrNotFound) {
		t.Fatalf("the forged record is a leaf: %v", err)
	}
	// Halted means halted: no more reads of the log (no spinning), no more checkpoints.
	calls := src.calls.Load()
	time.Sleep(300 * time.Millisecond) // 15 intervals
	if n := src.calls.Load(); n != calls {
		t.Fatalf("a halted integrator read the log %d more times", n-calls)
	}
	if cp2 := e.lastCheckpoint(t); cp2.Seq != cp.Seq {
		t.Fatalf("a halted integrator signed checkpoint %d", cp2.Seq)
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, fmt.Sprintf("access_seq=%d", ack.Sequence)) {
		t.Fatalf("no error-level alarm naming the ACCESS sequence:\n%s", out)
	}
}

// TestForgedCheckpointSkipped: a message in CHECKPOINTS that the log's key did not sign does not
// stop signing; it is skipped and reported.
func TestForgedCheckpointSkipped(t *testing.T) {
	other, err := tlog.OpenLocalSigner(t.TempDir(), "test.aperture/log")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		forge func(t *testing.T, e *env) []byte
	}{
		{"signed by another key", func(t *testing.T, e *env) []byte {
			body := log.Checkpoint{Origin: "test.aperture/log", Size: 1 << 30, Hash: make([]byte, 32)}.Marshal()
			b, err := note.Sign(&note.Note{Text: string(body)}, other)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"not a note", func(*testing.T, *env) []byte { return []byte("size 1000000\n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.integrator(t, "a")
			e.append(t, 100)
			e.waitCheckpoint(t, 100)
			ack, err := e.js.Publish(ctx(t), tlog.CheckpointSubject, tc.forge(t, e))
			if err != nil {
				t.Fatal(err)
			}
			// The API still serves the newest genuine checkpoint.
			if cp := e.lastCheckpoint(t); cp.Size != 100 {
				t.Fatalf("latest checkpoint %+v, want the genuine one of size 100", cp)
			}
			e.append(t, 100)
			cp := e.waitCheckpoint(t, 200)
			if cp.Seq <= ack.Sequence {
				t.Fatalf("checkpoint %d is not after the forgery %d", cp.Seq, ack.Sequence)
			}
			waitFor(t, "the forgery to be reported", func() bool { return in.Alarms().ForgedCheckpoints >= 1 })
			if in.Halted() {
				t.Fatalf("integrator halted: %v", in.Err())
			}
			res, err := tlog.Verify(ctx(t), e.js, e.signer.Verifier())
			if err != nil || len(res.Forged) != 1 || res.Forged[0].Seq != ack.Sequence {
				t.Fatalf("verify: %v, forged %v; want it to pass and name message %d", err, res.Forged, ack.Sequence)
			}
		})
	}
}

// TestRewrittenHistoryRefused: with the tree's storage deleted (CHECKPOINTS, TLOG, TLOG_LEAVES, the
// lease) and one record rewritten, the integrator rebuilds the tree but refuses to sign it: it is
// not consistent with the checkpoint anchored outside NATS. Without the rewrite, the rebuilt tree
// is consistent and signing resumes.
func TestRewrittenHistoryRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rewrite bool
		file    bool // the anchor is the integrator's own file; otherwise an Anchor (as a witness's)
	}{
		{"rewritten, anchor file", true, true},
		{"rewritten, witness anchor", true, false},
		{"storage lost, log intact", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			file := filepath.Join(t.TempDir(), "signed-checkpoint")
			var opts tlog.IntegratorOptions
			var witnessed atomic.Pointer[[]byte]
			if tc.file {
				opts.AnchorFile = file
			} else {
				opts.Anchors = []tlog.Anchor{{Name: "witness-cosigned checkpoint", Latest: func(context.Context) ([]byte, error) {
					if p := witnessed.Load(); p != nil {
						return *p, nil
					}
					return nil, nil
				}}}
			}
			in := e.integratorWith(t, "a", opts)
			e.append(t, 300)
			cp := e.waitCheckpoint(t, 300)
			in.Close()
			if tc.file {
				saved, err := os.ReadFile(file)
				if err != nil || string(saved) != string(cp.Note) {
					t.Fatalf("anchor file holds %q (%v), want the last signed checkpoint", saved, err)
				}
			} else {
				witnessed.Store(&cp.Note)
			}

			for _, kv := range []string{tlog.TreeBucket, tlog.LeaseBucket} {
				if err := e.js.DeleteKeyValue(ctx(t), kv); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range []string{tlog.LeafStream, tlog.CheckpointStream} {
				if err := e.js.DeleteStream(ctx(t), s); err != nil {
					t.Fatal(err)
				}
			}
			if tc.rewrite {
				rewriteStream(t, e.js, accesslog.AccessStream, func(msgs [][]byte) [][]byte {
					recs := batchRecords(t, msgs[3])
					var r auditv1.AccessRecord
					if err := proto.Unmarshal(recs[0], &r); err != nil {
						t.Fatal(err)
					}
					r.Purpose = "rewritten"
					recs[0], _ = proto.MarshalOptions{Deterministic: true}.Marshal(&r)
					msgs[3] = batchOf(t, recs)
					return msgs
				})
			}
			tree, err := tlog.Open(ctx(t), e.js, e.signer.Verifier(), tlog.Options{})
			if err != nil {
				t.Fatal(err)
			}
			e.tree = tree
			in = e.integratorWith(t, "b", opts)
			// A verifier that saved the checkpoint checks the log against it, whatever storage says.
			trusted := tlog.VerifyOptions{Verifiers: []tlog.Verifier{e.signer.Verifier()}, Trusted: []tlog.TrustedCheckpoint{{Name: "saved", Note: cp.Note}}}
			if !tc.rewrite {
				e.append(t, 10)
				if got := e.waitCheckpoint(t, 310); in.Halted() {
					t.Fatalf("halted after an honest rebuild: %v (checkpoint %d)", in.Err(), got.Size)
				}
				if _, err := tlog.VerifyWith(ctx(t), e.js, trusted); err != nil {
					t.Fatalf("verify against the saved checkpoint after an honest rebuild: %v", err)
				}
				return
			}
			if _, err := tlog.VerifyWith(ctx(t), e.js, trusted); err == nil || !strings.Contains(err.Error(), "trusted checkpoint saved (size 300") {
				t.Fatalf("verify against the saved checkpoint: %v", err)
			}
			waitFor(t, "the integrator to refuse", in.Halted)
			if err := in.Err(); !strings.Contains(err.Error(), "refusing to sign") || !strings.Contains(err.Error(), "rewritten") {
				t.Fatalf("halt reason: %v", err)
			}
			if in.Alarms().InconsistentAnchors == 0 {
				t.Fatal("no alarm counted")
			}
			if _, err := e.tree.LatestCheckpoint(ctx(t)); !errors.Is(err, tlog.ErrNotFound) {
				t.Fatalf("a checkpoint of the rewritten history was signed: %v", err)
			}
			t.Logf("refused: %v", in.Err())
		})
	}
}

// lockedWriter collects log output; the integrator's goroutine writes while the test reads.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// TestCheckedProofsNameCorruptTile: proofs are verified against the signed checkpoint before they
// are returned; one built from a corrupted stored tile is ErrCorrupt naming that tile.
func TestCheckedProofsNameCorruptTile(t *testing.T) {
	e := newEnv(t)
	e.integrator(t, "a")
	e.append(t, 600)
	cp := e.waitCheckpoint(t, 600)
	leaf5, err := e.tree.LeafHash(ctx(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.tree.CheckedInclusionProof(ctx(t), 5, cp.Size, leaf5, cp); err != nil {
		t.Fatalf("intact tree: %v", err)
	}
	if _, err := e.tree.CheckedConsistencyProof(ctx(t), 100, cp.Size, cp); err != nil {
		t.Fatalf("intact tree: %v", err)
	}
	if _, err := e.tree.CheckedInclusionProof(ctx(t), 5, 300, leaf5, cp); err != nil {
		t.Fatalf("intact tree, older size: %v", err)
	}

	kv, err := e.js.KeyValue(ctx(t), tlog.TreeBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx(t), "tile.0.0") // full: 256 leaf hashes
	if err != nil {
		t.Fatal(err)
	}
	tile := append([]byte(nil), entry.Value()...)
	tile[4*32] ^= 1 // leaf 4, a sibling of leaf 5
	if _, err := kv.Put(ctx(t), "tile.0.0", tile); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"inclusion": func() error {
			_, err := e.tree.CheckedInclusionProof(ctx(t), 5, cp.Size, leaf5, cp)
			return err
		},
		"inclusion, older size": func() error {
			_, err := e.tree.CheckedInclusionProof(ctx(t), 5, 300, leaf5, cp)
			return err
		},
		"consistency": func() error {
			_, err := e.tree.CheckedConsistencyProof(ctx(t), 5, cp.Size, cp)
			return err
		},
	} {
		err := call()
		var te *tlog.TileError
		if !errors.Is(err, tlog.ErrCorrupt) || !errors.As(err, &te) || te.Level != 0 || te.Index != 0 {
			t.Fatalf("%s: %v, want ErrCorrupt naming tile 0/0", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
