package witness_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/witness"
)

func TestParsePolicy(t *testing.T) {
	_, vk1, _ := witness.GenerateKey("w1.test/w")
	_, vk2, _ := witness.GenerateKey("w2.test/w")
	for _, tc := range []struct {
		name, text, err string
		k, n            int
	}{
		{"k of n", fmt.Sprintf("witness a %s http://a.test\nwitness b %s\ngroup g 1 a b\nquorum g\n", vk1, vk2), "", 1, 2},
		{"all, comments", fmt.Sprintf("# who\nwitness a %s # dpa\nwitness b %s\ngroup g all a b\nquorum g\n", vk1, vk2), "", 2, 2},
		{"single witness quorum", fmt.Sprintf("witness a %s\nquorum a\n", vk1), "", 1, 1},
		{"none", "quorum none\n", "", 0, 0},
		{"no quorum", fmt.Sprintf("witness a %s\n", vk1), "no quorum", 0, 0},
		{"threshold too high", fmt.Sprintf("witness a %s\ngroup g 2 a\nquorum g\n", vk1), "threshold", 0, 0},
		{"undefined member", fmt.Sprintf("witness a %s\ngroup g 1 a b\nquorum g\n", vk1), "not defined", 0, 0},
		{"duplicate name", fmt.Sprintf("witness a %s\nwitness a %s\nquorum a\n", vk1, vk2), "already used", 0, 0},
		{"same key twice", fmt.Sprintf("witness a %s\nwitness b %s\nquorum a\n", vk1, vk1), "same key", 0, 0},
		{"bad key", "witness a nonsense\nquorum a\n", "key", 0, 0},
		{"bad url", fmt.Sprintf("witness a %s ftp://x\nquorum a\n", vk1), "URL", 0, 0},
		{"unknown keyword", "cosigner a b\nquorum none\n", "unknown keyword", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := witness.ParsePolicy([]byte(tc.text))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k, n := p.Quorum(); k != tc.k || n != tc.n {
				t.Fatalf("quorum %d of %d, want %d of %d", k, n, tc.k, tc.n)
			}
		})
	}
}

// TestPolicyVerify signs a checkpoint with the log and some witnesses and checks the k-of-n rule.
func TestPolicyVerify(t *testing.T) {
	key := newLogKey(t, origin)
	forger := newLogKey(t, origin)
	tr := newTree("main", 10)
	type wkey struct {
		name string
		s    note.Signer
		vkey string
	}
	var ws []wkey
	var text strings.Builder
	for _, name := range []string{"a", "b", "c"} {
		skey, vkey, err := witness.GenerateKey(name + ".test/witness")
		if err != nil {
			t.Fatal(err)
		}
		s, err := cosigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, wkey{name, s, vkey})
		fmt.Fprintf(&text, "witness %s %s\n", name, vkey)
	}
	text.WriteString("group two 2 a b c\nquorum two\n")
	p, err := witness.ParsePolicy([]byte(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(key.vkey)
	if err != nil {
		t.Fatal(err)
	}
	p = p.WithLog(v)
	cosign := func(cp []byte, names ...string) []byte {
		n, err := note.Open(cp, note.VerifierList(v))
		if err != nil {
			n, err = note.Open(cp, note.VerifierList(mustVerifier(t, forger.vkey)))
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, w := range ws {
			if slices.Contains(names, w.name) {
				signed, err := note.Sign(&note.Note{Text: n.Text}, w.s)
				if err != nil {
					t.Fatal(err)
				}
				cp = append(append([]byte(nil), cp...), signed[len(n.Text)+1:]...)
			}
		}
		return cp
	}
	cp := tr.checkpoint(t, key, 10)
	for _, tc := range []struct {
		name      string
		note      []byte
		err       error
		cosigners []string
	}{
		{"no cosignature", cp, witness.ErrQuorum, nil},
		{"one of two", cosign(cp, "b"), witness.ErrQuorum, nil},
		{"two", cosign(cp, "a", "c"), nil, []string{"a", "c"}},
		{"three", cosign(cp, "c", "b", "a"), nil, []string{"a", "b", "c"}},
		{"forged log signature", cosign(tr.checkpoint(t, forger, 10), "a", "b"), witness.ErrLogSignature, nil},
		{"tampered cosignature", []byte(strings.Replace(string(cosign(cp, "a", "b")), "— b.test/witness ", "— b.test/witness A", 1)), errAny, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Verify(tc.note)
			switch {
			case tc.err == errAny && err == nil:
				t.Fatal("accepted")
			case tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
				t.Fatalf("err %v, want %v", err, tc.err)
			case tc.err == nil && (err != nil || !slices.Equal(got, tc.cosigners)):
				t.Fatalf("cosigners %v, %v; want %v", got, err, tc.cosigners)
			}
		})
	}
}

var errAny = errors.New("any error")

func mustVerifier(t testing.TB, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func cosigner(skey string) (note.Signer, error) { return fnote.NewSignerForCosignatureV1(skey) }
