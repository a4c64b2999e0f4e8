package witness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
)

// Errors of Policy.Open.
var (
	// ErrLogSignature means the checkpoint carries no valid signature of the log's key.
	ErrLogSignature = errors.New("checkpoint is not signed by the log")
	// ErrQuorum means too few witnesses cosigned the checkpoint.
	ErrQuorum = errors.New("checkpoint is not cosigned by enough witnesses")
)

// Witness is one witness of a policy.
type Witness struct {
	// Name is the witness's name in the policy file ("dpa").
	Name string
	// VKey is its cosignature/v1 verifier key; Key verifies its cosignatures.
	VKey string
	Key  note.Verifier
	// URL is its submission prefix (POST URL/add-checkpoint); empty in a verifier-only policy.
	URL string
}

// Policy says which witnesses a checkpoint must be cosigned by: k of n, or nested groups. Its file
// format is the one of Sigsum and Tessera (https://git.glasklar.is/sigsum/core/sigsum-go/-/blob/main/doc/policy.md),
// with cosignature/v1 witness keys, so the same file works with their tools:
//
//	log <vkey> [<url>]                        # the log's checkpoint key (optional here: callers add it)
//	witness <name> <vkey> [<url>]             # a witness, its key and submission prefix
//	group <name> <k>|any|all <member>...      # k of the members (witnesses or groups)
//	quorum <name>|none                        # the group (or witness) that must be satisfied
//
// "quorum none" accepts a checkpoint with the log's signature alone.
type Policy struct {
	Witnesses []Witness
	logs      []note.Verifier
	quorum    component // nil: none
	quorumK   int       // what Describe prints
	quorumN   int
}

type component interface {
	satisfied(cosigned map[string]bool) bool
}

type witnessRef string

func (w witnessRef) satisfied(c map[string]bool) bool { return c[string(w)] }

type group struct {
	k       int
	members []component
}

func (g group) satisfied(c map[string]bool) bool {
	n := 0
	for _, m := range g.members {
		if m.satisfied(c) {
			n++
		}
	}
	return n >= g.k
}

// LoadPolicy reads a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read witness policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("witness policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a policy file.
func ParsePolicy(b []byte) (*Policy, error) {
	p := &Policy{}
	components := map[string]component{}
	sizes := map[string][2]int{} // name → k, n for Describe
	quorum := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d: %s", lineNo, fmt.Sprintf(format, args...))
		}
		switch f[0] {
		case "log":
			if len(f) < 2 || len(f) > 3 {
				return nil, bad("want \"log <vkey> [<url>]\"")
			}
			v, err := note.NewVerifier(f[1])
			if err != nil {
				return nil, bad("log key: %v", err)
			}
			p.logs = append(p.logs, v)
		case "witness":
			if len(f) < 3 || len(f) > 4 {
				return nil, bad("want \"witness <name> <vkey> [<url>]\"")
			}
			name := f[1]
			if reserved(name) || components[name] != nil {
				return nil, bad("witness name %q is reserved or already used", name)
			}
			v, err := fnote.NewVerifierForCosignatureV1(f[2])
			if err != nil {
				return nil, bad("witness %s key: %v", name, err)
			}
			w := Witness{Name: name, VKey: f[2], Key: v}
			if len(f) == 4 {
				u, err := url.Parse(f[3])
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return nil, bad("witness %s URL %q: want http(s)://host/prefix", name, f[3])
				}
				w.URL = strings.TrimSuffix(f[3], "/")
			}
			for _, o := range p.Witnesses {
				if o.Key.Name() == v.Name() && o.Key.KeyHash() == v.KeyHash() {
					return nil, bad("witness %s has the same key as %s", name, o.Name)
				}
			}
			p.Witnesses = append(p.Witnesses, w)
			components[name] = witnessRef(name)
			sizes[name] = [2]int{1, 1}
		case "group":
			if len(f) < 4 {
				return nil, bad("want \"group <name> <k>|any|all <member>...\"")
			}
			name, members := f[1], f[3:]
			if reserved(name) || components[name] != nil {
				return nil, bad("group name %q is reserved or already used", name)
			}
			var k int
			switch f[2] {
			case "any":
				k = 1
			case "all":
				k = len(members)
			default:
				n, err := strconv.Atoi(f[2])
				if err != nil || n < 1 || n > len(members) {
					return nil, bad("group %s: threshold %q: want 1 to %d, any or all", name, f[2], len(members))
				}
				k = n
			}
			g := group{k: k}
			seen := map[string]bool{}
			for _, m := range members {
				c, ok := components[m]
				if !ok {
					return nil, bad("group %s: %q is not defined above", name, m)
				}
				if seen[m] {
					return nil, bad("group %s lists %q twice", name, m)
				}
				seen[m] = true
				g.members = append(g.members, c)
			}
			components[name] = g
			sizes[name] = [2]int{k, len(members)}
		case "quorum":
			if len(f) != 2 || quorum != "" {
				return nil, bad("want one \"quorum <name>|none\"")
			}
			quorum = f[1]
		default:
			return nil, bad("unknown keyword %q", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	switch quorum {
	case "":
		return nil, errors.New("no quorum line")
	case "none":
	default:
		c, ok := components[quorum]
		if !ok {
			return nil, fmt.Errorf("quorum %q is not defined", quorum)
		}
		p.quorum = c
		p.quorumK, p.quorumN = sizes[quorum][0], sizes[quorum][1]
	}
	return p, nil
}

func reserved(name string) bool {
	switch name {
	case "log", "witness", "group", "quorum", "any", "all", "none":
		return true
	}
	return false
}

// WithLog returns a copy of p that also accepts the log signatures of vs (the log's checkpoint key and
// its earlier versions). A policy without any log key accepts no checkpoint.
func (p *Policy) WithLog(vs ...note.Verifier) *Policy {
	c := *p
	c.logs = append(append([]note.Verifier(nil), p.logs...), vs...)
	return &c
}

// Quorum returns k and n of the quorum for display ("2 of 3"); k is 0 for "quorum none".
func (p *Policy) Quorum() (k, n int) { return p.quorumK, p.quorumN }

// Describe says the rule in words: "2 of 3 witnesses".
func (p *Policy) Describe() string {
	if p.quorum == nil {
		return "no witness required"
	}
	return fmt.Sprintf("%d of %d witnesses", p.quorumK, p.quorumN)
}

// Cosigned is a checkpoint that satisfies a policy.
type Cosigned struct {
	// Note is the signed note as given.
	Note   []byte
	Origin string
	Size   uint64
	Root   []byte
	// Cosigners are the policy names of the witnesses whose cosignature verified, in policy order.
	Cosigners []string
}

// Open verifies a cosigned checkpoint: a valid signature of one of the log's keys, and valid
// cosignatures of enough witnesses for the quorum. Signatures of unknown keys are ignored; a signature
// line of a known key that does not verify fails the whole note.
func (p *Policy) Open(b []byte) (Cosigned, error) {
	if len(p.logs) == 0 {
		return Cosigned{}, fmt.Errorf("%w: the policy knows no log key", ErrLogSignature)
	}
	vs := append([]note.Verifier(nil), p.logs...)
	for _, w := range p.Witnesses {
		vs = append(vs, w.Key)
	}
	n, err := note.Open(b, note.VerifierList(vs...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return Cosigned{}, fmt.Errorf("%w: no signature of a known key", ErrLogSignature)
		}
		return Cosigned{}, fmt.Errorf("checkpoint note: %w", err)
	}
	logKey := ""
	cosigned := map[string]bool{}
	for _, s := range n.Sigs {
		for _, l := range p.logs {
			if s.Name == l.Name() && s.Hash == l.KeyHash() {
				logKey = l.Name()
			}
		}
		for _, w := range p.Witnesses {
			if s.Name == w.Key.Name() && s.Hash == w.Key.KeyHash() {
				cosigned[w.Name] = true
			}
		}
	}
	if logKey == "" {
		return Cosigned{}, ErrLogSignature
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return Cosigned{}, fmt.Errorf("checkpoint body: %w", err)
	}
	if cp.Origin != logKey {
		return Cosigned{}, fmt.Errorf("%w: origin %q is not the key's name %q", ErrLogSignature, cp.Origin, logKey)
	}
	out := Cosigned{Note: b, Origin: cp.Origin, Size: cp.Size, Root: cp.Hash}
	for _, w := range p.Witnesses {
		if cosigned[w.Name] {
			out.Cosigners = append(out.Cosigners, w.Name)
		}
	}
	if p.quorum != nil && !p.quorum.satisfied(cosigned) {
		return out, fmt.Errorf("%w: %d cosigned (%s), the policy needs %s", ErrQuorum, len(out.Cosigners),
			strings.Join(out.Cosigners, ", "), p.Describe())
	}
	return out, nil
}

// Verify checks the log signature and the quorum of cosignatures and returns who cosigned.
func (p *Policy) Verify(b []byte) (cosigners []string, err error) {
	c, err := p.Open(b)
	if err != nil {
		return nil, err
	}
	return c.Cosigners, nil
}

// ErrInclusion means an inclusion proof does not verify against the checkpoint.
var ErrInclusion = errors.New("inclusion proof does not verify")

// VerifyInclusion checks that the leaf (its exact bytes, hashed as an RFC 6962 leaf) is leaf number index
// of the tree of a checkpoint that satisfies p, using the inclusion proof.
func (p *Policy) VerifyInclusion(checkpoint, leaf []byte, index uint64, inclusion [][]byte) (Cosigned, error) {
	c, err := p.Open(checkpoint)
	if err != nil {
		return Cosigned{}, err
	}
	if err := proof.VerifyInclusion(hasher, index, c.Size, hasher.HashLeaf(leaf), inclusion, c.Root); err != nil {
		return Cosigned{}, fmt.Errorf("%w: leaf %d in a tree of %d: %w", ErrInclusion, index, c.Size, err)
	}
	return c, nil
}
