package tlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// errReplayDone stops the stream read once the checkpoint's leaves are read.
var errReplayDone = errors.New("replay done")

// Replay calls fn for each of the first cp.Size leaves of the log, in log order, and then checks that
// those leaves are the ones cp commits to: the RFC 6962 root recomputed from the leaf bytes fn was
// given must be cp.Root. The caller has verified cp's signature (OpenCheckpoint). Whatever fn computed
// from the leaves is therefore computed over exactly the signed tree; an error means it was not, and
// names why (fewer leaves than the checkpoint, a different root).
//
// With sealer set every ACCESS batch must carry the broker's MAC (as VerifyWith checks); without it the
// batches are decoded as stored, and a batch the broker did not write makes the root differ. An error
// from fn stops the replay and is returned.
func Replay(ctx context.Context, js jetstream.JetStream, cp Checkpoint, sealer accesslog.Sealer, fn func(index uint64, leaf []byte) error) error {
	rng := rangeFactory.NewEmptyRange(0)
	if cp.Size > 0 {
		err := readStream(ctx, js, accesslog.AccessStream, func(seq uint64, data []byte) error {
			var leaves [][]byte
			if sealer != nil {
				var err error
				if leaves, err = accesslog.OpenBatch(sealer, data); err != nil {
					return fmt.Errorf("ACCESS message %d is not authenticated by the broker: %w", seq, err)
				}
			} else {
				var batch auditv1.AccessBatch
				if err := proto.Unmarshal(data, &batch); err != nil {
					return fmt.Errorf("ACCESS message %d does not decode: %w", seq, err)
				}
				leaves = batch.GetRecords()
			}
			for _, leaf := range leaves {
				index := rng.End()
				if err := fn(index, leaf); err != nil {
					return err
				}
				if err := rng.Append(hasher.HashLeaf(leaf), nil); err != nil {
					return fmt.Errorf("append leaf %d: %w", index, err)
				}
				if rng.End() == cp.Size {
					return errReplayDone
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errReplayDone) {
			return err
		}
	}
	if rng.End() != cp.Size {
		return fmt.Errorf("the log holds %d records but the checkpoint commits to %d: records are missing", rng.End(), cp.Size)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("tree root at %d: %w", cp.Size, err)
	}
	if cp.Size == 0 {
		root = hasher.EmptyRoot()
	}
	if !bytes.Equal(root, cp.Root) {
		return fmt.Errorf("the first %d records hash to root %x, but the checkpoint says %x: the records are not the ones signed", cp.Size, root, cp.Root)
	}
	return nil
}
