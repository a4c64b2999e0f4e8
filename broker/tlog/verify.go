package tlog

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// VerifyResult summarises a successful verification.
type VerifyResult struct {
	// Records is the number of records in the log; Checkpoints the number of checkpoints checked.
	Records     uint64
	Checkpoints int
	// Latest is the newest checkpoint.
	Latest Checkpoint
	// Forged lists CHECKPOINTS messages that are not signed by the log's key. They were skipped:
	// someone other than the broker wrote them (an alarm, though the log itself is intact).
	Forged []*ForgedCheckpointError
}

// VerifyOptions configure VerifyWith.
type VerifyOptions struct {
	// Verifiers check the checkpoints: the current key first, then earlier versions.
	Verifiers []Verifier
	// Trusted are checkpoint notes the verifier accepted earlier and saved (trust on first use): the
	// log's records must extend each of them, whatever the stored checkpoints say.
	Trusted []TrustedCheckpoint
	// Sealer, if set, checks every ACCESS batch's MAC (the broker's sealing key): a batch the broker
	// did not write fails verification, as the integrator halts on it. Without it the MACs are not
	// checked (an auditor without the key relies on the checkpoints and the witnesses).
	Sealer accesslog.Sealer
}

// TrustedCheckpoint is a checkpoint a verifier saved, and where it came from (for the error).
type TrustedCheckpoint struct {
	Name string
	Note []byte
}

// Verify is VerifyWith with the verifiers v and more and no trusted checkpoint.
func Verify(ctx context.Context, js jetstream.JetStream, v Verifier, more ...Verifier) (VerifyResult, error) {
	return VerifyWith(ctx, js, VerifyOptions{Verifiers: append([]Verifier{v}, more...)})
}

// target is a tree size whose root the records must produce.
type target struct {
	size  uint64
	root  []byte
	label string
}

// VerifyWith checks the stored log against the stored checkpoints, trusting nothing but the
// verifier keys and the trusted checkpoints:
//
//   - every checkpoint's signature verifies (a message that does not is skipped and reported in
//     VerifyResult.Forged), and sizes never shrink;
//   - the tree recomputed from the records in ACCESS has, at every checkpoint's size and every trusted
//     checkpoint's size, that checkpoint's root, and the log holds at least as many records;
//   - each pair of consecutive checkpoints is consistent (a consistency proof built from the stored
//     tiles verifies against both signed roots);
//   - every stored tile holds the hashes recomputed from the records.
//
// The first problem is returned as an error naming the checkpoint (by its CHECKPOINTS sequence, or
// the trusted checkpoint's name), the first leaf index (and its ACCESS sequence and position) whose
// hash differs from the one integrated, or the stored tile that differs.
func VerifyWith(ctx context.Context, js jetstream.JetStream, opts VerifyOptions) (VerifyResult, error) {
	var res VerifyResult
	if len(opts.Verifiers) == 0 {
		return res, errors.New("verify: no verifier key")
	}
	v, more := opts.Verifiers[0], opts.Verifiers[1:]
	t, err := openExisting(ctx, js, v)
	if err != nil {
		return res, err
	}
	t.previous = more
	var targets []target
	for _, tc := range opts.Trusted {
		cp, err := OpenCheckpoint(tc.Note, v, more...)
		if err != nil {
			return res, fmt.Errorf("trusted checkpoint %s: %w", tc.Name, err)
		}
		targets = append(targets, target{cp.Size, cp.Root, fmt.Sprintf("trusted checkpoint %s (size %d, root %x)", tc.Name, cp.Size, cp.Root)})
	}
	var cps []Checkpoint
	err = readStream(ctx, js, CheckpointStream, func(seq uint64, data []byte) error {
		cp, err := OpenCheckpoint(data, v, more...)
		if err != nil {
			res.Forged = append(res.Forged, &ForgedCheckpointError{Seq: seq, Err: err})
			return nil
		}
		cp.Seq = seq
		if n := len(cps); n > 0 && cp.Size < cps[n-1].Size {
			return fmt.Errorf("checkpoint %d (size %d) is smaller than checkpoint %d (size %d): the log shrank", seq, cp.Size, cps[n-1].Seq, cps[n-1].Size)
		}
		cps = append(cps, cp)
		targets = append(targets, target{cp.Size, cp.Root, fmt.Sprintf("checkpoint %d (size %d)", seq, cp.Size)})
		return nil
	})
	if err != nil {
		return res, err
	}
	if len(cps) == 0 && len(targets) == 0 {
		return res, errors.New("no checkpoints: nothing to verify against")
	}
	slices.SortStableFunc(targets, func(a, b target) int { return cmp.Compare(a.size, b.size) })

	rng := rangeFactory.NewEmptyRange(0)
	next := 0 // next target to compare
	var (
		firstBad string // first record whose hash differs from its level-0 tile entry
		badTile  string // first stored tile entry above level 0 that differs from the records
		// badLeafTile says firstBad as blame on the tile, for when the records match the checkpoints.
		badLeafTile string
		tileCache   = map[uint64][2]any{}
		storage     = t.tiles()
	)
	for next < len(targets) && targets[next].size == 0 {
		next++
	}
	checkRoots := func() error {
		for next < len(targets) && targets[next].size == rng.End() {
			root, err := rng.GetRootHash(nil)
			if err != nil {
				return fmt.Errorf("tree root at %d: %w", rng.End(), err)
			}
			if !bytes.Equal(root, targets[next].root) {
				msg := fmt.Sprintf("%s: the stored records have a different root", targets[next].label)
				if firstBad != "" {
					msg += "; " + firstBad
				}
				return errors.New(msg)
			}
			next++
		}
		return nil
	}
	// storedHash returns the stored hash of node index at tile level tl, or nil if it is not stored
	// (not integrated yet).
	storedHash := func(tl, index uint64) ([]byte, error) {
		c, ok := tileCache[tl]
		if !ok || c[0].(uint64) != index/tileWidth {
			tile, err := storage.get(ctx, tl, index/tileWidth)
			if err != nil {
				return nil, err
			}
			delete(storage.cache, [2]uint64{tl, index / tileWidth}) // keep only the current tile per level
			c = [2]any{index / tileWidth, tile}
			tileCache[tl] = c
		}
		tile := c[1].([]byte)
		off := (index % tileWidth) * sha256.Size
		if uint64(len(tile)) < off+sha256.Size {
			return nil, nil
		}
		return tile[off : off+sha256.Size], nil
	}
	var visitErr error
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level == 0 || id.Level%TileHeight != 0 || badTile != "" || visitErr != nil {
			return
		}
		tl := uint64(id.Level / TileHeight)
		h, err := storedHash(tl, id.Index)
		if err != nil {
			visitErr = err
			return
		}
		if h != nil && !bytes.Equal(h, hash) {
			badTile = fmt.Sprintf("tile %d/%d is corrupt: entry %d differs from the hash recomputed from the records", tl, id.Index/tileWidth, id.Index%tileWidth)
		}
	}
	var lastSeq uint64
	err = readStream(ctx, js, accesslog.AccessStream, func(seq uint64, data []byte) error {
		if lastSeq != 0 && seq != lastSeq+1 && firstBad == "" {
			firstBad = fmt.Sprintf("ACCESS messages %d to %d are missing before leaf %d", lastSeq+1, seq-1, rng.End())
		}
		lastSeq = seq
		var leaves [][]byte
		if opts.Sealer != nil {
			var err error
			if leaves, err = accesslog.OpenBatch(opts.Sealer, data); err != nil {
				return fmt.Errorf("ACCESS message %d is not authenticated by the broker (a batch someone else wrote; the integrator halts there): %w", seq, err)
			}
		} else {
			var batch auditv1.AccessBatch
			if err := proto.Unmarshal(data, &batch); err != nil {
				return fmt.Errorf("ACCESS message %d does not decode: %w", seq, err)
			}
			leaves = batch.GetRecords()
		}
		for pos, leaf := range leaves {
			index := rng.End()
			h := hasher.HashLeaf(leaf)
			if firstBad == "" {
				stored, err := storedHash(0, index)
				if err != nil {
					return err
				}
				if stored != nil && !bytes.Equal(stored, h) {
					firstBad = fmt.Sprintf("first differing record: leaf %d (ACCESS message %d, record %d), in tile 0/%d", index, seq, pos, index/tileWidth)
					badLeafTile = fmt.Sprintf("tile 0/%d is corrupt: entry %d (leaf %d) is not the hash of ACCESS message %d, record %d", index/tileWidth, index%tileWidth, index, seq, pos)
				}
			}
			if err := rng.Append(h, visit); err != nil {
				return fmt.Errorf("append leaf %d: %w", index, err)
			}
			if visitErr != nil {
				return visitErr
			}
			if err := checkRoots(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if next < len(targets) {
		tg := targets[next]
		msg := fmt.Sprintf("the log holds %d records but %s commits to %d: records are missing", rng.End(), tg.label, tg.size)
		if firstBad != "" {
			msg += "; " + firstBad
		}
		return res, errors.New(msg)
	}
	// The records match every signed root; what is left to blame is the stored tree.
	for i := 1; i < len(cps); i++ {
		a, b := cps[i-1], cps[i]
		p, err := t.ConsistencyProof(ctx, a.Size, b.Size)
		if err == nil {
			err = proof.VerifyConsistency(hasher, a.Size, b.Size, p, a.Root, b.Root)
			var mismatch proof.RootMismatchError
			if errors.As(err, &mismatch) {
				err = fmt.Errorf("the stored tree leads to root %x, the checkpoint says %x", mismatch.CalculatedRoot, mismatch.ExpectedRoot)
			}
		}
		if err != nil {
			if te := t.diagnose(ctx, b, nil); te != nil {
				err = fmt.Errorf("%w; %w", err, te)
			} else if badTile != "" || firstBad != "" {
				err = fmt.Errorf("%w; %s", err, cmp.Or(badTile, firstBad))
			}
			return res, fmt.Errorf("checkpoints %d (size %d) and %d (size %d) are not consistent: %w", a.Seq, a.Size, b.Seq, b.Size, err)
		}
	}
	switch {
	case len(cps) == 0:
		return res, fmt.Errorf("%s but CHECKPOINTS holds no checkpoint: the checkpoints were deleted", targets[len(targets)-1].label)
	case badTile != "":
		return res, fmt.Errorf("the records match every checkpoint, but %s", badTile)
	case badLeafTile != "":
		return res, fmt.Errorf("the records match every checkpoint, but %s", badLeafTile)
	case firstBad != "":
		return res, fmt.Errorf("the records match every checkpoint, but the stored tree differs: %s", firstBad)
	}
	res.Records, res.Checkpoints, res.Latest = rng.End(), len(cps), cps[len(cps)-1]
	return res, nil
}

// openExisting binds to the tree's storage without creating or changing anything.
func openExisting(ctx context.Context, js jetstream.JetStream, v Verifier) (*Tree, error) {
	t := &Tree{js: js, verifier: v}
	var err error
	if t.kv, err = js.KeyValue(ctx, TreeBucket); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", TreeBucket, err)
	}
	if t.leaves, err = js.Stream(ctx, LeafStream); err != nil {
		return nil, fmt.Errorf("open stream %s: %w", LeafStream, err)
	}
	if t.checkpoints, err = js.Stream(ctx, CheckpointStream); err != nil {
		return nil, fmt.Errorf("open stream %s: %w", CheckpointStream, err)
	}
	return t, nil
}

// readStream calls fn for every message of stream present when it is called, in order.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, fn func(seq uint64, data []byte) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	// An ephemeral consumer would linger until its inactivity threshold; remove it at once so
	// repeated verifications do not pile consumers up.
	defer func() {
		if name := c.CachedInfo().Name; name != "" {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = s.DeleteConsumer(dctx, name)
		}
	}()
	it, err := c.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		seq := md.Sequence.Stream
		if err := fn(seq, m.Data()); err != nil {
			return err
		}
		if seq >= last {
			return nil
		}
	}
}
