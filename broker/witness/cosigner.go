package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/tlog"
)

// Storage names. They are part of the on-disk format.
const (
	// CosignedBucket holds the cosigned checkpoints, so every replica serves the same one.
	CosignedBucket = "COSIGNED"
	// keyCheckpoint is the newest checkpoint that satisfies the policy's quorum.
	keyCheckpoint = "checkpoint"
	// keyAnchor is the newest checkpoint at least one witness cosigned.
	keyAnchor = "anchor"
)

// ErrNotFound means no checkpoint was cosigned (yet).
var ErrNotFound = errors.New("no cosigned checkpoint")

// Tree is what the cosigner needs of the access log's tree (tlog.Tree).
type Tree interface {
	// LatestCheckpoint returns the newest log-signed checkpoint, verified; tlog.ErrNotFound if none.
	LatestCheckpoint(ctx context.Context) (tlog.Checkpoint, error)
	// ConsistencyProof returns the RFC 6962 proof from size1 to size2.
	ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error)
}

// CosignerOptions configure a Cosigner.
type CosignerOptions struct {
	// Policy names the witnesses to submit to and the quorum a served checkpoint needs. It must know
	// the log's keys (Policy.WithLog).
	Policy *Policy
	// Interval between looks for a new checkpoint, besides the prompt look when one is published
	// (the cosigner listens on the checkpoint subject). Default 1s.
	Interval time.Duration
	// Timeout bounds one submission to one witness. Default 10s.
	Timeout time.Duration
	// Leader, if set, says whether this replica submits (the integrator's lease holder); the others
	// only serve what is stored. Nil: always submit.
	Leader func() bool
	// Replicas of the bucket. Default 1.
	Replicas int
	// HTTP is the client for the witnesses; nil uses a client with keep-alive.
	HTTP *http.Client
	// Logger; nil uses slog.Default.
	Logger *slog.Logger
}

// Cosigner gets the access log's checkpoints cosigned by the policy's witnesses and serves the newest
// cosigned checkpoint. It is safe for concurrent use.
type Cosigner struct {
	tree   Tree
	nc     *nats.Conn
	kv     jetstream.KeyValue
	policy *Policy
	opts   CosignerOptions
	log    *slog.Logger

	mu       sync.Mutex           // one round at a time
	known    map[string]uint64    // witness → the size it last cosigned
	sigs     map[string]cachedSig // witness → its cosignature of that checkpoint
	done     uint64               // size of the newest checkpoint that reached the quorum here
	doneRoot []byte

	alarmMu sync.Mutex
	alarms  map[string]error     // witness name → why it refused
	downLog map[string]time.Time // witness name → when "unavailable" was last logged

	stats struct{ rounds, cosigned, refusals, unavailable, badStored atomic.Uint64 }
	last  atomic.Int64 // nanoseconds from seeing a checkpoint to storing it cosigned, last round

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// OpenCosigner creates or opens the COSIGNED bucket. Start the submission loop with Start; a replica
// that only serves may skip it.
func OpenCosigner(ctx context.Context, js jetstream.JetStream, tree Tree, opts CosignerOptions) (*Cosigner, error) {
	if opts.Policy == nil {
		return nil, errors.New("cosigner: a witness policy is required")
	}
	if len(opts.Policy.logs) == 0 {
		return nil, errors.New("cosigner: the witness policy knows no log key")
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: CosignedBucket, Description: "Aperture access log checkpoints cosigned by witnesses",
		History: 16, Storage: jetstream.FileStorage, Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", CosignedBucket, err)
	}
	return &Cosigner{
		tree: tree, nc: js.Conn(), kv: kv, policy: opts.Policy, opts: opts, log: opts.Logger,
		known: map[string]uint64{}, sigs: map[string]cachedSig{}, alarms: map[string]error{},
		downLog: map[string]time.Time{},
	}, nil
}

// Start runs the submission loop until Close. A checkpoint is submitted as soon as it is published:
// the loop wakes on every message of the checkpoint subject (a JetStream publish is also delivered to
// plain subscribers), and looks at the interval anyway in case a notification was missed.
func (c *Cosigner) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	wake := make(chan struct{}, 1)
	var sub *nats.Subscription
	if c.nc != nil {
		var err error
		sub, err = c.nc.Subscribe(tlog.CheckpointSubject, func(*nats.Msg) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		if err != nil {
			c.log.Warn("cannot listen for new checkpoints; polling only", "err", err)
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if sub != nil {
			defer sub.Unsubscribe()
		}
		t := time.NewTicker(c.opts.Interval)
		defer t.Stop()
		woken := false
		for {
			if c.opts.Leader == nil || c.opts.Leader() {
				advanced, err := c.sync(ctx)
				if err != nil && ctx.Err() == nil {
					c.log.Warn("cosigning round failed", "err", err)
				}
				// A plain subscriber may hear of a checkpoint before JetStream has stored it: look
				// again shortly rather than at the next tick.
				for retry := 0; woken && !advanced && err == nil && retry < 10 && ctx.Err() == nil; retry++ {
					time.Sleep(10 * time.Millisecond)
					advanced, err = c.sync(ctx)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				woken = false
			case <-wake:
				woken = true
			}
		}
	}()
}

// Close stops the loop.
func (c *Cosigner) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// Sync submits the newest checkpoint to every witness that has not cosigned it and stores the result.
// It returns an error only for a failure of the log or the store; witness refusals raise alarms
// instead (Health).
func (c *Cosigner) Sync(ctx context.Context) error {
	_, err := c.sync(ctx)
	return err
}

// sync is Sync; advanced says whether there was a checkpoint not yet cosigned here.
func (c *Cosigner) sync(ctx context.Context) (advanced bool, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp, err := c.tree.LatestCheckpoint(ctx)
	if errors.Is(err, tlog.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("latest checkpoint: %w", err)
	}
	if cp.Size == c.done && bytes.Equal(cp.Root, c.doneRoot) {
		return false, nil
	}
	c.stats.rounds.Add(1)
	start := time.Now()
	var (
		wg    sync.WaitGroup
		sigMu sync.Mutex
		sigs  []byte
	)
	for _, w := range c.policy.Witnesses {
		if w.URL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := c.submit(ctx, w, cp)
			if err != nil {
				c.failed(w, cp, err)
				return
			}
			c.clear(w)
			sigMu.Lock()
			sigs = append(sigs, line...)
			sigMu.Unlock()
		}()
	}
	wg.Wait()
	if len(sigs) == 0 {
		return true, nil
	}
	cosigned := append(append([]byte(nil), cp.Note...), sigs...)
	got, err := c.policy.Open(cosigned)
	if err != nil && !errors.Is(err, ErrQuorum) {
		return true, fmt.Errorf("cosigned checkpoint %d: %w", cp.Size, err)
	}
	if err := c.store(ctx, keyAnchor, cosigned, cp.Size); err != nil {
		return true, err
	}
	if err != nil { // below quorum: an anchor, not yet served
		c.log.Warn("checkpoint below the witness quorum", "size", cp.Size, "cosigners", strings.Join(got.Cosigners, ","), "policy", c.policy.Describe())
		return true, nil
	}
	if err := c.store(ctx, keyCheckpoint, cosigned, cp.Size); err != nil {
		return true, err
	}
	c.done, c.doneRoot = cp.Size, cp.Root
	c.stats.cosigned.Add(1)
	d := time.Since(start)
	c.last.Store(int64(d))
	c.log.Debug("checkpoint cosigned", "size", cp.Size, "cosigners", strings.Join(got.Cosigners, ","), "took", d)
	return true, nil
}

// submit gets one witness's cosignature of cp, from the size it last saw; a 409 names that size and is
// retried once from it.
func (c *Cosigner) submit(ctx context.Context, w Witness, cp tlog.Checkpoint) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if line := c.cached(w.Name, cp); line != nil {
		return line, nil
	}
	cl := Client{URL: w.URL, Key: w.Key, HTTP: c.opts.HTTP}
	old := c.knownSize(w.Name)
	for attempt := 0; ; attempt++ {
		if old > cp.Size {
			return nil, &RefusedError{Status: http.StatusConflict,
				Msg: fmt.Sprintf("the witness cosigned size %d, the log's newest checkpoint has %d: the log shrank", old, cp.Size)}
		}
		var proof [][]byte
		if old > 0 && old < cp.Size {
			var err error
			if proof, err = c.tree.ConsistencyProof(ctx, old, cp.Size); err != nil {
				return nil, fmt.Errorf("consistency proof %d→%d: %w", old, cp.Size, err)
			}
		}
		line, err := cl.AddCheckpoint(ctx, old, proof, cp.Note)
		var conflict *ConflictError
		if errors.As(err, &conflict) && attempt == 0 {
			old = conflict.Size
			continue
		}
		if err != nil {
			return nil, err
		}
		c.setKnown(w.Name, cp, line)
		return line, nil
	}
}

// cachedSig is a witness's cosignature of one checkpoint, kept so that a round which did not reach the
// quorum does not ask the witnesses that answered again.
type cachedSig struct {
	size uint64
	root []byte
	line []byte
}

func (c *Cosigner) knownSize(name string) uint64 {
	c.alarmMu.Lock()
	defer c.alarmMu.Unlock()
	return c.known[name]
}

func (c *Cosigner) cached(name string, cp tlog.Checkpoint) []byte {
	c.alarmMu.Lock()
	defer c.alarmMu.Unlock()
	if s, ok := c.sigs[name]; ok && s.size == cp.Size && bytes.Equal(s.root, cp.Root) {
		return s.line
	}
	return nil
}

func (c *Cosigner) setKnown(name string, cp tlog.Checkpoint, line []byte) {
	c.alarmMu.Lock()
	defer c.alarmMu.Unlock()
	c.known[name] = cp.Size
	c.sigs[name] = cachedSig{size: cp.Size, root: cp.Root, line: line}
}

// failed records a witness's failure: a refusal is an alarm; a witness that is down is a warning.
func (c *Cosigner) failed(w Witness, cp tlog.Checkpoint, err error) {
	var refused *RefusedError
	var conflict *ConflictError
	if errors.As(err, &refused) || errors.As(err, &conflict) {
		c.stats.refusals.Add(1)
		c.log.Error("WITNESS REFUSED the access log's checkpoint: the log may have been rewritten",
			"witness", w.Name, "url", w.URL, "size", cp.Size, "err", err)
		c.alarmMu.Lock()
		c.alarms[w.Name] = fmt.Errorf("witness %s refused checkpoint %d: %w", w.Name, cp.Size, err)
		c.alarmMu.Unlock()
		return
	}
	c.stats.unavailable.Add(1)
	// A witness that is down is retried every round; say so once a minute, not every second.
	c.alarmMu.Lock()
	quiet := time.Since(c.downLog[w.Name]) < time.Minute
	if !quiet {
		c.downLog[w.Name] = time.Now()
	}
	c.alarmMu.Unlock()
	if !quiet {
		c.log.Warn("witness unavailable", "witness", w.Name, "url", w.URL, "size", cp.Size, "err", err)
	}
}

// clear ends a witness's alarm: it cosigned again, so the log is consistent with what it saw.
func (c *Cosigner) clear(w Witness) {
	c.alarmMu.Lock()
	defer c.alarmMu.Unlock()
	delete(c.alarms, w.Name)
	delete(c.downLog, w.Name)
}

// Health is nil unless a witness refuses the log's checkpoints: then it says which, for the health
// service and the operator.
func (c *Cosigner) Health() error {
	c.alarmMu.Lock()
	defer c.alarmMu.Unlock()
	var errs []error
	for _, w := range c.policy.Witnesses {
		if err := c.alarms[w.Name]; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Err is Health.
func (c *Cosigner) Err() error { return c.Health() }

// CosignerStats are counters since OpenCosigner.
type CosignerStats struct {
	// Rounds submitted a new checkpoint; Cosigned reached the quorum.
	Rounds, Cosigned uint64
	// Refusals counts witness refusals (each raised the alarm); Unavailable counts witnesses not reached.
	Refusals, Unavailable uint64
	// BadStored counts stored cosigned checkpoints that did not verify (treated as absent).
	BadStored uint64
	// LastLatency is from reading a new checkpoint to storing it cosigned, in the last round that
	// reached the quorum.
	LastLatency time.Duration
}

// Stats returns the counters.
func (c *Cosigner) Stats() CosignerStats {
	return CosignerStats{
		Rounds: c.stats.rounds.Load(), Cosigned: c.stats.cosigned.Load(),
		Refusals: c.stats.refusals.Load(), Unavailable: c.stats.unavailable.Load(),
		BadStored: c.stats.badStored.Load(), LastLatency: time.Duration(c.last.Load()),
	}
}

// store puts b under key unless a newer checkpoint is already there (another replica, or a round
// that overtook this one): stored sizes never go back.
func (c *Cosigner) store(ctx context.Context, key string, b []byte, size uint64) error {
	for range 5 {
		e, err := c.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := c.kv.Create(ctx, key, b); err == nil {
				return nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("store cosigned checkpoint: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("read cosigned checkpoint: %w", err)
		}
		if old, err := c.open(key, e.Value()); err == nil && old.Size > size {
			return nil
		}
		if _, err := c.kv.Update(ctx, key, b, e.Revision()); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("store cosigned checkpoint: %w", err)
		}
	}
	return errors.New("store cosigned checkpoint: too many concurrent writers")
}

// open verifies a stored value: the quorum for keyCheckpoint, one cosignature for keyAnchor.
func (c *Cosigner) open(key string, b []byte) (Cosigned, error) {
	got, err := c.policy.Open(b)
	if key == keyAnchor && errors.Is(err, ErrQuorum) && len(got.Cosigners) > 0 {
		err = nil
	}
	if key == keyAnchor && err == nil && len(got.Cosigners) == 0 {
		err = fmt.Errorf("%w: no witness cosigned it", ErrQuorum)
	}
	return got, err
}

// load returns the verified value of key. A stored value that does not verify counts as absent and
// is reported.
func (c *Cosigner) load(ctx context.Context, key string) ([]byte, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read cosigned checkpoint: %w", err)
	}
	if _, err := c.open(key, e.Value()); err != nil {
		c.stats.badStored.Add(1)
		c.log.Error("stored cosigned checkpoint does not verify; ignoring it", "key", key, "revision", e.Revision(), "err", err)
		return nil, fmt.Errorf("%w: the stored one does not verify", ErrNotFound)
	}
	return e.Value(), nil
}

// LatestCheckpoint returns the newest checkpoint cosigned by the policy's quorum, as a signed note
// with the log's signature and the witnesses' cosignature lines.
func (c *Cosigner) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	return c.load(ctx, keyCheckpoint)
}

// Anchor returns the newest checkpoint at least one witness cosigned: a tree inconsistent with it
// would be refused by that witness, so the integrator must not sign one. Before the first cosignature
// (or when the stored one does not verify, which load reports) there is none: nil, nil, as
// tlog.Anchor expects, since the integrator must sign the first checkpoint for a witness to see it.
func (c *Cosigner) Anchor(ctx context.Context) ([]byte, error) {
	b, err := c.load(ctx, keyAnchor)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return b, err
}

// Policy is the cosigner's policy (with the log's keys).
func (c *Cosigner) Policy() *Policy { return c.policy }

// ReadCosigned reads the newest quorum-cosigned checkpoint from the COSIGNED bucket, for verifiers that
// read the broker's storage directly (aperture audit verify). It does not verify it: that is the
// caller's policy's job. ErrNotFound when there is none.
func ReadCosigned(ctx context.Context, js jetstream.JetStream) ([]byte, error) {
	kv, err := js.KeyValue(ctx, CosignedBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", CosignedBucket, err)
	}
	e, err := kv.Get(ctx, keyCheckpoint)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read cosigned checkpoint: %w", err)
	}
	return e.Value(), nil
}
