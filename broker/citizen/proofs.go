package citizen

import (
	"context"
	"errors"

	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/witness"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// LogTree is the access log's Merkle tree (tlog.Tree), for inclusion proofs.
type LogTree interface {
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)
}

// Witnessed serves the newest checkpoint cosigned by the witnesses and the policy it satisfies
// (witness.Cosigner).
type Witnessed interface {
	LatestCheckpoint(ctx context.Context) ([]byte, error)
	Policy() *witness.Policy
}

// GetAccessProof implements CitizenService: the inclusion proof of one of the citizen's own accesses
// in the newest cosigned checkpoint, verified here before it is served.
//
// The access is looked up among the citizen's own (anything else is NotFound, as everywhere). Its
// leaf bytes and leaf index come from the citizen's index entry, which the broker's MAC
// authenticates, not from the tree's access-id lookup, which nothing does: a repointed lookup cannot
// make this prove someone else's record. The proof is verified against the cosigned checkpoint before
// it is served, so an index that disagrees with the tree is an internal error, never a proof.
func (s *Service) GetAccessProof(ctx context.Context, req *citizenv1.GetAccessProofRequest) (*citizenv1.GetAccessProofResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	entry, err := s.findEntry(ctx, c.Pseudonym.Value, req.GetAccessId(), s.cfg.Now())
	if err != nil {
		return nil, err
	}
	if s.cfg.Tree == nil || s.cfg.Witnessed == nil {
		return nil, refusal.New(refusal.Unavailable, "the public access log is not available here")
	}
	rec, raw, index := entry.Record, entry.Leaf, entry.LeafIndex
	note, err := s.cfg.Witnessed.LatestCheckpoint(ctx)
	if errors.Is(err, witness.ErrNotFound) {
		return nil, refusal.New(refusal.Unavailable, "the witnesses have not cosigned the log yet; try again in a few seconds")
	}
	if err != nil {
		return nil, unavailable(err, "the cosigned checkpoint")
	}
	policy := s.cfg.Witnessed.Policy()
	cp, err := policy.Open(note)
	if err != nil {
		s.log.Error("cosigned checkpoint does not satisfy the witness policy", "err", err)
		return nil, refusal.Wrap(refusal.Internal, err, "cosigned checkpoint does not verify")
	}
	if index >= cp.Size {
		return nil, refusal.New(refusal.Unavailable, "access %s was logged after the newest cosigned checkpoint; try again in a few seconds", rec.GetId())
	}
	inclusion, err := s.cfg.Tree.InclusionProof(ctx, index, cp.Size)
	if err != nil {
		return nil, unavailable(err, "the public access log")
	}
	// The proof is checked before it is served: a corrupted tile must not reach the citizen as a
	// proof that fails in their hands.
	if _, err := policy.VerifyInclusion(note, raw, index, inclusion); err != nil {
		s.log.Error("inclusion proof from the stored tree does not verify", "access", rec.GetId(), "leaf", index, "size", cp.Size, "err", err)
		return nil, refusal.Wrap(refusal.Internal, err, "inclusion proof does not verify")
	}
	k, n := policy.Quorum()
	return &citizenv1.GetAccessProofResponse{
		Leaf: raw, LeafIndex: index, InclusionProof: inclusion, Checkpoint: note, TreeSize: cp.Size,
		Cosigners: cp.Cosigners, Quorum: uint32(k), Witnesses: uint32(n),
	}, nil
}

// WithProofs returns cfg with the tree and the cosigned checkpoints set. A nil cosigner (no witness
// policy) leaves GetAccessProof Unavailable: a proof against a checkpoint only the broker signed would
// rest on the broker alone.
func (cfg Config) WithProofs(tree LogTree, cosigned *witness.Cosigner) Config {
	if tree != nil && cosigned != nil {
		cfg.Tree, cfg.Witnessed = tree, cosigned
	}
	return cfg
}
