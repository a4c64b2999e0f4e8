package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

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
		Anchors:    b.anchors(),
	})
	if err != nil {
		return fmt.Errorf("start checkpoint integrator: %w", err)
	}
	return nil
}

// anchors are Deps.CheckpointAnchors and, with witnesses, the newest checkpoint a witness cosigned: a
// tree that does not extend what a witness has seen is never signed. The cosigner opens after the
// integrator starts (it follows the integrator's lease), so the anchor looks it up when asked.
func (b *Broker) anchors() []tlog.Anchor {
	as := append([]tlog.Anchor(nil), b.deps.CheckpointAnchors...)
	if b.deps.Witnesses != nil {
		as = append(as, tlog.Anchor{Name: "witness-cosigned checkpoint", Latest: func(ctx context.Context) ([]byte, error) {
			if b.cosigner == nil {
				return nil, nil
			}
			return b.cosigner.Anchor(ctx)
		}})
	}
	return as
}

// AnchorFile is where the integrator saves every checkpoint it signs, in the data directory.
func (b *Broker) AnchorFile() string {
	return filepath.Join(b.cfg.DataDir, "tlog", "signed-checkpoint")
}

// Integrator is this replica's checkpoint integrator (for health: Err, Alarms).
func (b *Broker) Integrator() *tlog.Integrator { return b.integr }

// PublicLog is the read-only public endpoint of the tree (C2SP tlog-tiles: checkpoint and hash
// tiles, no leaf contents), to mount at /log/. It serves Deps.PublicCheckpoints if set, else the
// witness-cosigned checkpoint when witnesses are configured, else the tree's newest checkpoint.
func (b *Broker) PublicLog() http.Handler {
	var cps tlogweb.CheckpointSource = tlogweb.TreeCheckpoints{Tree: b.tree}
	switch {
	case b.deps.PublicCheckpoints != nil:
		cps = b.deps.PublicCheckpoints
	case b.cosigner != nil:
		// With witnesses the public checkpoint is the cosigned one: a monitor sees only what the
		// witnesses vouched for.
		cps = b.cosigner
	}
	return tlogweb.Handler(cps, b.tree, tlogweb.Options{Prefix: "/log", Logger: b.log.With("component", "public-log")})
}

// Transparency is the access log's Merkle tree.
func (b *Broker) Transparency() *tlog.Tree { return b.tree }

// TransparencyHealthService is the gRPC health service (on the broker's listener) that says whether the
// access log is being integrated, signed and witnessed. It is NOT_SERVING while the integrator is
// halted (an ACCESS message the broker did not write, a tree that does not extend an anchor) or a
// witness refuses the log. Releases go on meanwhile, since every access is still durably logged, so
// the broker's overall status stays SERVING: this is an alarm for the operator, not for load balancers.
const TransparencyHealthService = "aperture.transparency"

// TransparencyErr is why the log is not being integrated or witnessed, or nil.
func (b *Broker) TransparencyErr() error {
	var errs []error
	if b.integr != nil {
		if err := b.integr.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.cosigner != nil {
		if err := b.cosigner.Health(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// watchTransparency keeps TransparencyHealthService current until ctx ends. The components log their
// own alarms at error level; this only reports the change of state.
func (b *Broker) watchTransparency(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	for {
		st := healthpb.HealthCheckResponse_SERVING
		if err := b.TransparencyErr(); err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
			if last != st {
				b.log.Error("transparency alarm: the access log is not being integrated or witnessed", "err", err)
			}
		} else if last == healthpb.HealthCheckResponse_NOT_SERVING {
			b.log.Info("transparency alarm cleared")
		}
		if st != last {
			b.health.SetServingStatus(TransparencyHealthService, st)
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
