package portal

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/witness"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// proofAnswer is what the fake citizen API answers to GetAccessProof (nil: NOT_FOUND).
var proofAnswer atomic.Pointer[citizenv1.GetAccessProofResponse]

func (f *fakeCitizen) GetAccessProof(ctx context.Context, r *citizenv1.GetAccessProofRequest) (*citizenv1.GetAccessProofResponse, error) {
	if err := f.enter(ctx, "GetAccessProof", r); err != nil {
		return nil, err
	}
	resp := proofAnswer.Load()
	if resp == nil {
		return nil, status.Error(codes.NotFound, "you have no such access")
	}
	return resp, nil
}

// proofWorld is a log of access records with a checkpoint cosigned by some of two witnesses, built with
// transparency-dev's reference tree and signers, and the policy (2 of 2) that checks it.
type proofWorld struct {
	policy *witness.Policy
	tree   *testonly.Tree
	leaves [][]byte
	log    note.Signer
	wits   []note.Signer
}

func newProofWorld(t *testing.T) *proofWorld {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "portal.test/log")
	if err != nil {
		t.Fatal(err)
	}
	w := &proofWorld{tree: testonly.New(rfc6962.DefaultHasher)}
	if w.log, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	var pol strings.Builder
	for i := 1; i <= 2; i++ {
		ws, wv, err := witness.GenerateKey(fmt.Sprintf("w%d.portal.test/witness", i))
		if err != nil {
			t.Fatal(err)
		}
		s, err := fnote.NewSignerForCosignatureV1(ws)
		if err != nil {
			t.Fatal(err)
		}
		w.wits = append(w.wits, s)
		fmt.Fprintf(&pol, "witness w%d %s\n", i, wv)
	}
	pol.WriteString("group g all w1 w2\nquorum g\n")
	p, err := witness.ParsePolicy([]byte(pol.String()))
	if err != nil {
		t.Fatal(err)
	}
	lv, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	w.policy = p.WithLog(lv)
	for i := range 9 {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&auditv1.AccessRecord{Id: accID(i), Agency: "x"})
		w.leaves = append(w.leaves, b)
		w.tree.AppendData(b)
	}
	return w
}

// answer is the proof of leaf i in a checkpoint cosigned by the first n witnesses.
func (w *proofWorld) answer(t *testing.T, i, n int) *citizenv1.GetAccessProofResponse {
	t.Helper()
	size := w.tree.Size()
	text := string(log.Checkpoint{Origin: w.log.Name(), Size: size, Hash: w.tree.Hash()}.Marshal())
	cp, err := note.Sign(&note.Note{Text: text}, append([]note.Signer{w.log}, w.wits[:n]...)...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := w.tree.InclusionProof(uint64(i), size)
	if err != nil {
		t.Fatal(err)
	}
	return &citizenv1.GetAccessProofResponse{Leaf: w.leaves[i], LeafIndex: uint64(i), InclusionProof: p, Checkpoint: cp, TreeSize: size,
		Cosigners: []string{"w1", "w2"}[:n], Quorum: 2, Witnesses: 2}
}

// TestAccessProofPage: the portal says "verified … cosigned by N witnesses" only when it verified the
// proof itself, in English and Danish; a proof that does not add up is shown as a failed check.
func TestAccessProofPage(t *testing.T) {
	base := newStack(t)
	w := newProofWorld(t)
	withPolicy, withoutPolicy := withWitnesses(t, base, w.policy), withWitnesses(t, base, nil)
	t.Cleanup(func() { proofAnswer.Store(nil) })
	other := w.answer(t, 3, 2)
	wrongLeaf := w.answer(t, 4, 2)
	wrongLeaf.Leaf = other.Leaf // the proof of leaf 4 with the bytes of leaf 3

	for _, tc := range []struct {
		name   string
		answer *citizenv1.GetAccessProofResponse
		fail   error
		nilPol bool
		lang   string
		code   int
		want   string
	}{
		{name: "verified", answer: w.answer(t, 4, 2), lang: "en", code: 200, want: "Verified in the public log, cosigned by 2 witnesses."},
		{name: "verified, Danish", answer: w.answer(t, 4, 2), lang: "da", code: 200, want: "Bekræftet i den offentlige log, medunderskrevet af 2 vidner."},
		{name: "proof of another access", answer: other, lang: "en", code: 502, want: "The check failed"},
		{name: "leaf does not match the proof", answer: wrongLeaf, lang: "en", code: 502, want: "The check failed"},
		{name: "below the quorum", answer: w.answer(t, 4, 1), lang: "da", code: 502, want: "Tjekket slog fejl"},
		{name: "not cosigned yet", fail: status.Error(codes.Unavailable, "try again"), lang: "en", code: 200, want: "have not confirmed it yet"},
		{name: "not the citizen's", lang: "en", code: 404},
		{name: "portal without a policy", answer: w.answer(t, 4, 2), nilPol: true, lang: "en", code: 200, want: "cannot be checked here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proofAnswer.Store(tc.answer)
			base.fake.setFail("GetAccessProof", tc.fail)
			s := withPolicy
			if tc.nilPol {
				s = withoutPolicy
			}
			r := s.get(t, "/accesses/"+accID(4)+"/proof", map[string]string{"Accept-Language": tc.lang})
			if r.code != tc.code {
				t.Fatalf("status %d, want %d\n%s", r.code, tc.code, r.body)
			}
			if tc.code != 404 {
				checkPage(t, r, tc.lang)
			}
			if !strings.Contains(r.body, tc.want) {
				t.Fatalf("page does not say %q:\n%s", tc.want, r.body)
			}
			if tc.code == 200 && strings.Contains(r.body, "Verified in") && tc.want != "Verified in the public log, cosigned by 2 witnesses." {
				t.Fatal("says verified")
			}
			if got := s.fake.last("GetAccessProof"); got == nil || got.req.(*citizenv1.GetAccessProofRequest).GetAccessId() != accID(4) {
				t.Fatalf("API asked %v", got)
			}
		})
	}
	r := withPolicy.get(t, "/accesses/not-an-id/proof", nil)
	if r.code != 404 {
		t.Fatalf("malformed id: %d", r.code)
	}
}

// withWitnesses is another portal on the same fake API, configured with the witness policy pol.
func withWitnesses(t *testing.T, s *stack, pol *witness.Policy) *stack {
	t.Helper()
	cfg := s.portal.cfg
	cfg.Witnesses = pol
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &stack{fake: s.fake, srv: srv, portal: p}
}
