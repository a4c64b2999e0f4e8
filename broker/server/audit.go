package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// AccessLister reads one citizen's access records with their Merkle leaves, newest first.
type AccessLister interface {
	ListEntries(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]accesslog.Entry, string, error)
}

// TransparencyLog serves the signed checkpoints and the Merkle proofs of the access log
// (tlog.Tree implements it).
type TransparencyLog interface {
	LatestCheckpoint(ctx context.Context) (tlog.Checkpoint, error)
	LeafByID(ctx context.Context, accessID string) (tlog.Leaf, error)
	LeafHash(ctx context.Context, index uint64) ([]byte, error)
	Record(ctx context.Context, leaf tlog.Leaf) ([]byte, error)
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)
	ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error)
}

// Audit implements aperture.audit.v1.AuditService for auditors.
type Audit struct {
	auditv1.UnimplementedAuditServiceServer
	log        AccessLister
	tree       TransparencyLog
	pseudonyms keys.Pseudonymizer
	logger     *slog.Logger
}

// NewAudit returns the AuditService implementation.
func NewAudit(log AccessLister, tree TransparencyLog, pseudonyms keys.Pseudonymizer, logger *slog.Logger) *Audit {
	return &Audit{log: log, tree: tree, pseudonyms: pseudonyms, logger: logger}
}

// ListAccessRecords implements AuditService.
func (a *Audit) ListAccessRecords(ctx context.Context, req *auditv1.ListAccessRecordsRequest) (*auditv1.ListAccessRecordsResponse, error) {
	const method = "/aperture.audit.v1.AuditService/ListAccessRecords"
	c, err := requireRole(ctx, RoleAuditor)
	if err != nil {
		return nil, toStatus(ctx, a.logger, method, err)
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	pn := a.pseudonyms.Pseudonym(req.GetCitizenId())
	entries, next, err := a.log.ListEntries(ctx, pn.Value, size, req.GetPageToken())
	switch {
	case errors.Is(err, accesslog.ErrInvalidPageToken):
		return nil, toStatus(ctx, a.logger, method, refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned"))
	case err != nil:
		return nil, toStatus(ctx, a.logger, method, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable"))
	}
	a.logger.Info("auditor listed access records", "auditor", c.ID, "pseudonym", pn.Value, "records", len(entries))
	resp := &auditv1.ListAccessRecordsResponse{NextPageToken: next}
	for _, e := range entries {
		// The leaf beside each record binds the listing to the tree (issue 11 §4).
		resp.Records = append(resp.Records, e.Record)
		resp.Leaves = append(resp.Leaves, &auditv1.ListedLeaf{LeafIndex: e.LeafIndex, Leaf: e.Leaf})
	}
	return resp, nil
}

// GetCheckpoint implements AuditService.
func (a *Audit) GetCheckpoint(ctx context.Context, _ *auditv1.GetCheckpointRequest) (*auditv1.GetCheckpointResponse, error) {
	const method = "/aperture.audit.v1.AuditService/GetCheckpoint"
	if _, err := requireRole(ctx, RoleAuditor); err != nil {
		return nil, toStatus(ctx, a.logger, method, err)
	}
	cp, err := a.tree.LatestCheckpoint(ctx)
	if err != nil {
		return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
	}
	return &auditv1.GetCheckpointResponse{Checkpoint: cp.Note, Origin: cp.Origin, TreeSize: cp.Size, RootHash: cp.Root}, nil
}

// GetInclusionProof implements AuditService.
func (a *Audit) GetInclusionProof(ctx context.Context, req *auditv1.GetInclusionProofRequest) (*auditv1.GetInclusionProofResponse, error) {
	const method = "/aperture.audit.v1.AuditService/GetInclusionProof"
	c, err := requireRole(ctx, RoleAuditor)
	if err != nil {
		return nil, toStatus(ctx, a.logger, method, err)
	}
	resp := &auditv1.GetInclusionProofResponse{TreeSize: req.GetTreeSize()}
	if resp.TreeSize == 0 {
		cp, err := a.tree.LatestCheckpoint(ctx)
		if err != nil {
			return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
		}
		resp.TreeSize, resp.Checkpoint = cp.Size, cp.Note
	}
	switch leaf := req.GetLeaf().(type) {
	case *auditv1.GetInclusionProofRequest_AccessId:
		l, err := a.tree.LeafByID(ctx, leaf.AccessId)
		if err != nil {
			return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
		}
		if resp.Record, err = a.tree.Record(ctx, l); err != nil {
			return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
		}
		resp.LeafIndex = l.Index
	case *auditv1.GetInclusionProofRequest_LeafIndex:
		resp.LeafIndex = leaf.LeafIndex
	}
	if resp.LeafIndex >= resp.TreeSize {
		// Not yet in a checkpoint (or not in the size asked for): say so rather than fail a proof.
		return nil, toStatus(ctx, a.logger, method, refusal.New(refusal.FailedPrecondition,
			"leaf %d is not in the tree of size %d yet", resp.LeafIndex, resp.TreeSize))
	}
	if resp.LeafHash, err = a.tree.LeafHash(ctx, resp.LeafIndex); err != nil {
		return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
	}
	if resp.Hashes, err = a.tree.InclusionProof(ctx, resp.LeafIndex, resp.TreeSize); err != nil {
		return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
	}
	a.logger.Info("auditor fetched an inclusion proof", "auditor", c.ID, "leaf", resp.LeafIndex, "tree_size", resp.TreeSize)
	return resp, nil
}

// GetConsistencyProof implements AuditService.
func (a *Audit) GetConsistencyProof(ctx context.Context, req *auditv1.GetConsistencyProofRequest) (*auditv1.GetConsistencyProofResponse, error) {
	const method = "/aperture.audit.v1.AuditService/GetConsistencyProof"
	if _, err := requireRole(ctx, RoleAuditor); err != nil {
		return nil, toStatus(ctx, a.logger, method, err)
	}
	resp := &auditv1.GetConsistencyProofResponse{FromSize: req.GetFromSize(), ToSize: req.GetToSize()}
	if resp.ToSize == 0 {
		cp, err := a.tree.LatestCheckpoint(ctx)
		if err != nil {
			return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
		}
		resp.ToSize, resp.Checkpoint = cp.Size, cp.Note
	}
	if resp.FromSize > resp.ToSize {
		return nil, toStatus(ctx, a.logger, method, refusal.New(refusal.InvalidArgument,
			"from_size %d is larger than the tree size %d", resp.FromSize, resp.ToSize))
	}
	var err error
	if resp.Hashes, err = a.tree.ConsistencyProof(ctx, resp.FromSize, resp.ToSize); err != nil {
		return nil, toStatus(ctx, a.logger, method, treeRefusal(err))
	}
	return resp, nil
}

// treeRefusal classifies an error of the transparency log for the caller.
func treeRefusal(err error) error {
	switch {
	case errors.Is(err, tlog.ErrNotFound):
		return refusal.Wrap(refusal.NotFound, err, "no such access record or checkpoint yet (records are included in a checkpoint within seconds)")
	case errors.Is(err, tlog.ErrInvalidSize):
		return refusal.Wrap(refusal.InvalidArgument, err, "the tree does not have that size: %v", err)
	case errors.Is(err, tlog.ErrUnavailable):
		return refusal.Wrap(refusal.Unavailable, err, "the transparency log is unavailable")
	default:
		return refusal.Wrap(refusal.Internal, err, "transparency log")
	}
}
