package citizen

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// LogTree is the access log's Merkle tree (tlog.Tree), for inclusion proofs.
type LogTree interface {
	LeafByID(ctx context.Context, accessID string) (tlog.Leaf, error)
	Record(ctx context.Context, leaf tlog.Leaf) ([]byte, error)
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
// The access is looked up among the citizen's own first (anything else is NotFound, as everywhere),
// and the record the tree holds at the leaf must be that access of that citizen: a leaf lookup that was
// repointed at another record is an internal error, never a proof of someone else's access.
func (s *Service) GetAccessProof(ctx context.Context, req *citizenv1.GetAccessProofRequest) (*citizenv1.GetAccessProofResponse, error) {
	c, err := citizenOf(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := s.findAccess(ctx, c.Pseudonym.Value, req.GetAccessId(), s.cfg.Now())
	if err != nil {
		return nil, err
	}
	if s.cfg.Tree == nil || s.cfg.Witnessed == nil {
		return nil, refusal.New(refusal.Unavailable, "the public access log is not available here")
	}
	leaf, err := s.cfg.Tree.LeafByID(ctx, rec.GetId())
	if errors.Is(err, tlog.ErrNotFound) {
		return nil, refusal.New(refusal.Unavailable, "access %s is not in the public log yet; try again in a few seconds", rec.GetId())
	}
	if err != nil {
		return nil, unavailable(err, "the public access log")
	}
	raw, err := s.cfg.Tree.Record(ctx, leaf)
	if err != nil {
		return nil, unavailable(err, "the public access log")
	}
	var logged auditv1.AccessRecord
	if err := proto.Unmarshal(raw, &logged); err != nil || logged.GetId() != rec.GetId() ||
		logged.GetCitizenPseudonym() != c.Pseudonym.Value {
		s.log.Error("the tree's leaf for an access is another record; refusing to prove it",
			"access", rec.GetId(), "leaf", leaf.Index, "logged_id", logged.GetId())
		return nil, refusal.New(refusal.Internal, "leaf lookup does not match the record")
	}
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
	if leaf.Index >= cp.Size {
		return nil, refusal.New(refusal.Unavailable, "access %s was logged after the newest cosigned checkpoint; try again in a few seconds", rec.GetId())
	}
	inclusion, err := s.cfg.Tree.InclusionProof(ctx, leaf.Index, cp.Size)
	if err != nil {
		return nil, unavailable(err, "the public access log")
	}
	// The proof is checked before it is served: a corrupted tile must not reach the citizen as a
	// proof that fails in their hands.
	if _, err := policy.VerifyInclusion(note, raw, leaf.Index, inclusion); err != nil {
		s.log.Error("inclusion proof from the stored tree does not verify", "access", rec.GetId(), "leaf", leaf.Index, "size", cp.Size, "err", err)
		return nil, refusal.Wrap(refusal.Internal, err, "inclusion proof does not verify")
	}
	k, n := policy.Quorum()
	return &citizenv1.GetAccessProofResponse{
		Leaf: raw, LeafIndex: leaf.Index, InclusionProof: inclusion, Checkpoint: note, TreeSize: cp.Size,
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
