package accesslog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DifferenceKind names how the index differs from the log.
type DifferenceKind string

// The differences VerifyIndex finds.
const (
	// DiffMissing: a leaf of the log has no index entry (its citizen does not see it).
	DiffMissing DifferenceKind = "missing"
	// DiffDuplicate: a leaf has more than one index entry.
	DiffDuplicate DifferenceKind = "duplicate"
	// DiffAltered: an authentic index entry whose bytes, batch position or shard are not its leaf's.
	DiffAltered DifferenceKind = "altered"
	// DiffUnauthentic: an index entry (or the position marker) without a valid broker MAC.
	DiffUnauthentic DifferenceKind = "unauthentic"
	// DiffUnindexable: a leaf without a usable citizen pseudonym (the broker never writes one).
	DiffUnindexable DifferenceKind = "unindexable"
	// DiffLink: an authentic entry whose link to the citizen's previous entry skips one of the
	// citizen's entries, which listings would then miss. JetStream checks every link as it stores
	// the entry, so only a broker bug could write one.
	DiffLink DifferenceKind = "link"
)

// Difference is one way the index differs from the log. It names no citizen: the leaf index, the
// access id, and where the index entry is.
type Difference struct {
	Kind DifferenceKind
	// LeafIndex is the leaf concerned: the leaf that is missing, or the leaf the entry claims to be.
	LeafIndex uint64
	// AccessID is the record's id (from the log for a missing leaf, else from the entry).
	AccessID string
	// Shard and IndexSeq locate the index entry (IndexSeq 0 for a missing leaf, whose Shard is the
	// one it belongs in).
	Shard    int
	IndexSeq uint64
	// LogSeq is the ACCESS message the leaf is in (0 if unknown).
	LogSeq uint64
}

func (d Difference) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: leaf %d", d.Kind, d.LeafIndex)
	if d.AccessID != "" {
		fmt.Fprintf(&b, " (access %s)", d.AccessID)
	}
	fmt.Fprintf(&b, ", index shard %02x", d.Shard)
	if d.IndexSeq != 0 {
		fmt.Fprintf(&b, " message %d", d.IndexSeq)
	}
	if d.LogSeq != 0 {
		fmt.Fprintf(&b, ", ACCESS message %d", d.LogSeq)
	}
	return b.String()
}

// maxDifferences bounds the differences a Report lists; the rest are counted.
const maxDifferences = 1000

// Report is what VerifyIndex found.
type Report struct {
	// Leaves is the number of leaves checked: leaves 0 to Leaves-1, from ACCESS messages up to
	// Through. Entries of later batches (not yet indexed when the check began) are not judged.
	Leaves  uint64
	Through uint64
	// Entries is the number of index entries read.
	Entries uint64
	// UnauthenticBatches are the ACCESS messages up to Through without a valid broker MAC: their
	// records are not leaves (and the integrator halts on the first).
	UnauthenticBatches []uint64
	// Differences, at most 1000; Unlisted counts the rest.
	Differences []Difference
	Unlisted    int
}

// OK reports whether the index is exactly the log: every leaf indexed once, every entry its leaf,
// and no unauthentic batch.
func (r Report) OK() bool {
	return len(r.Differences) == 0 && r.Unlisted == 0 && len(r.UnauthenticBatches) == 0
}

func (r *Report) add(d Difference) {
	if len(r.Differences) < maxDifferences {
		r.Differences = append(r.Differences, d)
	} else {
		r.Unlisted++
	}
}

// VerifyIndex checks the per-citizen index against the log: every leaf of the log (every record of
// an authentic ACCESS batch, in tree order) has exactly one index entry, every index entry is
// authentic and equal to its leaf in bytes, leaf index, batch position and shard, and no entry's
// link skips an entry of its citizen. It names each
// difference. It checks the batches the indexer has acknowledged (so a running broker's last few
// batches may be left for the next check) and changes nothing. It reads the whole log and index and
// keeps 32 bytes per leaf in memory.
func (l *Log) VerifyIndex(ctx context.Context) (Report, error) {
	through, err := l.indexedThrough(ctx)
	if err != nil {
		return Report{}, err
	}
	rep, _, err := l.compareIndex(ctx, through)
	return rep, err
}

// Repair compares the index with the log as VerifyIndex does and fixes what differs: it deletes
// unauthentic, duplicate and altered entries and writes the missing ones. It runs in the indexer
// (indexing pauses meanwhile) and returns what it found before fixing.
func (l *Log) Repair(ctx context.Context) (Report, error) {
	if l.readOnly {
		return Report{}, ErrReadOnly
	}
	reply := make(chan repairResult, 1)
	select {
	case l.ix.repairReq <- reply:
	case <-ctx.Done():
		return Report{}, context.Cause(ctx)
	}
	select {
	case r := <-reply:
		return r.rep, r.err
	case <-ctx.Done():
		return Report{}, context.Cause(ctx)
	}
}

type repairResult struct {
	rep Report
	err error
}

// indexedThrough is the newest ACCESS sequence the index covers: the position marker.
func (l *Log) indexedThrough(ctx context.Context) (uint64, error) {
	mk, found, err := l.readMarker(ctx)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, nil
	}
	return mk.seq, nil
}

// expected is one leaf as the index should hold it.
type expected struct {
	hash   [16]byte // SHA-256 of the leaf, truncated
	seq    uint64
	idx    uint32
	shard  uint16
	seen   uint8
	usable bool
}

// fix is what repair changes.
type fix struct {
	remove  map[int][]uint64 // shard → index message sequences
	missing []uint64         // leaf indexes, ascending
}

// compareIndex compares the index with the log's batches up to through.
func (l *Log) compareIndex(ctx context.Context, through uint64) (Report, fix, error) {
	rep := Report{Through: through}
	fx := fix{remove: map[int][]uint64{}}
	var exp []expected
	if through > 0 {
		_, err := l.scan(ctx, AccessStream, 1, "", 64, func(seq uint64, m *nats.Msg) (bool, error) {
			if seq > through {
				return true, nil
			}
			leaves, err := OpenBatch(l.opts.Sealer, m.Data)
			if err != nil {
				rep.UnauthenticBatches = append(rep.UnauthenticBatches, seq)
				return seq >= through, nil
			}
			for i, leaf := range leaves {
				e := expected{seq: seq, idx: uint32(i)}
				sum := sha256.Sum256(leaf)
				copy(e.hash[:], sum[:])
				if p := recordString(leaf, 3); checkPseudonym(p) == nil {
					e.shard, e.usable = uint16(shardOf(l.opts.IndexShards, p)), true
				}
				exp = append(exp, e)
			}
			return seq >= through, nil
		})
		if err != nil {
			return rep, fx, fmt.Errorf("read the log: %w", err)
		}
	}
	rep.Leaves = uint64(len(exp))

	for shard := range l.opts.IndexShards {
		lastOn := map[string]uint64{} // subject → its newest entry so far
		_, err := l.scan(ctx, IndexStreamName(l.opts.IndexShards, shard), 1, "", 1024, func(iseq uint64, m *nats.Msg) (bool, error) {
			rep.Entries++
			d := Difference{Shard: shard, IndexSeq: iseq, AccessID: recordString(m.Data, 1)}
			subject := directSubject(m)
			before := lastOn[subject]
			lastOn[subject] = iseq
			p, err := l.openEntryMsg(subject, iseq, m.Header, m.Data)
			if err != nil {
				d.Kind = DiffUnauthentic
				if q, ok := parseEntryHeaders(m.Header); ok {
					d.LeafIndex, d.LogSeq = q.leaf, q.seq
				}
				rep.add(d)
				fx.remove[shard] = append(fx.remove[shard], iseq)
				return false, nil
			}
			d.LeafIndex, d.LogSeq = p.leaf, p.seq
			if p.seq > through {
				return false, nil // indexed after the check began
			}
			if p.leaf >= uint64(len(exp)) {
				d.Kind = DiffAltered
				rep.add(d)
				fx.remove[shard] = append(fx.remove[shard], iseq)
				return false, nil
			}
			if p.linked && p.prev < before {
				// A link to an entry deleted since is no skip: listings search below it.
				d.Kind = DiffLink
				rep.add(d)
				fx.remove[shard] = append(fx.remove[shard], iseq) // its leaf is then written again, unlinked
				return false, nil
			}
			e := &exp[p.leaf]
			sum := sha256.Sum256(m.Data)
			if e.seq != p.seq || e.idx != uint32(p.idx) || !e.usable || int(e.shard) != shard || !bytes.Equal(e.hash[:], sum[:16]) {
				d.Kind = DiffAltered
				rep.add(d)
				fx.remove[shard] = append(fx.remove[shard], iseq)
				return false, nil
			}
			e.seen++
			if e.seen > 1 {
				d.Kind = DiffDuplicate
				rep.add(d)
				fx.remove[shard] = append(fx.remove[shard], iseq)
				e.seen = 1
			}
			return false, nil
		})
		if err != nil {
			return rep, fx, fmt.Errorf("read index shard %d: %w", shard, err)
		}
	}

	var named []int // differences to name from the log
	for i := range exp {
		e := &exp[i]
		switch {
		case !e.usable:
			rep.add(Difference{Kind: DiffUnindexable, LeafIndex: uint64(i), LogSeq: e.seq, Shard: -1})
		case e.seen == 0:
			fx.missing = append(fx.missing, uint64(i))
			if len(rep.Differences) < maxDifferences {
				named = append(named, len(rep.Differences))
			}
			rep.add(Difference{Kind: DiffMissing, LeafIndex: uint64(i), LogSeq: e.seq, Shard: int(e.shard)})
		}
	}
	// Name missing leaves by their access id, from the log.
	for _, k := range named {
		d := &rep.Differences[k]
		if err := l.leafAt(ctx, d.LogSeq, int(exp[d.LeafIndex].idx), func(leaf []byte) { d.AccessID = recordString(leaf, 1) }); err != nil {
			return rep, fx, err
		}
	}
	slices.SortStableFunc(rep.Differences, func(a, b Difference) int {
		switch {
		case a.LeafIndex < b.LeafIndex:
			return -1
		case a.LeafIndex > b.LeafIndex:
			return 1
		}
		return 0
	})
	return rep, fx, nil
}

// leafAt calls fn with record idx of ACCESS message seq, if that message is authentic.
func (l *Log) leafAt(ctx context.Context, seq uint64, idx int, fn func(leaf []byte)) error {
	_, err := l.scan(ctx, AccessStream, seq, "", 1, func(s uint64, m *nats.Msg) (bool, error) {
		if s == seq {
			if leaves, err := OpenBatch(l.opts.Sealer, m.Data); err == nil && idx < len(leaves) {
				fn(leaves[idx])
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("read ACCESS message %d: %w", seq, err)
	}
	return nil
}

// repair runs in the indexer goroutine: it compares the index with every batch indexed so far and
// fixes the differences.
func (l *Log) repair(ctx context.Context) (Report, error) {
	if !l.ix.pos.known {
		if err := l.resume(ctx); err != nil {
			return Report{}, err
		}
	}
	// What repair deletes and writes moves the shards' last sequences and citizens' newest entries.
	defer l.ix.links.forget()
	start := time.Now()
	through := l.ix.pos.next - 1
	rep, fx, err := l.compareIndex(ctx, through)
	if err != nil {
		return rep, err
	}
	removed := 0
	for shard, seqs := range fx.remove {
		s, err := l.js.Stream(ctx, IndexStreamName(l.opts.IndexShards, shard))
		if err != nil {
			return rep, fmt.Errorf("%w: index shard %d: %w", ErrUnavailable, shard, err)
		}
		for _, seq := range seqs {
			if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return rep, fmt.Errorf("%w: delete index entry %d of shard %d: %w", ErrUnavailable, seq, shard, err)
			}
			removed++
		}
	}
	added, err := l.reindex(ctx, fx.missing)
	if err != nil {
		return rep, err
	}
	if removed > 0 || added > 0 || len(rep.UnauthenticBatches) > 0 {
		l.stats.repaired.Add(uint64(removed + added))
		l.log.Warn("repaired the access index against the log", "leaves", rep.Leaves, "added", added, "removed", removed,
			"unauthentic_batches", len(rep.UnauthenticBatches), "took", time.Since(start).Round(time.Millisecond))
	} else {
		l.log.Info("access index matches the log", "leaves", rep.Leaves, "took", time.Since(start).Round(time.Millisecond))
	}
	return rep, nil
}

// reindex writes the index entries of the given leaves (ascending), reading them from the log.
// They carry no message id: the duplicate window must not swallow an entry that was deleted.
func (l *Log) reindex(ctx context.Context, leaves []uint64) (int, error) {
	if len(leaves) == 0 {
		return 0, nil
	}
	var (
		next    int // index into leaves
		leaf    uint64
		added   int
		futures []jetstream.PubAckFuture
	)
	flush := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("%w: re-index: %w", ErrUnavailable, err)
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		futures = futures[:0]
		return nil
	}
	_, err := l.scan(ctx, AccessStream, 1, "", 64, func(seq uint64, m *nats.Msg) (bool, error) {
		recs, err := OpenBatch(l.opts.Sealer, m.Data)
		if err != nil {
			return false, nil // not leaves
		}
		first := leaf
		leaf += uint64(len(recs))
		for next < len(leaves) && leaves[next] < leaf {
			i := int(leaves[next] - first)
			next++
			pseudonym := recordString(recs[i], 3)
			p := entryPosition{seq: seq, idx: i, leaf: first + uint64(i), batchFirst: first, batchCount: len(recs)}
			msg, err := l.entryMsg(pseudonym, p, recs[i], "", nil)
			if err != nil {
				return true, err
			}
			f, err := l.pub.PublishMsgAsync(msg)
			if err != nil {
				return true, fmt.Errorf("%w: re-index leaf %d: %w", ErrUnavailable, p.leaf, err)
			}
			futures = append(futures, f)
			added++
			if len(futures) >= 1024 {
				if err := flush(); err != nil {
					return true, err
				}
			}
		}
		return next >= len(leaves), nil
	})
	if err != nil {
		return added, err
	}
	return added, flush()
}
