// Package tlog makes the access log verifiable: it keeps an RFC 6962 Merkle tree over the ACCESS
// stream's records in log order, publishes signed checkpoints of it, and serves inclusion and
// consistency proofs.
//
// # Storage
//
// Everything lives in JetStream next to the log, so any replica can serve proofs and take over the
// integration:
//
//   - the TLOG key-value bucket holds the tree: the integration state (tree size, next ACCESS
//     sequence, the compact range of the right edge) under "state", and the hashes as tiles. Tile
//     (L, N) holds the hashes of the nodes at level 8·L with indexes 256·N to 256·N+255, 32 bytes
//     each, as in https://c2sp.org/tlog-tiles. A full tile is written once under "tile.<L>.<N>" and
//     never changed (so it can be served as immutable); the growing right-edge tile is kept under
//     "tile.<L>.<N>.p" until it is full. Any node of the tree is one tile read plus at most 255
//     hashings, so a proof costs O(log n) reads and never a scan of the log.
//   - the TLOG_LEAVES stream maps an access id to its leaf index, so a proof can be asked for by
//     access id. Access ids begin with their creation time (package ids), so the lookup is filed by
//     it: the entries of the ids created in one second are on aperture.tlog.ids.<Unix second>, packed
//     many to a message, and finding an id reads that second's few messages. The integrator writes a
//     handful of messages per round instead of one per record, which were half the NATS messages a
//     release cost. Stores written before this kept one message per id on
//     aperture.tlog.leaf.<base64url id>; those are still read.
//   - the CHECKPOINTS stream holds every checkpoint as a signed note in the C2SP tlog-checkpoint
//     format (https://c2sp.org/tlog-checkpoint), in order. Like ACCESS, it denies deletes.
//
// Hashing, compact ranges and proof shapes are github.com/transparency-dev/merkle's; this package
// only decides where the hashes are stored.
//
// # One integrator
//
// The Integrator reads new ACCESS batches and extends the tree. Exactly one runs at a time across
// broker replicas: it holds a lease (a key in the TLOG_LEASE bucket, created once, then renewed by
// revision compare-and-set, expiring by the bucket's TTL). The state is also written by revision
// compare-and-set, and checkpoints with an expected last sequence, so a replica that lost its lease
// without noticing cannot fork the tree. A new holder continues from the stored state.
//
// # Trust nothing in storage
//
// Whoever can write to NATS can write anything there, so the integrator trusts no stored input it
// cannot check:
//
//   - an ACCESS message the broker did not write (accesslog reports accesslog.ErrUnauthenticBatch)
//     never becomes a leaf: integration halts with an error-level alarm (Integrator.Err, Alarms);
//   - the last checkpoint's size is trusted only once its signature verifies; a message in
//     CHECKPOINTS that does not verify is skipped and reported, and signing continues;
//   - before signing a tree, the integrator proves it consistent with every anchor: the newest
//     verified checkpoint in CHECKPOINTS, a file outside NATS holding the last checkpoint this
//     replica signed (IntegratorOptions.AnchorFile), and checkpoints vouched for elsewhere (a
//     witness's, IntegratorOptions.Anchors). A tree rebuilt from a rewritten log after the tree's
//     storage was deleted is therefore refused, never silently re-signed from scratch.
//
// Proofs served are checked against the signed checkpoint first (CheckedInclusionProof,
// CheckedConsistencyProof): one built from a corrupted tile is ErrCorrupt, naming the tile.
package tlog

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/ids"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Bucket, stream and subject names. They are part of the on-disk format: audit tooling reads them.
const (
	TreeBucket  = "TLOG"
	LeaseBucket = "TLOG_LEASE"
	LeafStream  = "TLOG_LEAVES"
	// LookupSubjectPrefix + the Unix second an access id was created in holds its lookup entries
	// (LookupSubject, AppendLookup).
	LookupSubjectPrefix = "aperture.tlog.ids."
	// LeafSubjectPrefix + base64url(access id) held one id's leaf in stores written before the
	// lookup was filed by second. Read, never written.
	LeafSubjectPrefix = "aperture.tlog.leaf."
	CheckpointStream  = "CHECKPOINTS"
	CheckpointSubject = "aperture.tlog.checkpoint"

	// LeaseKey is the key of the integrator lease in LeaseBucket; its value names the holder.
	LeaseKey = "integrator"

	stateKey = "state"
)

// TileHeight is the height of a tile: a tile holds up to 1<<TileHeight hashes of one tree level.
const TileHeight = 8

const tileWidth = 1 << TileHeight

var (
	// ErrUnavailable means the tree's storage could not be read or written.
	ErrUnavailable = errors.New("transparency log unavailable")
	// ErrNotFound means no such access id, leaf or checkpoint (yet).
	ErrNotFound = errors.New("not found")
	// ErrInvalidSize means a tree size the tree does not have (yet), or sizes in the wrong order.
	ErrInvalidSize = errors.New("invalid tree size")
	// ErrCorrupt means the stored tree does not match a signed checkpoint: a proof built from it
	// does not verify. The error wraps a *TileError naming the tile where one can be found.
	ErrCorrupt = errors.New("stored tree does not match the signed checkpoint")
)

var hasher = rfc6962.DefaultHasher

var rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}

// Options configure the tree's storage.
type Options struct {
	// Replicas of the streams and buckets: 1 embedded, 3 in a cluster. Default 1.
	Replicas int
	// PreviousVerifiers check checkpoints signed by earlier versions of the checkpoint key (Vault
	// transit rotation); the verifier given to Open is the current one.
	PreviousVerifiers []Verifier
}

// Tree is the stored Merkle tree: it reads tiles and checkpoints and builds proofs. It is safe for
// concurrent use; any number of replicas may open it.
type Tree struct {
	js          jetstream.JetStream
	kv          jetstream.KeyValue
	leaves      jetstream.Stream
	checkpoints jetstream.Stream
	verifier    Verifier
	previous    []Verifier
}

// Open creates or updates the tree's buckets and streams. verifier checks the checkpoints it
// returns; it may be nil for a tree that is only written.
func Open(ctx context.Context, js jetstream.JetStream, verifier Verifier, opts Options) (*Tree, error) {
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	t := &Tree{js: js, verifier: verifier, previous: opts.PreviousVerifiers}
	var err error
	if t.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: TreeBucket, Description: "Aperture access log Merkle tree: state and hash tiles",
		History: 1, Storage: jetstream.FileStorage, Replicas: opts.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", TreeBucket, err)
	}
	if t.leaves, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: LeafStream, Description: "Aperture access id to Merkle leaf index",
		Subjects: []string{LookupSubjectPrefix + "*", LeafSubjectPrefix + "*"}, Storage: jetstream.FileStorage,
		Replicas: opts.Replicas, MaxMsgsPerSubject: -1, AllowDirect: true, PersistMode: leafPersistMode(opts.Replicas),
	}); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", LeafStream, err)
	}
	if t.checkpoints, err = js.CreateOrUpdateStream(ctx, checkpointConfig(opts.Replicas)); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", CheckpointStream, err)
	}
	return t, nil
}

// leafPersistMode spares the access-id lookup an fsync per record on a single node: it is a convenience
// index (proofs by leaf index and every checkpoint are unaffected by its loss), and one fsync per record
// capped the integrator at about 6,000 records/s, below the append rate. NATS allows async persistence
// only for unreplicated streams; in a cluster the Raft log makes writes durable anyway.
func leafPersistMode(replicas int) jetstream.PersistModeType {
	if replicas <= 1 {
		return jetstream.AsyncPersistMode
	}
	return jetstream.DefaultPersistMode
}

func checkpointConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: CheckpointStream, Description: "Aperture signed checkpoints (C2SP tlog-checkpoint), never trimmed",
		Subjects: []string{CheckpointSubject}, Storage: jetstream.FileStorage, Replicas: replicas,
		MaxMsgs: -1, MaxBytes: -1, Discard: jetstream.DiscardNew,
		DenyDelete: true, DenyPurge: true, AllowDirect: true,
	}
}

// state is the integration state, stored as JSON under stateKey.
type state struct {
	// Size is the number of leaves integrated.
	Size uint64 `json:"size"`
	// NextSeq is the first ACCESS sequence not integrated yet.
	NextSeq uint64 `json:"next_seq"`
	// Hashes is the compact range [0, Size): the roots of the perfect subtrees of the right edge.
	Hashes [][]byte `json:"hashes"`
}

// loadState returns the stored state and its revision (0 if there is none yet).
func (t *Tree) loadState(ctx context.Context) (state, uint64, error) {
	e, err := t.kv.Get(ctx, stateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return state{NextSeq: 1}, 0, nil
	}
	if err != nil {
		return state{}, 0, fmt.Errorf("%w: read tree state: %w", ErrUnavailable, err)
	}
	var s state
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return state{}, 0, fmt.Errorf("tree state does not decode: %w", err)
	}
	return s, e.Revision(), nil
}

// Size returns the number of records integrated into the tree.
func (t *Tree) Size(ctx context.Context) (uint64, error) {
	s, _, err := t.loadState(ctx)
	return s.Size, err
}

// tileKey is where a full tile is stored: written once, never changed. partialTileKey holds the
// newest partial tile (fewer than 256 hashes) of the same coordinates; it is rewritten as the tile
// fills up and deleted once the full tile exists. Keeping the two apart means the bytes under a full
// tile's key can be served as immutable (https://c2sp.org/tlog-tiles), and a rewrite of a full tile
// is an error the integrator sees rather than routine.
func tileKey(level, index uint64) string { return fmt.Sprintf("tile.%d.%d", level, index) }

func partialTileKey(level, index uint64) string { return fmt.Sprintf("tile.%d.%d.p", level, index) }

// readTile returns the stored hashes of tile (level, index): the full tile if there is one, else the
// newest partial tile, else nil. Data directories from before the split kept partial tiles under the
// full key; they are read the same way.
func (t *Tree) readTile(ctx context.Context, level, index uint64) ([]byte, error) {
	full, err := t.kvValue(ctx, tileKey(level, index))
	if err != nil || len(full) == tileWidth*sha256.Size {
		return full, err
	}
	part, err := t.kvValue(ctx, partialTileKey(level, index))
	if err != nil {
		return nil, err
	}
	if part == nil {
		// The partial key is deleted only after the full tile is written: read the full key again
		// in case it was completed in between.
		if full, err = t.kvValue(ctx, tileKey(level, index)); err != nil {
			return nil, err
		}
	}
	if len(part) > len(full) {
		return part, nil
	}
	return full, nil
}

func (t *Tree) kvValue(ctx context.Context, key string) ([]byte, error) {
	e, err := t.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%w: read %s: %w", ErrUnavailable, key, err)
	}
	return e.Value(), nil
}

// TileError names a stored tile whose hashes are not the ones the signed tree commits to.
type TileError struct {
	Level, Index uint64
	Reason       string
}

func (e *TileError) Error() string {
	return fmt.Sprintf("tile %d/%d is corrupt: %s", e.Level, e.Index, e.Reason)
}

// tiles reads tiles once per request.
type tiles struct {
	t     *Tree
	cache map[[2]uint64][]byte
}

func (t *Tree) tiles() *tiles { return &tiles{t: t, cache: map[[2]uint64][]byte{}} }

func (c *tiles) get(ctx context.Context, level, index uint64) ([]byte, error) {
	k := [2]uint64{level, index}
	if b, ok := c.cache[k]; ok {
		return b, nil
	}
	b, err := c.t.readTile(ctx, level, index)
	if err != nil {
		return nil, fmt.Errorf("tile %d/%d: %w", level, index, err)
	}
	c.cache[k] = b
	return b, nil
}

// node returns the hash of the complete node id: from its tile, folding the hashes below it when
// its level is not a multiple of TileHeight.
func (c *tiles) node(ctx context.Context, id compact.NodeID) ([]byte, error) {
	tl := uint64(id.Level / TileHeight)
	sub := id.Level % TileHeight
	first := id.Index << sub
	n := uint64(1) << sub
	tile, err := c.get(ctx, tl, first/tileWidth)
	if err != nil {
		return nil, err
	}
	off := first % tileWidth
	if uint64(len(tile)) < (off+n)*sha256.Size {
		return nil, fmt.Errorf("%w: node %d/%d is not in the stored tree", ErrInvalidSize, id.Level, id.Index)
	}
	if n == 1 {
		return tile[off*sha256.Size : (off+1)*sha256.Size], nil
	}
	r := rangeFactory.NewEmptyRange(0)
	for i := range n {
		h := tile[(off+i)*sha256.Size : (off+i+1)*sha256.Size]
		if err := r.Append(h, nil); err != nil {
			return nil, fmt.Errorf("fold tile %d/%d: %w", tl, first/tileWidth, err)
		}
	}
	return r.GetRootHash(nil)
}

// accessIDPrefix is the prefix of access record ids (package ids).
const accessIDPrefix = "acc"

// LookupSubject is the subject whose messages hold the lookup entry of accessID: the Unix second
// the id was created in, or "other" for an id not made by package ids (none in a real log).
func LookupSubject(accessID string) string {
	if t, ok := ids.Time(accessIDPrefix, accessID); ok {
		return LookupSubjectPrefix + strconv.FormatInt(t.Unix(), 10)
	}
	return LookupSubjectPrefix + "other"
}

// AppendLookup appends the lookup entry accessID → l to a lookup message: the id's length and
// bytes, then the leaf index, the ACCESS sequence and the position in the batch, all as uvarints.
// A message is any number of entries; where an id has several, the last one counts.
func AppendLookup(b []byte, accessID string, l Leaf) []byte {
	b = binary.AppendUvarint(b, uint64(len(accessID)))
	b = append(b, accessID...)
	return l.append(b)
}

// findLookup returns the last entry for accessID in a lookup message.
func findLookup(data []byte, accessID string) (l Leaf, found bool, err error) {
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return Leaf{}, false, errors.New("lookup entry does not decode")
		}
		id := data[k : k+int(n)]
		data = data[k+int(n):]
		var v [3]uint64
		for i := range v {
			x, k := binary.Uvarint(data)
			if k <= 0 {
				return Leaf{}, false, errors.New("lookup entry does not decode")
			}
			v[i], data = x, data[k:]
		}
		if string(id) == accessID {
			l, found = Leaf{Index: v[0], Seq: v[1], Pos: int(v[2])}, true
		}
	}
	return l, found, nil
}

// legacyLeafSubject is where stores written before the lookup was filed by second kept the leaf of
// an access id. Ids are base64url-encoded so that any id is one subject token.
func legacyLeafSubject(accessID string) string {
	return LeafSubjectPrefix + base64.RawURLEncoding.EncodeToString([]byte(accessID))
}

// Leaf locates one record in the log and in the tree.
type Leaf struct {
	// Index is the record's leaf index in the tree.
	Index uint64
	// Seq and Pos locate it in ACCESS: the batch's stream sequence and the record's index in it.
	Seq uint64
	Pos int
}

func (l Leaf) append(b []byte) []byte {
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Seq)
	return binary.AppendUvarint(b, uint64(l.Pos))
}

func unmarshalLeaf(b []byte) (Leaf, error) {
	var v [3]uint64
	for i := range v {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return Leaf{}, errors.New("leaf locator does not decode")
		}
		v[i], b = x, b[n:]
	}
	return Leaf{Index: v[0], Seq: v[1], Pos: int(v[2])}, nil
}

// LeafByID finds the record with the given access id. It returns ErrNotFound if the record is not
// integrated (yet).
//
// The lookup is not authenticated (it is outside the tree): callers check that the record at the
// leaf has the id. A lookup message that does not decode is skipped; if the id is not found
// elsewhere, the error is ErrCorrupt naming the message, not ErrNotFound.
func (t *Tree) LeafByID(ctx context.Context, accessID string) (Leaf, error) {
	subject := LookupSubject(accessID)
	var (
		leaf  Leaf
		found bool
		bad   error
	)
	// A second's entries are in the few messages of the rounds that integrated its records. Each
	// read is the first message of the subject at or after seq.
	for seq := uint64(1); ; {
		m, err := t.leaves.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return Leaf{}, fmt.Errorf("%w: look up access id: %w", ErrUnavailable, err)
		}
		l, ok, err := findLookup(m.Data, accessID)
		switch {
		case err != nil:
			bad = fmt.Errorf("%w: %s message %d: %w", ErrCorrupt, LeafStream, m.Sequence, err)
		case ok:
			leaf, found = l, true
		}
		seq = m.Sequence + 1
	}
	if found {
		return leaf, nil
	}
	m, err := t.leaves.GetLastMsgForSubject(ctx, legacyLeafSubject(accessID))
	switch {
	case err == nil:
		return unmarshalLeaf(m.Data)
	case bad != nil:
		return Leaf{}, bad
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return Leaf{}, fmt.Errorf("access record: %w", ErrNotFound)
	default:
		return Leaf{}, fmt.Errorf("%w: look up access id: %w", ErrUnavailable, err)
	}
}

// LeafHash returns the stored leaf hash at index.
func (t *Tree) LeafHash(ctx context.Context, index uint64) ([]byte, error) {
	h, err := t.tiles().node(ctx, compact.NewNodeID(0, index))
	if errors.Is(err, ErrInvalidSize) {
		return nil, fmt.Errorf("leaf %d: %w", index, ErrNotFound)
	}
	return h, err
}

// checkSize fails unless 0 < size <= the integrated size.
func (t *Tree) checkSize(ctx context.Context, size uint64) error {
	n, err := t.Size(ctx)
	if err != nil {
		return err
	}
	if size > n {
		return fmt.Errorf("%w: %d, the tree has %d", ErrInvalidSize, size, n)
	}
	return nil
}

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the tree of size size.
func (t *Tree) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: leaf %d is not in a tree of size %d", ErrInvalidSize, index, size)
	}
	if err := t.checkSize(ctx, size); err != nil {
		return nil, err
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return t.fetch(ctx, nodes)
}

// ConsistencyProof returns the RFC 6962 consistency proof from size1 to size2.
func (t *Tree) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: %d is larger than %d", ErrInvalidSize, size1, size2)
	}
	if err := t.checkSize(ctx, size2); err != nil {
		return nil, err
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	return t.fetch(ctx, nodes)
}

func (t *Tree) fetch(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	return t.fetchWith(ctx, t.tiles(), nodes)
}

func (t *Tree) fetchWith(ctx context.Context, c *tiles, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := c.node(ctx, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

// Record returns the exact log bytes of the record at leaf.
func (t *Tree) Record(ctx context.Context, leaf Leaf) ([]byte, error) {
	s, err := t.js.Stream(ctx, accesslog.AccessStream)
	if err != nil {
		return nil, fmt.Errorf("%w: open access log: %w", ErrUnavailable, err)
	}
	m, err := s.GetMsg(ctx, leaf.Seq)
	if err != nil {
		return nil, fmt.Errorf("%w: read access log message %d: %w", ErrUnavailable, leaf.Seq, err)
	}
	var batch auditv1.AccessBatch
	if err := proto.Unmarshal(m.Data, &batch); err != nil {
		return nil, fmt.Errorf("access log message %d does not decode: %w", leaf.Seq, err)
	}
	if leaf.Pos >= len(batch.GetRecords()) {
		return nil, fmt.Errorf("access log message %d has no record %d", leaf.Seq, leaf.Pos)
	}
	return batch.GetRecords()[leaf.Pos], nil
}

// Tile returns the first width hashes of tile (level, index) as stored, for serving it per
// https://c2sp.org/tlog-tiles. ErrNotFound means the tile does not hold that many hashes (yet).
func (t *Tree) Tile(ctx context.Context, level, index uint64, width int) ([]byte, error) {
	if width < 1 || width > tileWidth {
		return nil, fmt.Errorf("%w: tile width %d", ErrInvalidSize, width)
	}
	b, err := t.readTile(ctx, level, index)
	if err != nil {
		return nil, err
	}
	if len(b) < width*sha256.Size {
		return nil, fmt.Errorf("tile %d/%d of width %d: %w", level, index, width, ErrNotFound)
	}
	return b[:width*sha256.Size], nil
}
