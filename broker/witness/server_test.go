package witness_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/witness"
)

const origin = "test.aperture/log"

// logKey is a log's checkpoint key.
type logKey struct {
	signer note.Signer
	vkey   string
}

func newLogKey(t testing.TB, name string) logKey {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return logKey{signer: s, vkey: vkey}
}

// tree is a log built with transparency-dev/merkle's reference tree.
type tree struct{ *testonly.Tree }

func newTree(prefix string, n int) tree {
	tr := tree{testonly.New(rfc6962.DefaultHasher)}
	tr.grow(prefix, n)
	return tr
}

func (tr tree) grow(prefix string, n int) {
	for i := range n {
		tr.AppendData(fmt.Appendf(nil, "%s-%d", prefix, tr.Size()+uint64(i)))
	}
}

// checkpoint signs the tree's checkpoint at size with k.
func (tr tree) checkpoint(t testing.TB, k logKey, size uint64) []byte {
	t.Helper()
	body := log.Checkpoint{Origin: k.signer.Name(), Size: size, Hash: tr.HashAt(size)}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(body)}, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (tr tree) proof(t testing.TB, from, to uint64) [][]byte {
	t.Helper()
	if from == 0 || from == to {
		return nil
	}
	p, err := tr.ConsistencyProof(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func zeroHashes(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, 32)
	}
	return out
}

func body(old uint64, proof [][]byte, cp []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(cp)
	return b.String()
}

// witnessServer runs a witness over a real HTTP socket.
type witnessServer struct {
	url, vkey string
	state     string
	skey      string
	close     func()
}

func startWitness(t testing.TB, name, state string, logs ...string) witnessServer {
	t.Helper()
	skey, vkey, err := witness.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return startWitnessWithKey(t, skey, vkey, state, logs...)
}

func startWitnessWithKey(t testing.TB, skey, vkey, state string, logs ...string) witnessServer {
	t.Helper()
	ls, err := witness.ParseLogKeys(logs)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := witness.OpenStateDir(state)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := witness.NewServer(witness.ServerConfig{Key: skey, Logs: ls, State: sd})
	if err != nil {
		t.Fatal(err)
	}
	if srv.VerifierKey() != vkey {
		t.Fatalf("server verifier key %s, keygen printed %s", srv.VerifierKey(), vkey)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return witnessServer{url: hs.URL, vkey: vkey, state: state, skey: skey, close: hs.Close}
}

func post(t testing.TB, url, b string) (int, string, string) {
	t.Helper()
	resp, err := http.Post(url+witness.AddCheckpointPath, "text/plain", strings.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(out)
}

// TestAddCheckpoint walks one witness through the cases of C2SP tlog-witness, in order: each case
// starts from the state the previous ones left.
func TestAddCheckpoint(t *testing.T) {
	key := newLogKey(t, origin)
	other := newLogKey(t, origin) // same origin, a key the witness does not trust
	stranger := newLogKey(t, "stranger.example/log")
	w := startWitness(t, "witness.test/w1", t.TempDir(), key.vkey)
	wv, err := fnote.NewVerifierForCosignatureV1(w.vkey)
	if err != nil {
		t.Fatal(err)
	}

	main := newTree("main", 20)
	forked := newTree("fork", 20) // a rewritten history: different leaves at every size

	tests := []struct {
		name     string
		body     string
		status   int
		size     string // 409 body
		cosigned []byte // 200: the checkpoint whose cosignature must verify
	}{
		{name: "malformed: no old line", body: "hello\n\n" + string(main.checkpoint(t, key, 5)), status: 400},
		{name: "malformed: leading zero", body: "old 05\n\n" + string(main.checkpoint(t, key, 5)), status: 400},
		{name: "malformed: no empty line", body: "old 0\n" + string(main.checkpoint(t, key, 5))[:10], status: 400},
		{name: "malformed: proof not base64", body: "old 0\nnot-a-hash\n\n" + string(main.checkpoint(t, key, 5)), status: 400},
		{name: "malformed: 64 proof lines", body: body(3, zeroHashes(64), main.checkpoint(t, key, 5)), status: 400},
		{name: "proof from zero must be empty", body: body(0, main.proof(t, 2, 5), main.checkpoint(t, key, 5)), status: 400},
		{name: "unknown origin", body: body(0, nil, main.checkpoint(t, stranger, 5)), status: 404},
		{name: "untrusted key", body: body(0, nil, main.checkpoint(t, other, 5)), status: 403},
		{name: "first checkpoint", body: body(0, nil, main.checkpoint(t, key, 5)), status: 200, cosigned: main.checkpoint(t, key, 5)},
		{name: "stale old size", body: body(0, nil, main.checkpoint(t, key, 8)), status: 409, size: "5\n"},
		{name: "consistent growth", body: body(5, main.proof(t, 5, 12), main.checkpoint(t, key, 12)), status: 200, cosigned: main.checkpoint(t, key, 12)},
		{name: "same checkpoint again", body: body(12, nil, main.checkpoint(t, key, 12)), status: 200, cosigned: main.checkpoint(t, key, 12)},
		{name: "old size ahead of checkpoint (rollback)", body: body(12, nil, main.checkpoint(t, key, 8)), status: 400},
		{name: "rollback from a smaller old size", body: body(8, nil, main.checkpoint(t, key, 8)), status: 409, size: "12\n"},
		{name: "different root at the same size", body: body(12, nil, forked.checkpoint(t, key, 12)), status: 409, size: "12\n"},
		{name: "rewritten history: bad proof", body: body(12, forked.proof(t, 12, 16), forked.checkpoint(t, key, 16)), status: 422},
		{name: "proof for other sizes", body: body(12, main.proof(t, 5, 16), main.checkpoint(t, key, 16)), status: 422},
		{name: "growth after refusals", body: body(12, main.proof(t, 12, 20), main.checkpoint(t, key, 20)), status: 200, cosigned: main.checkpoint(t, key, 20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, ct, out := post(t, w.url, tc.body)
			if status != tc.status {
				t.Fatalf("status %d (%q), want %d", status, out, tc.status)
			}
			if tc.status == 409 && tc.size != "" {
				if ct != witness.SizeContentType || out != tc.size {
					t.Fatalf("409 body %q type %q, want %q type %s", out, ct, tc.size, witness.SizeContentType)
				}
			}
			if tc.cosigned != nil {
				// The answer is note signature lines; appended to the checkpoint they verify with
				// transparency-dev's cosignature/v1 verifier.
				if !strings.HasPrefix(out, "— witness.test/w1 ") || !strings.HasSuffix(out, "\n") {
					t.Fatalf("answer %q is not a signature line", out)
				}
				n, err := note.Open(append(append([]byte(nil), tc.cosigned...), out...), note.VerifierList(wv))
				if err != nil || len(n.Sigs) != 1 {
					t.Fatalf("cosignature does not verify: %v", err)
				}
				ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
				if err != nil || ts.Unix() == 0 {
					t.Fatalf("cosignature timestamp %v, %v", ts, err)
				}
			}
		})
	}

	t.Run("state survives a restart", func(t *testing.T) {
		w2 := startWitnessWithKey(t, w.skey, w.vkey, w.state, key.vkey)
		status, _, out := post(t, w2.url, body(0, nil, main.checkpoint(t, key, 20)))
		if status != 409 || out != "20\n" {
			t.Fatalf("restarted witness answered %d %q, want 409 20", status, out)
		}
	})

	t.Run("state that does not verify refuses, never restarts from zero", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(w.state, "*.checkpoint"))
		if len(files) != 1 {
			t.Fatalf("state files %v", files)
		}
		// Someone replaces the state with a checkpoint of a forged log at size 1.
		if err := os.WriteFile(files[0], forked.checkpoint(t, other, 1), 0o600); err != nil {
			t.Fatal(err)
		}
		status, _, _ := post(t, w.url, body(0, nil, forked.checkpoint(t, key, 3)))
		if status != 500 {
			t.Fatalf("status %d, want 500 (refuse while the state does not verify)", status)
		}
	})
}

// TestAddCheckpointConcurrent races submissions of growing checkpoints: the witness's state never goes
// back, and every cosigned size was consistent with the one before (the rollback race in the spec).
func TestAddCheckpointConcurrent(t *testing.T) {
	key := newLogKey(t, origin)
	w := startWitness(t, "witness.test/w1", t.TempDir(), key.vkey)
	tr := newTree("main", 64)
	var mu sync.Mutex
	cosigned := map[uint64]bool{}
	var wg sync.WaitGroup
	for size := uint64(1); size <= 64; size++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			old := uint64(0)
			for range 100 {
				status, _, out := post(t, w.url, body(old, tr.proof(t, old, size), tr.checkpoint(t, key, size)))
				switch status {
				case 200:
					mu.Lock()
					cosigned[size] = true
					mu.Unlock()
					return
				case 409:
					if _, err := fmt.Sscan(out, &old); err != nil {
						t.Error(err)
						return
					}
					if old > size {
						return // overtaken: the witness must not roll back to size
					}
				case 400: // old > size after an overtake
					return
				default:
					t.Errorf("size %d: status %d %s", size, status, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	status, _, out := post(t, w.url, body(0, nil, tr.checkpoint(t, key, 64)))
	if status != 409 || out != "64\n" {
		t.Fatalf("final state: %d %q, want 409 64", status, out)
	}
	if !cosigned[64] {
		t.Fatal("the largest checkpoint was never cosigned")
	}
}

func TestClientVerifiesAnswer(t *testing.T) {
	key := newLogKey(t, origin)
	w := startWitness(t, "witness.test/w1", t.TempDir(), key.vkey)
	impostor, _, _ := witness.GenerateKey("witness.test/w1")
	iv, _ := witness.VerifierKeyOf(impostor)
	tr := newTree("main", 4)
	for _, tc := range []struct {
		name string
		vkey string
		ok   bool
	}{{"right key", w.vkey, true}, {"other key of the same name", iv, false}} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := fnote.NewVerifierForCosignatureV1(tc.vkey)
			if err != nil {
				t.Fatal(err)
			}
			line, err := witness.Client{URL: w.url, Key: v}.AddCheckpoint(context.Background(), 0, nil, tr.checkpoint(t, key, 4))
			if tc.ok != (err == nil) {
				t.Fatalf("AddCheckpoint: %q, %v", line, err)
			}
			if tc.ok && !bytes.HasPrefix(line, []byte("— witness.test/w1 ")) {
				t.Fatalf("line %q", line)
			}
		})
	}
}
