package tlog

import (
	"bytes"
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
	"github.com/transparency-dev/merkle/proof"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/aperture-gov/aperture/broker/accesslog"
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
	// MaxLeaves bounds one round, so a large backlog does not outlast the lease (a round reads every
	// record and hashes it; the tiles and the access-id lookup are a few writes). Default 4096.
	MaxLeaves int
	// Replicas of the lease bucket. Default 1.
	Replicas int
	// Logger; nil discards.
	Logger *slog.Logger
	// AnchorFile is a file outside the tree's storage where the integrator saves every checkpoint it
	// signs (written atomically, fsynced) and which it reads back as an anchor: the tree it signs
	// next must be consistent with it. The broker keeps it in its data directory. Empty: none.
	AnchorFile string
	// Anchors are further checkpoints vouched for outside the tree's storage, such as the newest
	// checkpoint a witness cosigned.
	Anchors []Anchor
}

// Anchor is a checkpoint vouched for outside the tree's storage. Before it signs a tree of size N,
// the integrator proves from its own tiles that every anchor's tree is a prefix of it, and halts
// with an alarm if it cannot: whoever deletes the tree's storage and rewrites the log cannot get the
// rewritten history signed.
type Anchor struct {
	// Name says where the checkpoint comes from, for the alarm ("witness-cosigned checkpoint").
	Name string
	// Latest returns the newest anchored checkpoint note, or nil if there is none yet. The note must
	// carry a signature of the log's key (other signatures, such as witness cosignatures, are
	// ignored here). An error skips signing for this round (it is retried), it does not halt.
	Latest func(ctx context.Context) ([]byte, error)
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
	cpSeq    uint64               // CHECKPOINTS' last stream sequence, while leader
	cpLast   *Checkpoint          // newest checkpoint that verifies, while leader (nil: none)
	cpKnown  bool
	checked  uint64 // tree size last checked against the anchors (run goroutine only)
	tofu     bool   // "signing from scratch" was said (run goroutine only)

	// For metrics: unix nanoseconds of the last round that succeeded and of the last checkpoint
	// signed, and the tree size then.
	lastRound, lastSigned, lastSize atomic.Int64

	haltMu     sync.Mutex
	halted     error
	haltLogged time.Time
	alarms     alarmCounters

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

// Alarms counts what the integrator refused to trust, since it started.
type Alarms struct {
	// UnauthenticBatches: ACCESS messages the broker did not write (integration halted on them).
	UnauthenticBatches uint64
	// ForgedCheckpoints: CHECKPOINTS messages that do not verify (skipped).
	ForgedCheckpoints uint64
	// InconsistentAnchors: anchored checkpoints the tree is not consistent with (signing halted).
	InconsistentAnchors uint64
}

type alarmCounters struct {
	unauthentic, forged, anchors atomic.Uint64
}

// Alarms returns the integrator's alarm counters.
func (in *Integrator) Alarms() Alarms {
	return Alarms{in.alarms.unauthentic.Load(), in.alarms.forged.Load(), in.alarms.anchors.Load()}
}

// Err returns why integration halted, or nil while it works. A halted integrator keeps its lease (so
// no other replica signs what it refused) and signs nothing until it is restarted after an operator
// has looked; health checks report it.
func (in *Integrator) Err() error {
	in.haltMu.Lock()
	defer in.haltMu.Unlock()
	return in.halted
}

// Progress is what the integrator last achieved, for metrics.
type Progress struct {
	// Leader is whether this replica holds the lease (only the leader integrates and signs).
	Leader bool
	// LastRound is when a round last completed (zero if none did here): the tree was brought up to
	// the log's end then. LastSigned is when this replica last signed a checkpoint, of TreeSize.
	LastRound, LastSigned time.Time
	TreeSize              uint64
}

// Progress returns the integrator's progress.
func (in *Integrator) Progress() Progress {
	p := Progress{Leader: in.leader.Load(), TreeSize: uint64(in.lastSize.Load())}
	if n := in.lastRound.Load(); n != 0 {
		p.LastRound = time.Unix(0, n)
	}
	if n := in.lastSigned.Load(); n != 0 {
		p.LastSigned = time.Unix(0, n)
	}
	return p
}

// Halted reports whether integration halted (see Err).
func (in *Integrator) Halted() bool { return in.Err() != nil }

// ErrHalted wraps every reason integration halted.
var ErrHalted = errors.New("access log integration halted")

// halt stops integration for err and raises the alarm.
func (in *Integrator) halt(err error, attrs ...any) error {
	err = fmt.Errorf("%w: %w", ErrHalted, err)
	in.haltMu.Lock()
	if in.halted == nil {
		in.halted = err
	}
	in.haltLogged = time.Now()
	in.haltMu.Unlock()
	in.log.Error("ALARM: access log integration halted; no checkpoint is signed until an operator investigates and restarts the broker",
		append(attrs, "err", err)...)
	return err
}

// Leader reports whether this integrator holds the lease.
func (in *Integrator) Leader() bool { return in.leader.Load() }

// Close stops integrating and gives the lease up, so another replica takes over at once.
func (in *Integrator) Close() {
	in.once.Do(func() {
		in.cancel()
		<-in.done
		in.releaseLease()
		in.leader.Store(false)
	})
}

// releaseLease gives the lease up if it still names this integrator. It does not go by Leader or the
// revision this integrator last saw: the cancel that stops the loop can cut a renewal short on this
// side after the server applied it, leaving this integrator named at a newer revision while it
// believes it lost the lease, and the next replica would wait out the whole TTL.
//
// That renewal can also reach the server only after this reads the lease, so a delete refused for a
// changed revision is tried again with the new one.
func (in *Integrator) releaseLease() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var err error
	for range 3 {
		var e jetstream.KeyValueEntry
		e, err = in.lease.Get(ctx, LeaseKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return
		case err != nil:
			in.log.Warn("release integrator lease", "err", err)
			return
		case string(e.Value()) != in.opts.ID:
			return
		}
		// LastRevision: never delete a lease another replica took meanwhile.
		if err = in.lease.Delete(ctx, LeaseKey, jetstream.LastRevision(e.Revision())); err == nil {
			return
		}
	}
	in.log.Warn("release integrator lease", "err", err)
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
	if err := in.Err(); err != nil {
		// Halted: hold the lease so that no other replica signs what this one refused, and repeat
		// the alarm now and then rather than on every tick.
		in.haltMu.Lock()
		again := time.Since(in.haltLogged) > time.Minute
		if again {
			in.haltLogged = time.Now()
		}
		in.haltMu.Unlock()
		if again {
			in.log.Error("ALARM: access log integration is still halted", "err", err)
		}
		return
	}
	err := in.round(ctx)
	if err == nil {
		in.lastRound.Store(time.Now().UnixNano())
	}
	if err != nil {
		if errors.Is(err, ErrHalted) {
			return
		}
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
	in.checked = 0
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
	var haltErr error
	if be := (*accesslog.BatchError)(nil); errors.As(err, &be) && errors.Is(err, accesslog.ErrUnauthenticBatch) {
		in.alarms.unauthentic.Add(1)
		haltErr = fmt.Errorf("ACCESS message %d was not written by the broker; its records are not made leaves: %w", be.Seq, err)
		if be.Seq <= lastSeq {
			// Part of the batch was taken: integrate nothing of this round.
			return in.halt(haltErr, "access_seq", be.Seq)
		}
		err = nil // integrate and sign the authentic records before it, then halt
	}
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("read access log: %w", err)
	}
	in.backlog = errors.Is(err, errEnough)
	if count > 0 {
		if err := in.publishLeaves(ctx, located); err != nil {
			return err
		}
		for k := range dirty {
			if err := in.writeTile(ctx, k[0], k[1], in.tiles[k]); err != nil {
				return err
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
	if err := in.checkpoint(ctx, rng); err != nil {
		return err
	}
	if haltErr != nil {
		var be *accesslog.BatchError
		errors.As(haltErr, &be)
		return in.halt(haltErr, "access_seq", be.Seq)
	}
	return nil
}

// writeTile stores a tile: a partial one under its partial key (overwritten as it grows), a full one
// once under its own key, after which the partial key is removed. A full tile that is already stored
// with other hashes is not overwritten: the tree in storage and the log disagree.
func (in *Integrator) writeTile(ctx context.Context, level, index uint64, tile []byte) error {
	kv := in.tree.kv
	if len(tile) < tileWidth*sha256.Size {
		if _, err := kv.Put(ctx, partialTileKey(level, index), tile); err != nil {
			return fmt.Errorf("%w: write partial tile %d/%d: %w", ErrUnavailable, level, index, err)
		}
		return nil
	}
	_, err := kv.Create(ctx, tileKey(level, index), tile)
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := kv.Get(ctx, tileKey(level, index))
		if gerr != nil {
			return fmt.Errorf("%w: read tile %d/%d: %w", ErrUnavailable, level, index, gerr)
		}
		switch old := e.Value(); {
		case bytes.Equal(old, tile):
			err = nil // a round redone after a crash
		case len(old) < len(tile) && bytes.Equal(old, tile[:len(old)]):
			// A partial tile stored under the full key by an earlier version: complete it once.
			_, err = kv.Update(ctx, tileKey(level, index), tile, e.Revision())
		default:
			return in.halt(fmt.Errorf("full tile %d/%d is already stored with other hashes: the stored tree and the log disagree", level, index))
		}
	}
	if err != nil {
		return fmt.Errorf("%w: write tile %d/%d: %w", ErrUnavailable, level, index, err)
	}
	if err := kv.Delete(ctx, partialTileKey(level, index)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		in.log.Warn("remove partial tile", "tile", fmt.Sprintf("%d/%d", level, index), "err", err)
	}
	return nil
}

// setTileHash stores the hash of node (level TileHeight·tl, index) in its tile.
func (in *Integrator) setTileHash(ctx context.Context, tl, index uint64, hash []byte, dirty map[[2]uint64]bool) error {
	k := [2]uint64{tl, index / tileWidth}
	tile, ok := in.tiles[k]
	if !ok {
		var err error
		if tile, err = in.tree.readTile(ctx, k[0], k[1]); err != nil {
			return fmt.Errorf("tile %d/%d: %w", k[0], k[1], err)
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
		cp, last, err := in.tree.latestVerified(ctx, in.reportForged)
		switch {
		case errors.Is(err, ErrNotFound):
			in.cpLast = nil
		case err != nil:
			return err
		default:
			in.cpLast = &cp
		}
		in.cpSeq, in.cpKnown = last, true
	}
	size := rng.End()
	if size == 0 || (in.cpLast != nil && size == in.cpLast.Size && in.checked == size) {
		return nil
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("tree root: %w", err)
	}
	if in.checked != size {
		ready, err := in.checkAnchors(ctx, size, root)
		if err != nil || !ready {
			return err
		}
		in.checked = size
	}
	if in.cpLast != nil && size <= in.cpLast.Size {
		return nil
	}
	cp, err := signCheckpoint(in.signer, size, root)
	if err != nil {
		return err
	}
	// Expecting the last sequence makes the stream itself refuse a second writer's checkpoint.
	var ack *jetstream.PubAck
	for attempt := 0; ; attempt++ {
		ack, err = in.tree.js.Publish(ctx, CheckpointSubject, cp, jetstream.WithExpectLastSequence(in.cpSeq))
		if err == nil {
			break
		}
		in.cpKnown = false
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: publish checkpoint: %w", ErrUnavailable, err)
		}
		// Someone published in between. A genuine checkpoint means another integrator: step back.
		// A forgery is skipped, and does not cost this integrator its lease.
		newest, last, lerr := in.tree.latestVerified(ctx, in.reportForged)
		if (lerr == nil && newest.Seq == last) || attempt == 2 {
			return fmt.Errorf("%w: publish checkpoint: %w", errLostRace, err)
		}
		if lerr != nil && !errors.Is(lerr, ErrNotFound) {
			return lerr
		}
		in.cpSeq, in.cpKnown = last, true
	}
	in.cpSeq = ack.Sequence
	in.cpLast = &Checkpoint{Note: cp, Origin: in.signer.Name(), Size: size, Root: root, Seq: ack.Sequence}
	in.lastSigned.Store(time.Now().UnixNano())
	in.lastSize.Store(int64(size))
	in.log.Info("signed checkpoint", "tree_size", size, "seq", ack.Sequence)
	if in.opts.AnchorFile != "" {
		if err := writeFileAtomic(in.opts.AnchorFile, cp); err != nil {
			// The checkpoint is published; the anchor lags by one until the next write succeeds.
			in.log.Error("save signed checkpoint to the anchor file", "path", in.opts.AnchorFile, "err", err)
		}
	}
	return nil
}

func (in *Integrator) reportForged(e *ForgedCheckpointError) {
	in.alarms.forged.Add(1)
	in.log.Error("ALARM: a message in CHECKPOINTS is not signed by the log's key; skipped, signing continues",
		"checkpoint_seq", e.Seq, "err", e.Err)
}

type anchored struct {
	name string
	cp   Checkpoint
}

// anchors returns the checkpoints the next signed tree must extend: the newest checkpoint in
// CHECKPOINTS that verifies, the anchor file and the configured anchors.
func (in *Integrator) anchors(ctx context.Context) ([]anchored, error) {
	var out []anchored
	if in.cpLast != nil {
		out = append(out, anchored{fmt.Sprintf("checkpoint %d in %s", in.cpLast.Seq, CheckpointStream), *in.cpLast})
	}
	all := in.opts.Anchors
	if in.opts.AnchorFile != "" {
		all = append([]Anchor{{Name: "the anchor file " + in.opts.AnchorFile, Latest: FileAnchor(in.opts.AnchorFile)}}, all...)
	}
	for _, a := range all {
		b, err := a.Latest(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a.Name, err)
		}
		if len(b) == 0 {
			continue
		}
		cp, err := in.tree.OpenCheckpoint(b)
		if err != nil {
			in.alarms.anchors.Add(1)
			return nil, in.halt(fmt.Errorf("%s: %w", a.Name, err), "anchor", a.Name)
		}
		out = append(out, anchored{a.Name, cp})
	}
	return out, nil
}

// checkAnchors proves that the tree of size with root extends every anchored checkpoint. It reports
// false (without error) while the tree is still catching up with the log towards an anchor's size.
func (in *Integrator) checkAnchors(ctx context.Context, size uint64, root []byte) (bool, error) {
	as, err := in.anchors(ctx)
	if err != nil {
		return false, err
	}
	if len(as) == 0 && !in.tofu {
		in.tofu = true
		in.log.Warn("no earlier checkpoint in storage or anchors: signing this log from scratch (trust on first use)", "tree_size", size)
	}
	ready := true
	for _, a := range as {
		var fail error
		switch {
		case a.cp.Size > size && in.backlog:
			ready = false // the tree is being rebuilt from the log: check once it has caught up
			continue
		case a.cp.Size > size:
			fail = fmt.Errorf("%s has size %d but the whole log makes a tree of only %d records: records were removed from the log", a.name, a.cp.Size, size)
		case a.cp.Size == size:
			if !bytes.Equal(a.cp.Root, root) {
				fail = fmt.Errorf("%s has root %x at size %d but the log makes root %x: the log's history was rewritten", a.name, a.cp.Root, size, root)
			}
		default:
			p, err := in.tree.ConsistencyProof(ctx, a.cp.Size, size)
			if err != nil {
				return false, fmt.Errorf("consistency proof from %s: %w", a.name, err)
			}
			if err := proof.VerifyConsistency(hasher, a.cp.Size, size, p, a.cp.Root, root); err != nil {
				fail = fmt.Errorf("the tree of size %d is not consistent with %s (size %d, root %x): the log's history was rewritten: %w", size, a.name, a.cp.Size, a.cp.Root, err)
			}
		}
		if fail != nil {
			in.alarms.anchors.Add(1)
			return false, in.halt(fmt.Errorf("refusing to sign: %w", fail), "anchor", a.name, "anchor_size", a.cp.Size, "tree_size", size)
		}
	}
	return ready, nil
}

type locatedLeaf struct {
	id   string
	leaf Leaf
}

// publishLeaves writes the round's access id → leaf lookup entries, filed by the second each id was
// created in (LookupSubject): one message per second the round touches, more only for a second with
// more than lookupMsgBytes of entries.
func (in *Integrator) publishLeaves(ctx context.Context, leaves []locatedLeaf) error {
	var futures []jetstream.PubAckFuture
	publish := func(subject string, b []byte) error {
		f, err := in.tree.js.PublishAsync(subject, b)
		if err != nil {
			return fmt.Errorf("%w: publish leaf lookup: %w", ErrUnavailable, err)
		}
		futures = append(futures, f)
		return nil
	}
	bufs := map[string][]byte{}
	var order []string
	for _, l := range leaves {
		s := LookupSubject(l.id)
		b, seen := bufs[s]
		if !seen {
			order = append(order, s)
		}
		b = AppendLookup(b, l.id, l.leaf)
		if len(b) >= lookupMsgBytes {
			if err := publish(s, b); err != nil {
				return err
			}
			b = nil
		}
		bufs[s] = b
	}
	for _, s := range order {
		if len(bufs[s]) > 0 {
			if err := publish(s, bufs[s]); err != nil {
				return err
			}
		}
	}
	return waitAll(ctx, futures)
}

// lookupMsgBytes bounds a lookup message (about 1,600 entries): well under any server's
// max_payload, and a lookup reads a second's messages whole.
const lookupMsgBytes = 64 << 10

func waitAll(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("%w: publish leaf lookup: %w", ErrUnavailable, err)
		case <-ctx.Done():
			return fmt.Errorf("%w: publish leaf lookup: %w", ErrUnavailable, context.Cause(ctx))
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
