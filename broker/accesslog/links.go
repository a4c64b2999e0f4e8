package accesslog

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Links. Each index entry the indexer writes names the citizen's previous entry in its shard
// (HeaderIndexPrev), so a listing reads a citizen's entries one by one, newest first, instead of
// asking JetStream for the next entry on the citizen's subject: once nats-server has dropped a
// block's subject summary (two minutes after its last use) that question loads every block between
// two of the citizen's entries, and in a country's log that is thousands of blocks per page.
//
// A wrong link would hide the entries it skips from their citizen, so JetStream checks every link
// when it stores the entry:
//
//   - Every linked entry carries Nats-Expected-Last-Sequence: the shard's last sequence as the
//     indexer knows it. So an entry is stored only if nothing but this indexer's own entries was
//     written to the shard since the indexer learned the shard's last sequence, and every citizen's
//     newest entry is the one the indexer wrote or looked up.
//   - A citizen the indexer has not written since then is looked up (the newest entry on the
//     citizen's subject, from the stream leader), and that entry's link also carries
//     Nats-Expected-Last-Subject-Sequence, which the server checks against the subject itself.
//
// Any refused entry fails the group; the indexer then forgets what it knew (resume) and learns it
// again, from its saved heads (heads.go) and what the shards hold after them. An entry deleted
// later (by repair) leaves a link to nothing, and an entry written without a link (by repair, or by
// an earlier version) ends the links: at either, the listing searches the shard below it as it did
// before links, which is slower but complete.

// maxLinkHeads bounds how many citizens' newest entries the indexer keeps (about 40 bytes each):
// enough for every citizen of a country of Denmark's size. Past it, it forgets an eighth, and each
// of those costs a lookup when the citizen is next written.
const maxLinkHeads = 1 << 23

// lookupConcurrency is how many lookups the indexer has in flight when a group holds citizens it
// does not know.
const lookupConcurrency = 32

// linkState is what the indexer knows to link the entries it writes. It belongs to the indexer
// goroutine, but for the saving of heads (heads.go).
type linkState struct {
	// tails is each shard's last sequence (after the entries published so far), if known, and
	// created when its stream was created (a stream deleted and created again starts over).
	tails   map[int]uint64
	created map[int]int64
	// heads is each citizen's newest entry in its shard as far as the indexer knows it: written by
	// it, or read from the shards after its saved heads. looked holds the newest entries of citizens
	// it looked up and has not written yet, which JetStream must check when it stores the
	// citizen's next entry.
	heads  map[headKey]head
	looked map[string]uint64
	// loaded says the saved heads were read since the indexer last forgot.
	loaded bool
	// clean says the last group was stored as its links assumed: heads and tails are exact.
	clean bool
	// savedAt is when heads were last saved; saving is set while a save is under way.
	savedAt time.Time
	saving  atomic.Bool
}

// headKey stands for a pseudonym in heads: 128 bits of its SHA-256. A map without pointers is not
// scanned by the garbage collector, and takes ~40 bytes a citizen instead of ~100. Two pseudonyms
// with one key would cost only time: the entry linked across would be on another subject, where a
// listing stops following links and searches.
type headKey [16]byte

func keyOf(pseudonym string) headKey {
	sum := sha256.Sum256([]byte(pseudonym))
	return headKey(sum[:16])
}

// head is the index sequence of a citizen's newest entry (low 56 bits) and its shard (high 8).
type head uint64

func newHead(seq uint64, shard int) head { return head(seq | uint64(shard)<<56) }
func (h head) seq() uint64               { return uint64(h) & (1<<56 - 1) }
func (h head) shard() int                { return int(uint64(h) >> 56) }

func (k *linkState) init() {
	if k.tails == nil {
		k.tails, k.created, k.heads, k.looked = map[int]uint64{}, map[int]int64{}, map[headKey]head{}, map[string]uint64{}
	}
}

// forget drops everything: after a failure, a resume or a repair, another writer may have written.
func (k *linkState) forget() {
	clear(k.tails)
	clear(k.created)
	clear(k.heads)
	clear(k.looked)
	k.loaded, k.clean = false, false
}

// entryLink says how to link an entry: prev, the link; expect, the shard's last sequence the
// entry's store must find; checkSubject, that the server must also find prev as the subject's last
// (a looked-up head); predicted, the sequence the entry will have.
type entryLink struct {
	prev, expect, predicted uint64
	checkSubject            bool
}

// link returns the link of the next entry the indexer publishes on subject in shard, and records
// the entry as the citizen's newest and the shard's last.
func (l *Log) link(ctx context.Context, k *linkState, shard int, pseudonym, subject string) (entryLink, error) {
	l.loadHeads(ctx, k)
	stream := IndexStreamName(l.opts.IndexShards, shard)
	tail, ok := k.tails[shard]
	if !ok {
		s, err := l.js.Stream(ctx, stream)
		if err != nil {
			return entryLink{}, fmt.Errorf("%w: index shard %d: %w", ErrUnavailable, shard, err)
		}
		tail, k.created[shard] = s.CachedInfo().State.LastSeq, s.CachedInfo().Created.UnixNano()
	}
	key := keyOf(pseudonym)
	h, known := k.heads[key]
	prev := h.seq()
	if !known {
		var looked bool
		if prev, looked = k.looked[pseudonym]; looked {
			delete(k.looked, pseudonym)
		} else {
			var err error
			if prev, err = l.lastSeqOn(ctx, stream, subject); err != nil {
				return entryLink{}, err
			}
		}
		if len(k.heads) >= maxLinkHeads {
			n := maxLinkHeads / 8
			for p := range k.heads { // map order: an arbitrary eighth
				delete(k.heads, p)
				if n--; n == 0 {
					break
				}
			}
		}
	}
	k.tails[shard] = tail + 1
	k.heads[key] = newHead(tail+1, shard)
	return entryLink{prev: prev, expect: tail, predicted: tail + 1, checkSubject: !known}, nil
}

// linksHold says what the indexer knows still describes the shards: its last group was stored as
// its links assumed, and no shard it knows was written, or deleted and created again, since.
func (l *Log) linksHold(ctx context.Context, k *linkState) bool {
	if !k.clean {
		return false
	}
	for shard, tail := range k.tails {
		s, err := l.js.Stream(ctx, IndexStreamName(l.opts.IndexShards, shard))
		if err != nil {
			return false
		}
		info := s.CachedInfo()
		if info.State.LastSeq != tail || info.Created.UnixNano() != k.created[shard] {
			return false
		}
	}
	return true
}

// prefetch looks up, concurrently, the newest entry of each citizen in the group the indexer does
// not know, before the group publishes anything: linking then waits for no lookup, and a lookup
// that fails fails the group before any of its entries is written. The order does not matter:
// JetStream checks a looked-up link against the subject when it stores the entry.
func (l *Log) prefetch(ctx context.Context, k *linkState, g *group) error {
	l.loadHeads(ctx, k)
	need := map[string]int{} // pseudonym → shard
	for _, b := range g.batches {
		for _, leaf := range b.leaves {
			p := recordString(leaf, 3)
			if _, ok := k.heads[keyOf(p)]; ok || checkPseudonym(p) != nil {
				continue
			}
			if _, ok := k.looked[p]; !ok {
				need[p] = shardOf(l.opts.IndexShards, p)
			}
		}
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		sem  = make(chan struct{}, lookupConcurrency)
	)
	for p, shard := range need {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			seq, err := l.lastSeqOn(ctx, IndexStreamName(l.opts.IndexShards, shard), indexShardPrefix(l.opts.IndexShards, shard)+p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			k.looked[p] = seq
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// lastSeqOn returns the sequence of the newest message on subject in stream (0 if none), from the
// stream leader: a direct get may be answered by a replica that lags.
func (l *Log) lastSeqOn(ctx context.Context, stream, subject string) (uint64, error) {
	l.stats.indexLookups.Add(1)
	m, err := l.leaderLast(ctx, stream, subject)
	if err != nil || m == nil {
		return 0, err
	}
	return m.Sequence, nil
}

// leaderLast returns the newest message on subject in stream (nil if none) as the stream leader
// holds it, which includes every message JetStream has acknowledged.
func (l *Log) leaderLast(ctx context.Context, stream, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(directRequest{LastFor: subject})
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", stream, err)
	}
	m, err := l.nc.RequestWithContext(ctx, l.api+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("%w: look up the newest entry in %s: %w", ErrUnavailable, stream, err)
	}
	var resp struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Hdrs    []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("%w: look up the newest entry in %s: %w", ErrUnavailable, stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("%w: look up the newest entry in %s: %s (%d)", ErrUnavailable, stream, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil || resp.Message.Seq == 0:
		return nil, fmt.Errorf("%w: look up the newest entry in %s: empty answer", ErrUnavailable, stream)
	}
	msg := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Seq, Data: resp.Message.Data}
	if len(resp.Message.Hdrs) > 0 {
		if msg.Header, err = nats.DecodeHeadersMsg(resp.Message.Hdrs); err != nil {
			return nil, fmt.Errorf("%w: newest entry in %s: headers: %w", ErrUnavailable, stream, err)
		}
	}
	return msg, nil
}

// linkOf returns the link of the entry m, read at seq on subject: ok only if it is on subject, the
// broker's, linked, and links to an earlier sequence.
func (l *Log) linkOf(m *nats.Msg, subject string, seq uint64) (prev uint64, ok bool) {
	if m == nil || directSubject(m) != subject {
		return 0, false
	}
	p, err := l.openEntryMsg(subject, seq, m.Header, m.Data)
	if err != nil || !p.linked || p.prev >= seq {
		return 0, false
	}
	return p.prev, true
}
