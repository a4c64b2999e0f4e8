package tlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
}

// Verify checks the stored log against the stored checkpoints, trusting nothing but v:
//
//   - every checkpoint's signature verifies with v, and sizes never shrink;
//   - each pair of consecutive checkpoints is consistent (a consistency proof built from the stored
//     tiles verifies against both signed roots);
//   - the tree recomputed from the records in ACCESS has, at every checkpoint's size, that
//     checkpoint's root, and the log holds at least as many records as the latest checkpoint.
//
// The first problem is returned as an error naming the checkpoint (by its CHECKPOINTS sequence)
// and, where the records are at fault, the first leaf index (and its ACCESS sequence and position)
// whose hash differs from the one integrated.
//
// more are verifiers of earlier checkpoint key versions, for a log whose key was rotated.
func Verify(ctx context.Context, js jetstream.JetStream, v Verifier, more ...Verifier) (VerifyResult, error) {
	var res VerifyResult
	t, err := openExisting(ctx, js, v)
	if err != nil {
		return res, err
	}
	t.previous = more
	if err != nil {
		return res, err
	}
	var cps []Checkpoint
	err = readStream(ctx, js, CheckpointStream, func(seq uint64, data []byte) error {
		cp, err := OpenCheckpoint(data, v, more...)
		if err != nil {
			return fmt.Errorf("checkpoint %d: %w", seq, err)
		}
		cp.Seq = seq
		if n := len(cps); n > 0 && cp.Size < cps[n-1].Size {
			return fmt.Errorf("checkpoint %d (size %d) is smaller than checkpoint %d (size %d): the log shrank", seq, cp.Size, cps[n-1].Seq, cps[n-1].Size)
		}
		cps = append(cps, cp)
		return nil
	})
	if err != nil {
		return res, err
	}
	if len(cps) == 0 {
		return res, errors.New("no checkpoints: nothing to verify against")
	}
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
			return res, fmt.Errorf("checkpoints %d (size %d) and %d (size %d) are not consistent: %w", a.Seq, a.Size, b.Seq, b.Size, err)
		}
	}

	rng := rangeFactory.NewEmptyRange(0)
	next := 0 // next checkpoint to compare
	var (
		tile      []byte
		tileIndex = ^uint64(0)
		firstBad  string
	)
	for next < len(cps) && cps[next].Size == 0 {
		next++
	}
	checkRoots := func() error {
		for next < len(cps) && cps[next].Size == rng.End() {
			root, err := rng.GetRootHash(nil)
			if err != nil {
				return fmt.Errorf("tree root at %d: %w", rng.End(), err)
			}
			if !bytes.Equal(root, cps[next].Root) {
				msg := fmt.Sprintf("checkpoint %d (size %d): the stored records have a different root", cps[next].Seq, cps[next].Size)
				if firstBad != "" {
					msg += "; " + firstBad
				}
				return errors.New(msg)
			}
			next++
		}
		return nil
	}
	var lastSeq uint64
	err = readStream(ctx, js, accesslog.AccessStream, func(seq uint64, data []byte) error {
		if lastSeq != 0 && seq != lastSeq+1 && firstBad == "" {
			firstBad = fmt.Sprintf("ACCESS messages %d to %d are missing before leaf %d", lastSeq+1, seq-1, rng.End())
		}
		lastSeq = seq
		var batch auditv1.AccessBatch
		if err := proto.Unmarshal(data, &batch); err != nil {
			return fmt.Errorf("ACCESS message %d does not decode: %w", seq, err)
		}
		for pos, leaf := range batch.GetRecords() {
			index := rng.End()
			h := hasher.HashLeaf(leaf)
			if firstBad == "" {
				if index/tileWidth != tileIndex {
					tileIndex = index / tileWidth
					if tile, err = t.tiles().get(ctx, 0, tileIndex); err != nil {
						return err
					}
				}
				off := (index % tileWidth) * sha256.Size
				if uint64(len(tile)) >= off+sha256.Size && !bytes.Equal(tile[off:off+sha256.Size], h) {
					firstBad = fmt.Sprintf("first differing record: leaf %d (ACCESS message %d, record %d)", index, seq, pos)
				}
			}
			if err := rng.Append(h, nil); err != nil {
				return fmt.Errorf("append leaf %d: %w", index, err)
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
	if next < len(cps) {
		cp := cps[next]
		msg := fmt.Sprintf("the log holds %d records but checkpoint %d commits to %d: records are missing", rng.End(), cp.Seq, cp.Size)
		if firstBad != "" {
			msg += "; " + firstBad
		}
		return res, errors.New(msg)
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
