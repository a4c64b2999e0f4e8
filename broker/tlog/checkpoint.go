package tlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is one signed checkpoint as stored.
type Checkpoint struct {
	// Note is the signed note: the C2SP tlog-checkpoint body and its signature lines.
	Note []byte
	// Origin, Size and Root are the verified body.
	Origin string
	Size   uint64
	Root   []byte
	// Seq is the checkpoint's sequence in the CHECKPOINTS stream (1 is the first).
	Seq uint64
}

// signCheckpoint returns the signed note for a tree of size with root.
func signCheckpoint(s Signer, size uint64, root []byte) ([]byte, error) {
	body := log.Checkpoint{Origin: s.Name(), Size: size, Hash: root}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return b, nil
}

// OpenCheckpoint verifies a signed checkpoint with v (whose name is the origin) or, after a key
// rotation, with one of the earlier keys in more, and parses it. A checkpoint must carry a signature
// of one of these keys; note key hashes differ between key versions, so every version is listed.
func OpenCheckpoint(b []byte, v Verifier, more ...Verifier) (Checkpoint, error) {
	var first error
	for _, lv := range append([]Verifier{v}, more...) {
		cp, _, _, err := log.ParseCheckpoint(b, lv.Name(), lv)
		if err == nil {
			return Checkpoint{Note: b, Origin: cp.Origin, Size: cp.Size, Root: cp.Hash}, nil
		}
		if first == nil {
			first = err
		}
	}
	return Checkpoint{}, fmt.Errorf("checkpoint does not verify: %w", first)
}

// LatestCheckpoint returns the newest stored checkpoint, verified. ErrNotFound means none was
// published yet.
func (t *Tree) LatestCheckpoint(ctx context.Context) (Checkpoint, error) {
	m, err := t.checkpoints.GetLastMsgForSubject(ctx, CheckpointSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", ErrNotFound)
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: read latest checkpoint: %w", ErrUnavailable, err)
	}
	if t.verifier == nil {
		return Checkpoint{}, errors.New("read checkpoint: no verifier configured")
	}
	cp, err := OpenCheckpoint(m.Data, t.verifier, t.previous...)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %d: %w", m.Sequence, err)
	}
	cp.Seq = m.Sequence
	return cp, nil
}

// lastCheckpointRaw returns the newest checkpoint's stream sequence and size without verifying
// its signature (the integrator trusts its own stream to know where to continue), or zeros.
func (t *Tree) lastCheckpointRaw(ctx context.Context) (seq, size uint64, err error) {
	m, err := t.checkpoints.GetLastMsgForSubject(ctx, CheckpointSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: read latest checkpoint: %w", ErrUnavailable, err)
	}
	n, err := note.Open(m.Data, note.VerifierList())
	// An unverified note still carries its text; Open only fails on a malformed note here.
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		n, err = unverified.Note, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("checkpoint %d is malformed: %w", m.Sequence, err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return 0, 0, fmt.Errorf("checkpoint %d is malformed: %w", m.Sequence, err)
	}
	return m.Sequence, cp.Size, nil
}
