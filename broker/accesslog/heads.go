package accesslog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Saved heads. To link an entry the indexer needs the citizen's newest entry. It keeps them in
// memory; one it does not know costs a lookup, which loads the block that entry is in (milliseconds
// when cold). After a restart that would be one cold block per citizen: hours of lookups at a
// country's scale. So the indexer saves its heads every IndexHeadsEvery, with each shard's last
// sequence and creation time, under the broker's MAC, in an object of HeadsBucket; an indexer that
// starts (or forgot after a failure) reads them back and then every entry the shards hold after the
// saved sequences, which makes them exact again whoever wrote meanwhile.
//
// Saved heads that do not verify, or of a shard deleted and created again since, are not used (and
// are reported): the indexer then looks citizens up as they come. A head is never trusted beyond
// what JetStream checks anyway: the shard's last sequence on every linked entry.
const (
	// HeadsBucket is the object store bucket of the saved heads, one object per index layout.
	HeadsBucket            = "ACCESS_INDEX_HEADS"
	DefaultIndexHeadsEvery = 5 * time.Minute
	headsDomain            = "aperture/access-index-heads/v1\x00"
	headsMagic             = "APH1"
	headerHeadsMAC         = "Aperture-Heads-Mac"
)

func headsObject(shards int) string { return fmt.Sprintf("heads-%d", shards) }

// headsAD is what the saved heads' MAC covers: the layout and the SHA-256 of the object.
func headsAD(shards int, data []byte) []byte {
	sum := sha256.Sum256(data)
	b := binary.BigEndian.AppendUint32([]byte(headsDomain), uint32(shards))
	return append(b, sum[:]...)
}

// encodeHeads lays the heads out by shard: for each shard it knows, its number, last sequence,
// creation time and heads (key, sequence).
func encodeHeads(k *linkState) []byte {
	byShard := map[int][]byte{}
	for key, h := range k.heads {
		b := byShard[h.shard()]
		b = append(b, key[:]...)
		byShard[h.shard()] = binary.AppendUvarint(b, h.seq())
	}
	out := append([]byte(headsMagic), make([]byte, 0, 16+len(k.heads)*20)...)
	out = binary.AppendUvarint(out, uint64(len(k.tails)))
	for shard, tail := range k.tails {
		out = binary.AppendUvarint(out, uint64(shard))
		out = binary.AppendUvarint(out, tail)
		out = binary.BigEndian.AppendUint64(out, uint64(k.created[shard]))
		out = binary.AppendUvarint(out, uint64(len(byShard[shard])))
		out = append(out, byShard[shard]...)
	}
	return out
}

// headsGroup is one shard's part of the saved heads.
type headsGroup struct {
	shard   int
	tail    uint64
	created int64
	heads   []byte // key, uvarint sequence; …
}

func decodeHeads(data []byte) ([]headsGroup, error) {
	bad := errors.New("saved heads are malformed")
	if !bytes.HasPrefix(data, []byte(headsMagic)) {
		return nil, bad
	}
	b := data[len(headsMagic):]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	n, ok := uvarint()
	if !ok || n > 256 {
		return nil, bad
	}
	groups := make([]headsGroup, 0, n)
	for range n {
		shard, ok1 := uvarint()
		tail, ok2 := uvarint()
		if !ok1 || !ok2 || len(b) < 8 {
			return nil, bad
		}
		created := int64(binary.BigEndian.Uint64(b))
		b = b[8:]
		size, ok := uvarint()
		if !ok || size > uint64(len(b)) {
			return nil, bad
		}
		groups = append(groups, headsGroup{shard: int(shard), tail: tail, created: created, heads: b[:size]})
		b = b[size:]
	}
	if len(b) != 0 {
		return nil, bad
	}
	return groups, nil
}

// loadHeads, once after the indexer forgot, reads the saved heads and then the shards' entries after
// them. Whatever fails leaves the indexer to look citizens up.
func (l *Log) loadHeads(ctx context.Context, k *linkState) {
	k.init()
	if k.loaded {
		return
	}
	k.loaded = true
	start := time.Now()
	groups, err := l.readHeads(ctx)
	if err != nil || groups == nil {
		if err != nil {
			l.log.Warn("saved index heads not used; the indexer looks citizens up as they come", "err", err)
		}
		return
	}
	read := 0
	for _, g := range groups {
		n, err := l.loadGroup(ctx, k, g)
		if err != nil {
			l.log.Warn("saved index heads of a shard not used", "shard", g.shard, "err", err)
			for key, h := range k.heads { // what was loaded of it
				if h.shard() == g.shard {
					delete(k.heads, key)
				}
			}
			delete(k.tails, g.shard)
			delete(k.created, g.shard)
			continue
		}
		read += n
	}
	if len(k.heads) > 0 {
		// They were just saved: the next save is due IndexHeadsEvery from now, not at the first group.
		k.savedAt = start
	}
	l.log.Info("index heads restored", "citizens", len(k.heads), "entries_read_after_them", read,
		"took", time.Since(start).Round(time.Millisecond))
}

// readHeads returns the saved heads of this layout, nil if there are none.
func (l *Log) readHeads(ctx context.Context) ([]headsGroup, error) {
	obs, err := l.js.ObjectStore(ctx, HeadsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: heads bucket: %w", ErrUnavailable, err)
	}
	res, err := obs.Get(ctx, headsObject(l.opts.IndexShards))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read saved heads: %w", ErrUnavailable, err)
	}
	defer res.Close()
	data, err := io.ReadAll(res)
	if err != nil {
		return nil, fmt.Errorf("%w: read saved heads: %w", ErrUnavailable, err)
	}
	info, err := res.Info()
	if err != nil {
		return nil, fmt.Errorf("%w: read saved heads: %w", ErrUnavailable, err)
	}
	mac, err := base64.RawStdEncoding.DecodeString(info.Headers.Get(headerHeadsMAC))
	if err == nil {
		_, err = l.opts.Sealer.Open(mac, headsAD(l.opts.IndexShards, data))
	}
	if err != nil {
		l.stats.unauthenticEntries.Add(1)
		l.log.Error("saved index heads are not authenticated by the broker; ignored")
		return nil, nil
	}
	return decodeHeads(data)
}

// loadGroup takes one shard's saved heads if the shard is the one they were saved from, then reads
// the shard's entries after them. It returns how many entries it read.
func (l *Log) loadGroup(ctx context.Context, k *linkState, g headsGroup) (int, error) {
	if g.shard >= l.opts.IndexShards {
		return 0, errors.New("no such shard")
	}
	name := IndexStreamName(l.opts.IndexShards, g.shard)
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("%w: index shard %d: %w", ErrUnavailable, g.shard, err)
	}
	info := s.CachedInfo()
	if info.Created.UnixNano() != g.created || info.State.LastSeq < g.tail {
		return 0, errors.New("the shard was created again since the heads were saved")
	}
	for b := g.heads; len(b) > 0; {
		if len(b) < len(headKey{}) {
			return 0, errors.New("saved heads are malformed")
		}
		key := headKey(b[:len(headKey{})])
		seq, n := binary.Uvarint(b[len(headKey{}):])
		if n <= 0 || seq > g.tail {
			return 0, errors.New("saved heads are malformed")
		}
		k.heads[key] = newHead(seq, g.shard)
		b = b[len(headKey{})+n:]
	}
	// Whatever the shard holds after the saved tail, whoever wrote it, is newer.
	tail, read := g.tail, 0
	_, err = l.scan(ctx, name, g.tail+1, "", 1024, func(seq uint64, m *nats.Msg) (bool, error) {
		subject := directSubject(m)
		k.heads[keyOf(subject[strings.LastIndexByte(subject, '.')+1:])] = newHead(seq, g.shard)
		tail, read = seq, read+1
		return false, nil
	})
	if err != nil {
		return read, err
	}
	if _, known := k.tails[g.shard]; !known {
		// A tail resume read with the shard's position stays: entries written after it must make
		// this indexer's entries refused (see shardPositions), even if their heads were just read.
		k.tails[g.shard], k.created[g.shard] = max(tail, info.State.LastSeq), g.created
	}
	return read, nil
}

// maybeSaveHeads saves the heads if the last save is IndexHeadsEvery ago and none is under way. It
// runs in the indexer right after a group was stored as its links assumed, so the heads it encodes
// are exact; the upload goes on in the background.
func (l *Log) maybeSaveHeads(k *linkState) {
	every := l.opts.IndexHeadsEvery
	if every < 0 || len(k.heads) == 0 || time.Since(k.savedAt) < every || !k.saving.CompareAndSwap(false, true) {
		return
	}
	k.savedAt = time.Now()
	data := encodeHeads(k)
	citizens := len(k.heads)
	l.ix.saves.Add(1)
	go func() {
		defer l.ix.saves.Done()
		defer k.saving.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), max(l.opts.PublishTimeout, time.Minute))
		defer cancel()
		l.saveHeads(ctx, data, citizens)
	}()
}

// saveHeadsOnStop saves the heads once the indexer has stopped, if they are exact and no other
// replica has indexed since, so that the indexer of the next start (a deploy's restart) has nothing
// to read after them. (Older heads would do no harm: whoever loads them reads what follows them.)
func (l *Log) saveHeadsOnStop(k *linkState) {
	if l.opts.IndexHeadsEvery < 0 || len(k.heads) == 0 || !k.clean || l.nc.Status() != nats.CONNECTED {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.PublishTimeout)
	defer cancel()
	if !l.linksHold(ctx, k) {
		return
	}
	k.clean = false // once
	l.saveHeads(ctx, encodeHeads(k), len(k.heads))
}

// saveHeads stores the encoded heads, and logs and counts the outcome.
func (l *Log) saveHeads(ctx context.Context, data []byte, citizens int) {
	start := time.Now()
	err := l.putHeads(ctx, data)
	l.metrics.headsSaved(err)
	if err != nil {
		l.log.Warn("saving the index heads failed; a restarted indexer reads the shards after the last save", "err", err)
		return
	}
	l.log.Info("index heads saved", "citizens", citizens, "bytes", len(data), "took", time.Since(start).Round(time.Millisecond))
}

func (l *Log) putHeads(ctx context.Context, data []byte) error {
	mac, err := l.opts.Sealer.Seal(nil, headsAD(l.opts.IndexShards, data))
	if err != nil {
		return fmt.Errorf("authenticate saved heads: %w", err)
	}
	obs, err := l.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      HeadsBucket,
		Description: "Aperture access index: each citizen's newest index entry, saved by the indexer; derived, rebuilt from the index",
		Storage:     jetstream.FileStorage,
		Replicas:    l.opts.Replicas,
	})
	if err != nil {
		return fmt.Errorf("%w: heads bucket: %w", ErrUnavailable, err)
	}
	meta := jetstream.ObjectMeta{Name: headsObject(l.opts.IndexShards), Headers: nats.Header{headerHeadsMAC: {base64.RawStdEncoding.EncodeToString(mac)}}}
	if _, err := obs.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("%w: save heads: %w", ErrUnavailable, err)
	}
	return nil
}
