package tlog

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"
	"google.golang.org/protobuf/encoding/protowire"
)

// Source is the access log as the integrator reads it: every record from ACCESS sequence fromSeq
// on, in log order, as its exact leaf bytes (accesslog.Log implements it).
type Source interface {
	Records(ctx context.Context, fromSeq uint64, fn func(seq uint64, index int, leaf []byte) error) error
}

// IntegratorOptions configure the integrator. Zero values take the defaults.
type IntegratorOptions struct {
	// ID names this replica in the lease. Default: random.
	ID string
	// Interval between integration rounds; a checkpoint is signed after a round in which the log
	// grew. Default 1s.
	Interval time.Duration
	// LeaseTTL is how long a lease outlives its last renewal: the failover time after a replica
	// dies. At least 3 intervals. Default 5s.
	LeaseTTL time.Duration
	// MaxLeaves bounds one round, so a large backlog does not outlast the lease (a round costs about
	// one storage write per record, for the access id index). Default 4096.
	MaxLeaves int
	// Replicas of the lease bucket. Default 1.
	Replicas int
	// Logger; nil discards.
	Logger *slog.Logger
}

func (o *IntegratorOptions) setDefaults() error {
	if o.ID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.ID = "integrator-" + hex.EncodeToString(b[:])
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = max(5*time.Second, 3*o.Interval)
	}
	if o.MaxLeaves == 0 {
		o.MaxLeaves = 4096
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Interval < 0:
		return fmt.Errorf("interval %s: want a positive duration", o.Interval)
	case o.LeaseTTL < 3*o.Interval:
		return fmt.Errorf("lease TTL %s: want at least 3 intervals (%s)", o.LeaseTTL, 3*o.Interval)
	case o.MaxLeaves < 1:
		return fmt.Errorf("max leaves %d: want at least 1", o.MaxLeaves)
	}
	return nil
}

// errLostRace means another integrator changed the tree or the checkpoints first.
var errLostRace = errors.New("another integrator advanced the tree")

var errEnough = errors.New("round is full")

// Integrator extends the tree with new access records and signs checkpoints while it holds the
// lease. Run one per broker replica; only the lease holder works.
type Integrator struct {
	opts   IntegratorOptions
	log    *slog.Logger
	tree   *Tree
	src    Source
	signer Signer
	lease  jetstream.KeyValue

	leader   atomic.Bool
	leaseRev uint64
	backlog  bool                 // the last round stopped at its bound with records left (run goroutine only)
	tiles    map[[2]uint64][]byte // right-edge tiles being filled, while leader
	cpSeq    uint64               // last checkpoint's stream sequence and size, while leader
	cpSize   uint64
	cpKnown  bool

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// StartIntegrator creates the lease bucket and starts integrating in the background.
func StartIntegrator(ctx context.Context, tree *Tree, src Source, signer Signer, opts IntegratorOptions) (*Integrator, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("integrator options: %w", err)
	}
	if signer == nil || src == nil || tree == nil {
		return nil, errors.New("integrator: tree, source and signer are required")
	}
	lease, err := tree.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LeaseBucket, Description: "Aperture: which replica integrates the access log tree",
		History: 1, TTL: opts.LeaseTTL, Storage: jetstream.FileStorage, Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", LeaseBucket, err)
	}
	in := &Integrator{opts: opts, log: opts.Logger, tree: tree, src: src, signer: signer, lease: lease, done: make(chan struct{})}
	var runCtx context.Context
	runCtx, in.cancel = context.WithCancel(context.Background())
	go in.run(runCtx)
	return in, nil
}

// Leader reports whether this integrator holds the lease.
func (in *Integrator) Leader() bool { return in.leader.Load() }

// Close stops integrating and gives the lease up, so another replica takes over at once.
func (in *Integrator) Close() {
	in.once.Do(func() {
		in.cancel()
		<-in.done
		if in.leader.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := in.lease.Delete(ctx, LeaseKey, jetstream.LastRevision(in.leaseRev)); err != nil {
				in.log.Warn("release integrator lease", "err", err)
			}
			in.leader.Store(false)
		}
	})
}

func (in *Integrator) run(ctx context.Context) {
	defer close(in.done)
	t := time.NewTicker(in.opts.Interval)
	defer t.Stop()
	for {
		in.tick(ctx)
		if in.backlog && ctx.Err() == nil {
			continue // a bounded round left records behind: keep up with the log, do not wait
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (in *Integrator) tick(ctx context.Context) {
	in.backlog = false
	ctx, cancel := context.WithTimeout(ctx, in.opts.LeaseTTL)
	defer cancel()
	if !in.holdLease(ctx) {
		return
	}
	if err := in.round(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return
		}
		in.log.Warn("integrate access log", "err", err)
		if errors.Is(err, errLostRace) {
			in.leader.Store(false)
		}
	}
}

// holdLease acquires or renews the lease and reports whether this integrator holds it.
func (in *Integrator) holdLease(ctx context.Context) bool {
	if in.leader.Load() {
		rev, err := in.lease.Update(ctx, LeaseKey, []byte(in.opts.ID), in.leaseRev)
		if err == nil {
			in.leaseRev = rev
			return true
		}
		in.log.Warn("lost the integrator lease", "id", in.opts.ID, "err", err)
		in.leader.Store(false)
		return false
	}
	rev, err := in.lease.Create(ctx, LeaseKey, []byte(in.opts.ID))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			in.log.Warn("acquire integrator lease", "err", err)
		}
		return false
	}
	in.leaseRev = rev
	in.tiles = map[[2]uint64][]byte{}
	in.cpKnown = false
	in.leader.Store(true)
	in.log.Info("integrating the access log tree", "id", in.opts.ID)
	return true
}

// round integrates what the log gained since the stored state and signs a checkpoint if the tree
// grew past the last one.
func (in *Integrator) round(ctx context.Context) error {
	st, rev, err := in.tree.loadState(ctx)
	if err != nil {
		return err
	}
	rng, err := rangeFactory.NewRange(0, st.Size, st.Hashes)
	if err != nil {
		return fmt.Errorf("stored tree state is corrupt: %w", err)
	}
	dirty := map[[2]uint64]bool{}
	var visitErr error
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level%TileHeight != 0 || visitErr != nil {
			return
		}
		visitErr = in.setTileHash(ctx, uint64(id.Level/TileHeight), id.Index, hash, dirty)
	}
	start := time.Now()
	var (
		located []locatedLeaf
		lastSeq uint64
		count   int
	)
	err = in.src.Records(ctx, st.NextSeq, func(seq uint64, pos int, leaf []byte) error {
		// Whole batches only, and a bounded round: a backlog is worked off over several rounds,
		// each committing its progress well within the lease.
		if pos == 0 && count > 0 && (count >= in.opts.MaxLeaves || time.Since(start) > in.opts.LeaseTTL/4) {
			return errEnough
		}
		index := rng.End()
		if err := rng.Append(hasher.HashLeaf(leaf), visit); err != nil {
			return fmt.Errorf("append leaf %d: %w", index, err)
		}
		if visitErr != nil {
			return visitErr
		}
		if id := accessID(leaf); id != "" {
			located = append(located, locatedLeaf{id, Leaf{Index: index, Seq: seq, Pos: pos}})
		}
		lastSeq, count = seq, count+1
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("read access log: %w", err)
	}
	in.backlog = errors.Is(err, errEnough)
	if count > 0 {
		if err := in.publishLeaves(ctx, located); err != nil {
			return err
		}
		for k := range dirty {
			if _, err := in.tree.kv.Put(ctx, tileKey(k[0], k[1]), in.tiles[k]); err != nil {
				return fmt.Errorf("%w: write tile %d/%d: %w", ErrUnavailable, k[0], k[1], err)
			}
			if len(in.tiles[k]) == tileWidth*sha256.Size {
				delete(in.tiles, k) // full: never written again
			}
		}
		next := state{Size: rng.End(), NextSeq: lastSeq + 1, Hashes: rng.Hashes()}
		b, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode tree state: %w", err)
		}
		if rev == 0 {
			_, err = in.tree.kv.Create(ctx, stateKey, b)
		} else {
			_, err = in.tree.kv.Update(ctx, stateKey, b, rev)
		}
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
				return fmt.Errorf("%w: %w", errLostRace, err)
			}
			return fmt.Errorf("%w: write tree state: %w", ErrUnavailable, err)
		}
		in.log.Debug("integrated access records", "records", count, "tree_size", next.Size)
	}
	return in.checkpoint(ctx, rng)
}

// setTileHash stores the hash of node (level TileHeight·tl, index) in its tile.
func (in *Integrator) setTileHash(ctx context.Context, tl, index uint64, hash []byte, dirty map[[2]uint64]bool) error {
	k := [2]uint64{tl, index / tileWidth}
	tile, ok := in.tiles[k]
	if !ok {
		e, err := in.tree.kv.Get(ctx, tileKey(k[0], k[1]))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("%w: read tile %d/%d: %w", ErrUnavailable, k[0], k[1], err)
		default:
			tile = e.Value()
		}
	}
	off := int(index%tileWidth) * sha256.Size
	if len(tile) < off {
		return fmt.Errorf("tile %d/%d has %d hashes, node %d needs %d before it", k[0], k[1], len(tile)/sha256.Size, index, off/sha256.Size)
	}
	// A round redone after a crash rewrites the same hashes: the tree is a function of the log.
	in.tiles[k] = append(tile[:off], hash...)
	dirty[k] = true
	return nil
}

func (in *Integrator) checkpoint(ctx context.Context, rng *compact.Range) error {
	if !in.cpKnown {
		seq, size, err := in.tree.lastCheckpointRaw(ctx)
		if err != nil {
			return err
		}
		in.cpSeq, in.cpSize, in.cpKnown = seq, size, true
	}
	size := rng.End()
	if size <= in.cpSize {
		return nil
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("tree root: %w", err)
	}
	cp, err := signCheckpoint(in.signer, size, root)
	if err != nil {
		return err
	}
	// Expecting the last sequence makes the stream itself refuse a second writer's checkpoint.
	ack, err := in.tree.js.Publish(ctx, CheckpointSubject, cp, jetstream.WithExpectLastSequence(in.cpSeq))
	if err != nil {
		in.cpKnown = false
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: publish checkpoint: %w", errLostRace, err)
		}
		return fmt.Errorf("%w: publish checkpoint: %w", ErrUnavailable, err)
	}
	in.cpSeq, in.cpSize = ack.Sequence, size
	in.log.Info("signed checkpoint", "tree_size", size, "seq", ack.Sequence)
	return nil
}

type locatedLeaf struct {
	id   string
	leaf Leaf
}

// publishLeaves writes the access id → leaf index entries, asynchronously in windows that stay
// below the connection's limit of outstanding asynchronous publishes.
func (in *Integrator) publishLeaves(ctx context.Context, leaves []locatedLeaf) error {
	const window = 1024
	futures := make([]jetstream.PubAckFuture, 0, window)
	for i, l := range leaves {
		f, err := in.tree.js.PublishAsync(leafSubject(l.id), l.leaf.marshal())
		if err != nil {
			return fmt.Errorf("%w: publish leaf index: %w", ErrUnavailable, err)
		}
		futures = append(futures, f)
		if len(futures) == window || i == len(leaves)-1 {
			if err := waitAll(ctx, futures); err != nil {
				return err
			}
			futures = futures[:0]
		}
	}
	return nil
}

func waitAll(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("%w: publish leaf index: %w", ErrUnavailable, err)
		case <-ctx.Done():
			return fmt.Errorf("%w: publish leaf index: %w", ErrUnavailable, context.Cause(ctx))
		}
	}
	return nil
}

// accessID returns field 1 (id) of an encoded AccessRecord without decoding the rest.
func accessID(leaf []byte) string {
	for len(leaf) > 0 {
		num, typ, n := protowire.ConsumeTag(leaf)
		if n < 0 {
			return ""
		}
		leaf = leaf[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(leaf)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		if n = protowire.ConsumeFieldValue(num, typ, leaf); n < 0 {
			return ""
		}
		leaf = leaf[n:]
	}
	return ""
}
