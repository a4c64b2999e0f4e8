package broker

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
)

// openCosigner starts submitting the access log's checkpoints to the witnesses of Deps.Witnesses. Every
// replica opens the COSIGNED bucket and serves from it; only the integrator's lease holder submits, so
// the witnesses see one client.
func (b *Broker) openCosigner(ctx context.Context, js jetstream.JetStream) error {
	if b.deps.Witnesses == nil {
		return nil
	}
	logKeys, err := b.checkpointVerifiers()
	if err != nil {
		return err
	}
	var leader func() bool
	if b.integr != nil {
		leader = b.integr.Leader
	}
	b.cosigner, err = witness.OpenCosigner(ctx, js, b.tree, witness.CosignerOptions{
		Policy: b.deps.Witnesses.WithLog(logKeys...), Leader: leader, Replicas: b.cfg.Replicas,
		Logger: b.log.With("component", "witness"),
	})
	if err != nil {
		return fmt.Errorf("witness cosigner: %w", err)
	}
	b.cosigner.Start()
	k, n := b.deps.Witnesses.Quorum()
	b.log.Info("checkpoints are submitted to witnesses", "witnesses", len(b.deps.Witnesses.Witnesses), "quorum", k, "of", n)
	return nil
}

// checkpointVerifiers are the verifiers of the log's checkpoint key, current version first.
func (b *Broker) checkpointVerifiers() ([]note.Verifier, error) {
	signer := b.deps.Checkpoints
	if signer == nil {
		var err error
		if signer, err = tlog.OpenLocalSigner(filepath.Join(b.cfg.DataDir, "keys"), ""); err != nil {
			return nil, fmt.Errorf("checkpoint signing key: %w", err)
		}
	}
	vs := []note.Verifier{signer.Verifier()}
	if more, ok := signer.(interface{ Verifiers() []note.Verifier }); ok {
		for _, v := range more.Verifiers() {
			if v.KeyHash() != signer.Verifier().KeyHash() {
				vs = append(vs, v)
			}
		}
	}
	return vs, nil
}

// Witnessing is the cosigner when a witness policy is configured, else nil. Its Health is the alarm
// of a witness refusing the log; its LatestCheckpoint is the cosigned checkpoint to serve; its Anchor is
// the newest checkpoint a witness has seen.
func (b *Broker) Witnessing() *witness.Cosigner { return b.cosigner }
