package broker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/tlog/tlogweb"
)

// openTransparency opens the access log's Merkle tree and starts this replica's integrator; it
// integrates and signs only while it holds the lease, so every replica may run one.
func (b *Broker) openTransparency(ctx context.Context, js jetstream.JetStream) error {
	signer := b.deps.Checkpoints
	if signer == nil {
		var err error
		if signer, err = tlog.OpenLocalSigner(filepath.Join(b.cfg.DataDir, "keys"), ""); err != nil {
			return fmt.Errorf("checkpoint signing key: %w", err)
		}
	}
	// A signer with several key versions (Vault transit after a rotation) also verifies the
	// checkpoints its earlier versions signed.
	var previous []tlog.Verifier
	if vs, ok := signer.(interface{ Verifiers() []note.Verifier }); ok {
		for _, v := range vs.Verifiers() {
			if v.KeyHash() != signer.Verifier().KeyHash() {
				previous = append(previous, v)
			}
		}
	}
	var err error
	if b.tree, err = tlog.Open(ctx, js, signer.Verifier(), tlog.Options{Replicas: b.cfg.Replicas, PreviousVerifiers: previous}); err != nil {
		return fmt.Errorf("open transparency log: %w", err)
	}
	host, _ := os.Hostname()
	b.integr, err = tlog.StartIntegrator(ctx, b.tree, b.access, signer, tlog.IntegratorOptions{
		ID:       fmt.Sprintf("%s-%d", host, os.Getpid()),
		Interval: b.cfg.CheckpointInterval, Replicas: b.cfg.Replicas,
		Logger: b.log.With("component", "tlog"),
		// Outside NATS: whoever deletes the tree's storage and rewrites the log cannot get the
		// rewritten history signed by this replica.
		AnchorFile: b.AnchorFile(),
		Anchors:    b.deps.CheckpointAnchors,
	})
	if err != nil {
		return fmt.Errorf("start checkpoint integrator: %w", err)
	}
	return nil
}

// AnchorFile is where the integrator saves every checkpoint it signs, in the data directory.
func (b *Broker) AnchorFile() string {
	return filepath.Join(b.cfg.DataDir, "tlog", "signed-checkpoint")
}

// Integrator is this replica's checkpoint integrator (for health: Err, Alarms).
func (b *Broker) Integrator() *tlog.Integrator { return b.integr }

// PublicLog is the read-only public endpoint of the tree (C2SP tlog-tiles: checkpoint and hash
// tiles, no leaf contents), to mount at /log/. It serves Deps.PublicCheckpoints (a witness-cosigned
// checkpoint) if set, else the tree's newest checkpoint.
func (b *Broker) PublicLog() http.Handler {
	var cps tlogweb.CheckpointSource = tlogweb.TreeCheckpoints{Tree: b.tree}
	if b.deps.PublicCheckpoints != nil {
		cps = b.deps.PublicCheckpoints
	}
	return tlogweb.Handler(cps, b.tree, tlogweb.Options{Prefix: "/log", Logger: b.log.With("component", "public-log")})
}

// Transparency is the access log's Merkle tree.
func (b *Broker) Transparency() *tlog.Tree { return b.tree }
