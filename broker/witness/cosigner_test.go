package witness_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

func testCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// logEnv is the access log and its tree on a real embedded NATS server, with a running integrator.
type logEnv struct {
	js     jetstream.JetStream
	log    *accesslog.Log
	tree   *tlog.Tree
	signer tlog.Signer
	tag    string
	n      int
}

// newLogEnv starts a log whose records are tagged with tag (two envs with one key directory are two
// histories of the same log).
func newLogEnv(t testing.TB, keyDir, tag string) *logEnv {
	t.Helper()
	js := natstest.JetStream(t)
	l, err := accesslog.Open(testCtx(t), js, accesslog.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	signer, err := tlog.OpenLocalSigner(keyDir, "test.aperture/log")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := tlog.Open(testCtx(t), js, signer.Verifier(), tlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := tlog.StartIntegrator(testCtx(t), tree, l, signer, tlog.IntegratorOptions{Interval: 20 * time.Millisecond, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return &logEnv{js: js, log: l, tree: tree, signer: signer, tag: tag}
}

// append logs n records, one at a time (so the leaf order is known), and waits for their checkpoint.
func (e *logEnv) append(t testing.TB, n int) tlog.Checkpoint {
	t.Helper()
	for range n {
		rec := &auditv1.AccessRecord{
			Id: fmt.Sprintf("acc_%s%06d", e.tag, e.n), Time: timestamppb.New(time.Unix(1_700_000_000+int64(e.n), 0)),
			CitizenPseudonym: fmt.Sprintf("%032x", 0xc0ffee0000+e.n%7), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
			Agency: "agency-" + e.tag, Journey: "j", Step: "s", Authority: "a", Dataset: "d",
			Decision: auditv1.Decision_DECISION_RELEASED,
		}
		if err := e.log.Append(testCtx(t), rec); err != nil {
			t.Fatal(err)
		}
		e.n++
	}
	return e.waitCheckpoint(t, uint64(e.n))
}

func (e *logEnv) waitCheckpoint(t testing.TB, size uint64) tlog.Checkpoint {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cp, err := e.tree.LatestCheckpoint(testCtx(t))
		if err == nil && cp.Size >= size {
			return cp
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size %d: %v", size, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// switchTree is the tree the cosigner reads; a test points it at another history of the same log.
type switchTree struct{ p atomic.Pointer[tlog.Tree] }

func (s *switchTree) LatestCheckpoint(ctx context.Context) (tlog.Checkpoint, error) {
	return s.p.Load().LatestCheckpoint(ctx)
}

func (s *switchTree) ConsistencyProof(ctx context.Context, a, b uint64) ([][]byte, error) {
	return s.p.Load().ConsistencyProof(ctx, a, b)
}

func policyFor(t testing.TB, logV note.Verifier, quorum string, ws ...witnessServer) *witness.Policy {
	t.Helper()
	var b strings.Builder
	var names []string
	for i, w := range ws {
		name := fmt.Sprintf("w%d", i+1)
		names = append(names, name)
		fmt.Fprintf(&b, "witness %s %s %s\n", name, w.vkey, w.url)
	}
	fmt.Fprintf(&b, "group witnesses %s %s\nquorum witnesses\n", quorum, strings.Join(names, " "))
	p, err := witness.ParsePolicy([]byte(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return p.WithLog(logV)
}

// syncLog captures the cosigner's log lines.
type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func logVKey(t testing.TB, keyDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(keyDir, tlog.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func newCosigner(t testing.TB, js jetstream.JetStream, tree witness.Tree, p *witness.Policy, logw *syncLog) *witness.Cosigner {
	t.Helper()
	c, err := witness.OpenCosigner(testCtx(t), js, tree, witness.CosignerOptions{
		Policy: p, Logger: slog.New(slog.NewTextHandler(logw, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCosignerTwoWitnesses: every new checkpoint of the real tree is cosigned by both witnesses, the
// stored note verifies with transparency-dev's cosignature verifier and the policy, and the cosigning
// latency is measured.
func TestCosignerTwoWitnesses(t *testing.T) {
	keyDir := t.TempDir()
	e := newLogEnv(t, keyDir, "a")
	vkey := logVKey(t, keyDir)
	w1 := startWitness(t, "dpa.test/witness", t.TempDir(), vkey)
	w2 := startWitness(t, "ombudsman.test/witness", t.TempDir(), vkey)
	p := policyFor(t, e.signer.Verifier(), "2", w1, w2)
	var logw syncLog
	c := newCosigner(t, e.js, e.tree, p, &logw)

	if _, err := c.LatestCheckpoint(testCtx(t)); !errors.Is(err, witness.ErrNotFound) {
		t.Fatalf("before any checkpoint: %v, want ErrNotFound", err)
	}
	var lat []time.Duration
	for round := range 12 {
		cp := e.append(t, 1+round*7)
		start := time.Now()
		if err := c.Sync(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		got, err := c.LatestCheckpoint(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		cos, err := p.Open(got)
		if err != nil {
			t.Fatalf("round %d: stored checkpoint does not satisfy the policy: %v\n%s", round, err, got)
		}
		if cos.Size != cp.Size || !slices.Equal(cos.Cosigners, []string{"w1", "w2"}) {
			t.Fatalf("round %d: cosigned %d by %v, want %d by w1, w2", round, cos.Size, cos.Cosigners, cp.Size)
		}
		// Independently of the policy code: formats/note's verifiers.
		for _, w := range []witnessServer{w1, w2} {
			v, err := fnote.NewVerifierForCosignatureV1(w.vkey)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := note.Open(got, note.VerifierList(v)); err != nil || len(n.Sigs) != 1 {
				t.Fatalf("cosignature of %s does not verify: %v", v.Name(), err)
			}
		}
		anchor, err := c.Anchor(testCtx(t))
		if err != nil || string(anchor) != string(got) {
			t.Fatalf("anchor %q, %v; want the cosigned checkpoint", anchor, err)
		}
	}
	if err := c.Health(); err != nil {
		t.Fatalf("health: %v", err)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("cosigning latency (submit to two witnesses over HTTP → cosigned note stored in JetStream), 12 rounds: median %v, max %v",
		lat[len(lat)/2], lat[len(lat)-1])

	// A fresh cosigner (another replica, or a restart) does not know the witnesses' sizes: the 409
	// tells it, and it continues from there.
	c2 := newCosigner(t, e.js, e.tree, p, &logw)
	cp := e.append(t, 5)
	if err := c2.Sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if cos, err := p.Open(mustLatest(t, c2)); err != nil || cos.Size != cp.Size {
		t.Fatalf("after a restart: %+v, %v", cos, err)
	}
	if err := c2.Health(); err != nil || c2.Stats().Refusals != 0 {
		t.Fatalf("a 409 that heals raised the alarm: %v", err)
	}
}

func mustLatest(t testing.TB, c *witness.Cosigner) []byte {
	t.Helper()
	b, err := c.LatestCheckpoint(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCosignerRewrittenHistory: the log's storage is replaced by another history signed with the same
// key (what a broker that lost or rewrote its tree state would sign). Both witnesses refuse, the alarm
// is raised, and the cosigned checkpoint served stays the one the witnesses saw.
func TestCosignerRewrittenHistory(t *testing.T) {
	keyDir := t.TempDir()
	a := newLogEnv(t, keyDir, "a")
	b := newLogEnv(t, keyDir, "b") // same key, different records
	vkey := logVKey(t, keyDir)
	w1 := startWitness(t, "dpa.test/witness", t.TempDir(), vkey)
	w2 := startWitness(t, "ombudsman.test/witness", t.TempDir(), vkey)
	p := policyFor(t, a.signer.Verifier(), "any", w1, w2)

	a.append(t, 20)
	var logw syncLog
	tree := &switchTree{}
	tree.p.Store(a.tree)
	c := newCosigner(t, a.js, tree, p, &logw)
	if err := c.Sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	seen := mustLatest(t, c)

	cases := []struct {
		name         string
		trueGrowth   int // records the true history gains (and the witnesses cosign) first
		rewriteGrows int // records added to the rewritten history
	}{
		// the witnesses saw 20; the rewrite has 30: the consistency proof fails (422)
		{"rewritten history, longer", 0, 30},
		// the witnesses saw 40; the rewrite has 40 with another root: 409, and again after the retry
		{"rewritten history, same size", 20, 10},
		// the witnesses saw 60; the rewrite has 40: the log shrank
		{"rewritten history, shorter", 20, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.trueGrowth > 0 {
				tree.p.Store(a.tree)
				a.append(t, tc.trueGrowth)
				if err := c.Sync(testCtx(t)); err != nil {
					t.Fatal(err)
				}
				if err := c.Health(); err != nil {
					t.Fatalf("the true history did not clear the alarm: %v", err)
				}
				seen = mustLatest(t, c)
			}
			if tc.rewriteGrows > 0 {
				b.append(t, tc.rewriteGrows)
			}
			tree.p.Store(b.tree)
			before := c.Stats().Refusals
			if err := c.Sync(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			herr := c.Health()
			if herr == nil {
				t.Fatal("witnesses refused, but Health is nil")
			}
			for _, name := range []string{"w1", "w2"} {
				if !strings.Contains(herr.Error(), "witness "+name+" refused") {
					t.Errorf("health %q does not name %s", herr, name)
				}
			}
			if got := c.Stats().Refusals - before; got != 2 {
				t.Errorf("refusal counter went up by %d, want 2", got)
			}
			out := logw.String()
			if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "witness=w1") || !strings.Contains(out, "witness=w2") {
				t.Errorf("no error-level line naming the witnesses:\n%s", out)
			}
			if got := mustLatest(t, c); string(got) != string(seen) {
				t.Fatalf("served checkpoint changed to one no witness cosigned:\n%s", got)
			}
		})
	}
}

// TestCosignerStoredForgery: a cosigned checkpoint written to the bucket by someone else does not
// verify, counts as absent and is reported.
func TestCosignerStoredForgery(t *testing.T) {
	keyDir := t.TempDir()
	e := newLogEnv(t, keyDir, "a")
	w1 := startWitness(t, "dpa.test/witness", t.TempDir(), logVKey(t, keyDir))
	p := policyFor(t, e.signer.Verifier(), "1", w1)
	var logw syncLog
	c := newCosigner(t, e.js, e.tree, p, &logw)
	cp := e.append(t, 3)
	kv, err := e.js.KeyValue(testCtx(t), witness.CosignedBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The log's own signature, no cosignature: not enough for the policy.
	if _, err := kv.Put(testCtx(t), "checkpoint", cp.Note); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LatestCheckpoint(testCtx(t)); !errors.Is(err, witness.ErrNotFound) {
		t.Fatalf("forged entry: %v, want ErrNotFound", err)
	}
	if c.Stats().BadStored != 1 || !strings.Contains(logw.String(), "level=ERROR") {
		t.Fatalf("forgery not reported: %+v\n%s", c.Stats(), logw.String())
	}
	// The next round replaces it with a real one.
	if err := c.Sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Open(mustLatest(t, c)); err != nil {
		t.Fatal(err)
	}
}

// TestCosignerWitnessDown: a witness that cannot be reached is not a refusal (no alarm), and a
// checkpoint below the quorum is an anchor but is not served; with the witness back, it is.
func TestCosignerWitnessDown(t *testing.T) {
	keyDir := t.TempDir()
	e := newLogEnv(t, keyDir, "a")
	vkey := logVKey(t, keyDir)
	w1 := startWitness(t, "dpa.test/witness", t.TempDir(), vkey)
	w2 := startWitness(t, "ombudsman.test/witness", t.TempDir(), vkey)
	p := policyFor(t, e.signer.Verifier(), "all", w1, w2)
	var logw syncLog
	c := newCosigner(t, e.js, e.tree, p, &logw)
	first := e.append(t, 4)
	if err := c.Sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w2.close()
	second := e.append(t, 4)
	for range 3 { // rounds below the quorum repeat; the witness that answered is not asked again
		if err := c.Sync(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Health(); err != nil {
		t.Fatalf("an unreachable witness raised the refusal alarm: %v", err)
	}
	st := c.Stats()
	if st.Unavailable != 3 || st.Refusals != 0 {
		t.Fatalf("stats %+v, want 3 unavailable, 0 refusals", st)
	}
	if n := strings.Count(logw.String(), `msg="witness unavailable"`); n != 1 {
		t.Fatalf("%d \"witness unavailable\" lines, want 1 (rate-limited)", n)
	}
	served, err := p.Open(mustLatest(t, c))
	if err != nil || served.Size != first.Size {
		t.Fatalf("served %d (%v), want the last checkpoint with the quorum, %d", served.Size, err, first.Size)
	}
	anchor, err := c.Anchor(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Open(anchor)
	if !errors.Is(err, witness.ErrQuorum) || a.Size != second.Size || !slices.Equal(a.Cosigners, []string{"w1"}) {
		t.Fatalf("anchor %d by %v (%v), want %d by w1 only", a.Size, a.Cosigners, err, second.Size)
	}
}
