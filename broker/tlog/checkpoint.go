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

// verifiers returns the current verifier and those of earlier key versions.
func (t *Tree) verifiers() []Verifier {
	if t.verifier == nil {
		return nil
	}
	return append([]Verifier{t.verifier}, t.previous...)
}

// OpenCheckpoint verifies a checkpoint note with the tree's verifiers (current key and earlier versions).
func (t *Tree) OpenCheckpoint(b []byte) (Checkpoint, error) {
	vs := t.verifiers()
	if len(vs) == 0 {
		return Checkpoint{}, errors.New("read checkpoint: no verifier configured")
	}
	return OpenCheckpoint(b, vs[0], vs[1:]...)
}

// ForgedCheckpointError reports a message in CHECKPOINTS that does not carry a valid signature of the
// log's key: someone other than the integrator wrote it. Such a message is skipped, never trusted.
type ForgedCheckpointError struct {
	Seq uint64
	Err error
}

func (e *ForgedCheckpointError) Error() string {
	return fmt.Sprintf("CHECKPOINTS message %d is not a checkpoint signed by the log's key (skipped): %v", e.Seq, e.Err)
}

func (e *ForgedCheckpointError) Unwrap() error { return e.Err }

// maxForgedWalk bounds how far back latestVerified looks past messages that do not verify, so a
// flood of forgeries cannot make every read of the checkpoint a scan.
const maxForgedWalk = 1024

// LatestCheckpoint returns the newest stored checkpoint whose signature verifies. Newer messages
// that do not verify (forgeries: the stream denies deletes, so they stay) are skipped. ErrNotFound
// means no checkpoint was published yet.
func (t *Tree) LatestCheckpoint(ctx context.Context) (Checkpoint, error) {
	cp, _, err := t.latestVerified(ctx, nil)
	return cp, err
}

// latestVerified returns the newest checkpoint that verifies and the stream's last sequence (which a
// publisher must expect), calling forged for every newer message that does not verify. With no
// checkpoint at all it returns ErrNotFound and the last sequence (non-zero if there are only forgeries).
func (t *Tree) latestVerified(ctx context.Context, forged func(*ForgedCheckpointError)) (Checkpoint, uint64, error) {
	if t.verifier == nil {
		return Checkpoint{}, 0, errors.New("read checkpoint: no verifier configured")
	}
	m, err := t.checkpoints.GetLastMsgForSubject(ctx, CheckpointSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Checkpoint{}, 0, fmt.Errorf("checkpoint: %w", ErrNotFound)
	}
	if err != nil {
		return Checkpoint{}, 0, fmt.Errorf("%w: read latest checkpoint: %w", ErrUnavailable, err)
	}
	last := m.Sequence
	for seq := last; seq > 0; seq-- {
		if last-seq >= maxForgedWalk {
			return Checkpoint{}, last, fmt.Errorf("the newest %d CHECKPOINTS messages do not verify: someone is writing to the stream", maxForgedWalk)
		}
		if seq != last {
			if m, err = t.checkpoints.GetMsg(ctx, seq); err != nil {
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				}
				return Checkpoint{}, last, fmt.Errorf("%w: read checkpoint %d: %w", ErrUnavailable, seq, err)
			}
		}
		cp, err := t.OpenCheckpoint(m.Data)
		if err == nil {
			cp.Seq = seq
			return cp, last, nil
		}
		if forged != nil {
			forged(&ForgedCheckpointError{Seq: seq, Err: err})
		}
	}
	return Checkpoint{}, last, fmt.Errorf("checkpoint: %w (CHECKPOINTS holds only messages that do not verify)", ErrNotFound)
}
