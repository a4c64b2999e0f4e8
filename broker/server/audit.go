package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// AccessLister reads one citizen's access records with their Merkle leaves, newest first, and appends
// the record of an auditor's read (accesslog.Log implements it). Append MUST return nil only once the
// record is durable.
type AccessLister interface {
	ListEntries(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]accesslog.Entry, string, error)
	Append(ctx context.Context, rec *auditv1.AccessRecord) error
}

// TransparencyLog serves the signed checkpoints and the Merkle proofs of the access log
// (tlog.Tree implements it).
type TransparencyLog interface {
	LatestCheckpoint(ctx context.Context) (tlog.Checkpoint, error)
	LeafByID(ctx context.Context, accessID string) (tlog.Leaf, error)
	LeafHash(ctx context.Context, index uint64) ([]byte, error)
	Record(ctx context.Context, leaf tlog.Leaf) ([]byte, error)
	// The proofs are verified against the signed checkpoint before they are returned: a proof the
	// API serves is one that verifies (tlog.ErrCorrupt otherwise, naming the tile at fault).
	CheckedInclusionProof(ctx context.Context, index, size uint64, leafHash []byte, cp tlog.Checkpoint) ([][]byte, error)
	CheckedConsistencyProof(ctx context.Context, size1, size2 uint64, cp tlog.Checkpoint) ([][]byte, error)
}

// Audit implements aperture.audit.v1.AuditService for auditors.
type Audit struct {
	auditv1.UnimplementedAuditServiceServer
	log        AccessLister
	tree       TransparencyLog
	pseudonyms keys.Pseudonymizer
	logger     *slog.Logger
	cosigned   CosignedSource // nil without witnesses
	reviews    Reviews        // nil without a break-glass review queue
	now        func() time.Time
	onClose    func(context.Context, auditv1.BreakGlassOutcome)
}

// NewAudit returns the AuditService implementation.
func NewAudit(log AccessLister, tree TransparencyLog, pseudonyms keys.Pseudonymizer, logger *slog.Logger) *Audit {
	return &Audit{log: log, tree: tree, pseudonyms: pseudonyms, logger: logger}
}

// CosignedSource is the newest witness-cosigned checkpoint (witness.Cosigner).
type CosignedSource interface {
	LatestCheckpoint(ctx context.Context) ([]byte, error)
}

// WithCosigned makes GetCheckpoint also return the newest checkpoint witnesses cosigned.
func (a *Audit) WithCosigned(c CosignedSource) *Audit {
	a.cosigned = c
	return a
}

// ListAccessRecords implements AuditService.
func (a *Audit) ListAccessRecords(ctx context.Context, req *auditv1.ListAccessRecordsRequest) (*auditv1.ListAccessRecordsResponse, error) {
	c, err := requireRole(ctx, RoleAuditor)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	pn := a.pseudonyms.Pseudonym(req.GetCitizenId())
	entries, next, err := a.log.ListEntries(ctx, pn.Value, size, req.GetPageToken())
	switch {
	case errors.Is(err, accesslog.ErrInvalidPageToken):
		return nil, refusal.New(refusal.InvalidArgument, "page_token is not a token this API returned")
	case err != nil:
		return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable")
	}
	// An auditor reading a citizen's log is itself an access the citizen sees. It is recorded once per
	// call, after the page is read and before it is answered: the page shows the log as it was, and the
	// records on it are not logged again one by one (a read of the log is one access, not one per
	// record, so reading the log never makes it grow by more than one entry).
	now := time.Now()
	read := &auditv1.AccessRecord{
		Id:               ids.New("acc", now),
		Time:             timestamppb.New(now),
		CitizenPseudonym: pn.Value,
		PseudonymKeyId:   pn.KeyID,
		Kind:             auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ,
		Agency:           c.ID,
		Decision:         auditv1.Decision_DECISION_RELEASED,
	}
	if err := a.log.Append(ctx, read); err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was shown")
	}
	a.logger.Info("auditor listed access records", "auditor", c.ID, "pseudonym", pn.Value, "records", len(entries), "access_id", read.Id)
	resp := &auditv1.ListAccessRecordsResponse{NextPageToken: next}
	for _, e := range entries {
		// The leaf beside each record binds the listing to the tree.
		resp.Records = append(resp.Records, e.Record)
		resp.Leaves = append(resp.Leaves, &auditv1.ListedLeaf{LeafIndex: e.LeafIndex, Leaf: e.Leaf})
	}
	return resp, nil
}

// GetCheckpoint implements AuditService.
func (a *Audit) GetCheckpoint(ctx context.Context, _ *auditv1.GetCheckpointRequest) (*auditv1.GetCheckpointResponse, error) {
	if _, err := requireRole(ctx, RoleAuditor); err != nil {
		return nil, err
	}
	cp, err := a.tree.LatestCheckpoint(ctx)
	if err != nil {
		return nil, treeRefusal(err)
	}
	resp := &auditv1.GetCheckpointResponse{Checkpoint: cp.Note, Origin: cp.Origin, TreeSize: cp.Size, RootHash: cp.Root}
	if a.cosigned != nil {
		// None yet is not an error: the auditor's policy check says so in its own words.
		if b, err := a.cosigned.LatestCheckpoint(ctx); err == nil {
			resp.CosignedCheckpoint = b
		} else {
			a.logger.Debug("no cosigned checkpoint to return", "err", err)
		}
	}
	return resp, nil
}

// GetInclusionProof implements AuditService.
func (a *Audit) GetInclusionProof(ctx context.Context, req *auditv1.GetInclusionProofRequest) (*auditv1.GetInclusionProofResponse, error) {
	const method = "/aperture.audit.v1.AuditService/GetInclusionProof"
	c, err := requireRole(ctx, RoleAuditor)
	if err != nil {
		return nil, err
	}
	// Every proof is checked against the newest signed checkpoint, also one for an older size.
	cp, err := a.tree.LatestCheckpoint(ctx)
	if err != nil {
		return nil, a.treeStatus(method, err)
	}
	resp := &auditv1.GetInclusionProofResponse{TreeSize: req.GetTreeSize()}
	if resp.TreeSize == 0 {
		resp.TreeSize, resp.Checkpoint = cp.Size, cp.Note
	}
	var leafHash []byte
	switch leaf := req.GetLeaf().(type) {
	case *auditv1.GetInclusionProofRequest_AccessId:
		l, err := a.tree.LeafByID(ctx, leaf.AccessId)
		if err != nil {
			return nil, a.treeStatus(method, err)
		}
		if resp.Record, err = a.tree.Record(ctx, l); err != nil {
			return nil, a.treeStatus(method, err)
		}
		resp.LeafIndex = l.Index
		var rec auditv1.AccessRecord
		if err := proto.Unmarshal(resp.Record, &rec); err != nil || rec.GetId() != leaf.AccessId {
			// The lookup was repointed (TLOG_LEAVES is outside the tree): never prove another record.
			return nil, a.corruptStatus(method, fmt.Errorf("the access-id lookup leads to leaf %d (ACCESS message %d, record %d), whose record has another id", l.Index, l.Seq, l.Pos))
		}
		leafHash = rfc6962.DefaultHasher.HashLeaf(resp.Record)
	case *auditv1.GetInclusionProofRequest_LeafIndex:
		resp.LeafIndex = leaf.LeafIndex
	}
	if resp.LeafIndex >= resp.TreeSize {
		// Not yet in a checkpoint (or not in the size asked for): say so rather than fail a proof.
		return nil, refusal.New(refusal.FailedPrecondition,
			"leaf %d is not in the tree of size %d yet", resp.LeafIndex, resp.TreeSize)
	}
	if resp.TreeSize > cp.Size {
		return nil, refusal.New(refusal.FailedPrecondition,
			"tree size %d is not signed yet: the latest checkpoint has %d", resp.TreeSize, cp.Size)
	}
	if resp.LeafHash, err = a.tree.LeafHash(ctx, resp.LeafIndex); err != nil {
		return nil, a.treeStatus(method, err)
	}
	if leafHash != nil && !bytes.Equal(leafHash, resp.LeafHash) {
		return nil, a.corruptStatus(method, fmt.Errorf("the record of leaf %d does not hash to the leaf hash stored in tile 0/%d: the record or the tile was changed", resp.LeafIndex, resp.LeafIndex/256))
	}
	if leafHash == nil {
		leafHash = resp.LeafHash
	}
	if resp.Hashes, err = a.tree.CheckedInclusionProof(ctx, resp.LeafIndex, resp.TreeSize, leafHash, cp); err != nil {
		return nil, a.treeStatus(method, err)
	}
	a.logger.Info("auditor fetched an inclusion proof", "auditor", c.ID, "leaf", resp.LeafIndex, "tree_size", resp.TreeSize)
	return resp, nil
}

// GetConsistencyProof implements AuditService.
func (a *Audit) GetConsistencyProof(ctx context.Context, req *auditv1.GetConsistencyProofRequest) (*auditv1.GetConsistencyProofResponse, error) {
	const method = "/aperture.audit.v1.AuditService/GetConsistencyProof"
	if _, err := requireRole(ctx, RoleAuditor); err != nil {
		return nil, err
	}
	cp, err := a.tree.LatestCheckpoint(ctx)
	if err != nil {
		return nil, a.treeStatus(method, err)
	}
	resp := &auditv1.GetConsistencyProofResponse{FromSize: req.GetFromSize(), ToSize: req.GetToSize()}
	if resp.ToSize == 0 {
		resp.ToSize, resp.Checkpoint = cp.Size, cp.Note
	}
	if resp.FromSize > resp.ToSize {
		return nil, refusal.New(refusal.InvalidArgument,
			"from_size %d is larger than the tree size %d", resp.FromSize, resp.ToSize)
	}
	if resp.Hashes, err = a.tree.CheckedConsistencyProof(ctx, resp.FromSize, resp.ToSize, cp); err != nil {
		return nil, a.treeStatus(method, err)
	}
	return resp, nil
}

// treeStatus converts an error of the transparency log to the caller's status. A tree that does not
// match its signed checkpoint is an Internal error that names the tile: the auditor needs to know
// which stored data is wrong, and a tile's coordinates say nothing about anyone.
func (a *Audit) treeStatus(method string, err error) error {
	if errors.Is(err, tlog.ErrCorrupt) {
		msg := "the stored tree does not match the signed checkpoint"
		if te := (*tlog.TileError)(nil); errors.As(err, &te) {
			msg += ": " + te.Error()
		}
		return a.corruptStatus(method, errors.New(msg))
	}
	return treeRefusal(err)
}

// corruptStatus raises the alarm for stored log data that contradicts the signed tree, and tells the
// auditor exactly what (leaf and tile coordinates only, nothing about a citizen).
func (a *Audit) corruptStatus(method string, err error) error {
	a.logger.Error("ALARM: the stored access log contradicts its signed checkpoint", "method", method, "err", err)
	return status.Error(codes.Internal, err.Error())
}

// treeRefusal classifies an error of the transparency log for the caller.
func treeRefusal(err error) error {
	switch {
	case errors.Is(err, tlog.ErrNotFound):
		return refusal.Wrap(refusal.NotFound, err, "no such access record or checkpoint yet (records are included in a checkpoint within seconds)")
	case errors.Is(err, tlog.ErrInvalidSize):
		return refusal.Wrap(refusal.InvalidArgument, err, "the tree does not have that size (or it is not signed yet): %v", err)
	case errors.Is(err, tlog.ErrUnavailable):
		return refusal.Wrap(refusal.Unavailable, err, "the transparency log is unavailable")
	default:
		return refusal.Wrap(refusal.Internal, err, "transparency log")
	}
}
