package tlog

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

// CheckedInclusionProof returns the inclusion proof of leafHash at index in the tree of size, after
// verifying it against the signed checkpoint cp: a proof served is a proof that verifies. size may be
// below cp.Size (an older tree an auditor asks about); then the root at size is computed from the
// tiles and bound to cp by a consistency proof first. A proof that does not verify is ErrCorrupt,
// wrapping a *TileError that names the stored tile at fault when one can be found.
func (t *Tree) CheckedInclusionProof(ctx context.Context, index, size uint64, leafHash []byte, cp Checkpoint) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: leaf %d is not in a tree of size %d", ErrInvalidSize, index, size)
	}
	c := t.tiles()
	root, err := t.signedRootAt(ctx, c, size, cp)
	if err != nil {
		return nil, err
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	p, err := t.fetchWith(ctx, c, nodes)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyInclusion(hasher, index, size, leafHash, p, root); err != nil {
		return nil, t.corrupt(ctx, c, cp, fmt.Sprintf("inclusion proof of leaf %d in tree size %d", index, size), err)
	}
	return p, nil
}

// CheckedConsistencyProof returns the consistency proof from size1 to size2 after verifying it
// against the signed checkpoint cp (size2 <= cp.Size), as CheckedInclusionProof does.
func (t *Tree) CheckedConsistencyProof(ctx context.Context, size1, size2 uint64, cp Checkpoint) ([][]byte, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: %d is larger than %d", ErrInvalidSize, size1, size2)
	}
	c := t.tiles()
	root2, err := t.signedRootAt(ctx, c, size2, cp)
	if err != nil {
		return nil, err
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	p, err := t.fetchWith(ctx, c, nodes)
	if err != nil {
		return nil, err
	}
	if size1 == 0 {
		return p, nil // nothing to prove: every tree extends the empty one
	}
	root1, err := t.rootAt(ctx, c, size1)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyConsistency(hasher, size1, size2, p, root1, root2); err != nil {
		return nil, t.corrupt(ctx, c, cp, fmt.Sprintf("consistency proof from %d to %d", size1, size2), err)
	}
	return p, nil
}

// signedRootAt returns the root of the tree of size size as bound to the signed checkpoint cp: cp's
// root itself, or for a smaller size the root computed from the tiles after a consistency proof to cp
// verified.
func (t *Tree) signedRootAt(ctx context.Context, c *tiles, size uint64, cp Checkpoint) ([]byte, error) {
	switch {
	case size > cp.Size:
		return nil, fmt.Errorf("%w: %d, the latest signed checkpoint has %d", ErrInvalidSize, size, cp.Size)
	case size == cp.Size:
		return cp.Root, nil
	}
	root, err := t.rootAt(ctx, c, size)
	if err != nil {
		return nil, err
	}
	nodes, err := proof.Consistency(size, cp.Size)
	if err != nil {
		return nil, err
	}
	p, err := t.fetchWith(ctx, c, nodes)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyConsistency(hasher, size, cp.Size, p, root, cp.Root); err != nil {
		return nil, t.corrupt(ctx, c, cp, fmt.Sprintf("consistency proof from %d to the signed size %d", size, cp.Size), err)
	}
	return root, nil
}

// rootAt computes the root of the tree of size from the stored tiles.
func (t *Tree) rootAt(ctx context.Context, c *tiles, size uint64) ([]byte, error) {
	ids := compact.RangeNodes(0, size, nil)
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := c.node(ctx, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	r, err := rangeFactory.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("tree of size %d: %w", size, err)
	}
	return r.GetRootHash(nil)
}

// corrupt turns a proof that failed to verify into ErrCorrupt naming the tile at fault.
func (t *Tree) corrupt(ctx context.Context, c *tiles, cp Checkpoint, what string, cause error) error {
	used := make([][2]uint64, 0, len(c.cache))
	for k := range c.cache {
		used = append(used, k)
	}
	te := t.diagnose(ctx, cp, used)
	if te == nil {
		return fmt.Errorf("%w (size %d): %s does not verify, built from tiles %s: %w", ErrCorrupt, cp.Size, what, tileList(used), cause)
	}
	return fmt.Errorf("%w (size %d): %s does not verify: %w", ErrCorrupt, cp.Size, what, te)
}

func tileList(ks [][2]uint64) string {
	slices.SortFunc(ks, func(a, b [2]uint64) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	var b bytes.Buffer
	for i, k := range ks {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d/%d", k[0], k[1])
	}
	return b.String()
}

// diagnose looks for the stored tile that breaks the tree of the signed checkpoint cp, among the
// tiles used and their ancestors: checked top-down, a full tile must hash to its entry in the tile
// above it, and the nodes of the tree's right edge must hash to the signed root. It returns nil if
// it finds nothing wrong.
func (t *Tree) diagnose(ctx context.Context, cp Checkpoint, used [][2]uint64) *TileError {
	c := t.tiles()
	// The right edge first: it is what the signed root binds directly.
	if root, err := t.rootAt(ctx, c, cp.Size); err == nil && !bytes.Equal(root, cp.Root) {
		var edge [][2]uint64
		for _, id := range compact.RangeNodes(0, cp.Size, nil) {
			edge = append(edge, [2]uint64{uint64(id.Level / TileHeight), (id.Index << (id.Level % TileHeight)) / tileWidth})
		}
		edge = slices.Compact(edge)
		return &TileError{Level: edge[len(edge)-1][0], Index: edge[len(edge)-1][1],
			Reason: fmt.Sprintf("the right edge of the tree (tiles %s) does not hash to the signed root", tileList(edge))}
	}
	set := map[[2]uint64]bool{}
	for _, k := range used {
		for l, n := k[0], k[1]; ; l, n = l+1, n/tileWidth {
			if !tileInTree(l, n, cp.Size) {
				break
			}
			set[[2]uint64{l, n}] = true
		}
	}
	order := make([][2]uint64, 0, len(set))
	for k := range set {
		order = append(order, k)
	}
	slices.SortFunc(order, func(a, b [2]uint64) int { return cmp.Or(cmp.Compare(b[0], a[0]), cmp.Compare(a[1], b[1])) })
	for _, k := range order {
		tile, err := c.get(ctx, k[0], k[1])
		if err != nil || len(tile) != tileWidth*sha256.Size {
			continue
		}
		parent, err := c.get(ctx, k[0]+1, k[1]/tileWidth)
		off := (k[1] % tileWidth) * sha256.Size
		if err != nil || uint64(len(parent)) < off+sha256.Size {
			continue
		}
		r := rangeFactory.NewEmptyRange(0)
		for i := range uint64(tileWidth) {
			_ = r.Append(tile[i*sha256.Size:(i+1)*sha256.Size], nil)
		}
		got, _ := r.GetRootHash(nil)
		if !bytes.Equal(got, parent[off:off+sha256.Size]) {
			return &TileError{Level: k[0], Index: k[1], Reason: fmt.Sprintf("its hashes do not hash to entry %d of tile %d/%d", k[1]%tileWidth, k[0]+1, k[1]/tileWidth)}
		}
	}
	return nil
}

// tileInTree reports whether tile (level, index) has at least one hash in a tree of size.
func tileInTree(level, index, size uint64) bool {
	shift := uint(TileHeight * level)
	if shift >= 64 {
		return false
	}
	return index*tileWidth < size>>shift
}
