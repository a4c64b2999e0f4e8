package accesslog

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// List page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Entry is one listed record bound to the log's Merkle tree.
type Entry struct {
	Record *auditv1.AccessRecord
	// Leaf is the record's exact log bytes: its Merkle leaf is SHA-256(0x00 || Leaf).
	Leaf []byte
	// LeafIndex is the leaf's index in the tree.
	LeafIndex uint64
}

// List returns one citizen's records, newest first: at most pageSize (default 100, at most 1000),
// and a token for the next (older) page, empty on the last page. See ListEntries.
func (l *Log) List(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]*auditv1.AccessRecord, string, error) {
	entries, next, err := l.ListEntries(ctx, pseudonym, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	recs := make([]*auditv1.AccessRecord, len(entries))
	for i, e := range entries {
		recs[i] = e.Record
	}
	return recs, next, nil
}

// ListEntries returns one citizen's records with their leaves, newest first: at most pageSize
// (default 100, at most 1000), and a token for the next (older) page, empty on the last page. An
// empty pageToken starts at the newest record. Pages are stable: records indexed while paging
// appear on a new first page only.
//
// The listing comes from the per-citizen index, which the indexer derives from the log in the
// background: it includes every record this broker made durable before the call (it waits for its
// own indexer, boundedly), and may lag records other replicas wrote by the indexer's delay
// (IndexLag). An index entry that does not carry the broker's MAC for this citizen and this leaf is
// never listed: it is skipped, logged at error level and counted.
//
// It reads only the citizen's entries in the citizen's index shard, and only as many as the page
// needs: it follows each entry's link to the one before (see links.go), and below an entry it
// cannot follow it searches the citizen's subject in the shard.
func (l *Log) ListEntries(ctx context.Context, pseudonym string, pageSize int, pageToken string) (_ []Entry, _ string, err error) {
	start := time.Now()
	defer func() { l.metrics.listed(pageToken != "", err, time.Since(start)) }()
	if err := checkPseudonym(pseudonym); err != nil {
		return nil, "", fmt.Errorf("list access records: %w", err)
	}
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	n := uint64(min(pageSize, MaxPageSize))
	var below uint64 // index sequence the page ends before
	if pageToken != "" {
		var err error
		if below, err = parsePageToken(pageToken); err != nil {
			return nil, "", err
		}
	} else {
		l.waitIndexed(ctx)
	}
	shard := shardOf(l.opts.IndexShards, pseudonym)
	subject := IndexSubject(l.opts.IndexShards, pseudonym)
	entries, next, err := l.list(ctx, shard, subject, pseudonym, n, below)
	if err != nil {
		return nil, "", fmt.Errorf("list access records: %w", err)
	}
	return entries, next, nil
}

// list returns up to n of the citizen's entries before index sequence below (0: from the newest),
// newest first, and the next page's token. It follows the entries' links; at an entry that has
// none, or whose link leads nowhere, it searches the shard below that entry (search).
func (l *Log) list(ctx context.Context, shard int, subject, pseudonym string, n, below uint64) ([]Entry, string, error) {
	stream := IndexStreamName(l.opts.IndexShards, shard)
	var m *nats.Msg
	if below == 0 {
		last, err := l.directLast(ctx, stream, subject)
		if err != nil || last == nil {
			return nil, "", err
		}
		m = last
	} else {
		// The previous page ended with the entry at below: its link leads to this page.
		at, err := l.directGet(ctx, stream, directRequest{Seq: below})
		if err != nil {
			return nil, "", err
		}
		prev, ok := l.linkOf(at, subject, below)
		switch {
		case !ok:
			return l.search(ctx, shard, subject, pseudonym, n, below)
		case prev == 0:
			return nil, "", nil
		}
		if m, err = l.directGet(ctx, stream, directRequest{Seq: prev}); err != nil {
			return nil, "", err
		}
		if m == nil || directSubject(m) != subject {
			return l.search(ctx, shard, subject, pseudonym, n, below)
		}
	}
	var out []Entry
	searchBelow := func(seq uint64) ([]Entry, string, error) {
		rest, next, err := l.search(ctx, shard, subject, pseudonym, n-uint64(len(out)), seq)
		return append(out, rest...), next, err
	}
	for {
		seq, err := msgSeq(m)
		if err != nil {
			return nil, "", err
		}
		e, p, ok := l.listedEntry(shard, subject, pseudonym, seq, m)
		if ok {
			out = append(out, e)
		}
		switch {
		case !ok || !p.linked || p.prev >= seq:
			return searchBelow(seq) // no link to follow
		case p.prev == 0:
			return out, "", nil
		case uint64(len(out)) == n:
			return out, encodePageToken(seq), nil
		}
		next, err := l.directGet(ctx, stream, directRequest{Seq: p.prev})
		if err != nil {
			return nil, "", err
		}
		if next == nil || directSubject(next) != subject {
			return searchBelow(seq) // the entry linked to was deleted (repair removes entries not the log's)
		}
		m = next
	}
}

// listedEntry checks and decodes an index entry read at seq for the citizen's listing: ok only if
// it is the broker's and the citizen's record. An entry that is not is logged and counted.
func (l *Log) listedEntry(shard int, subject, pseudonym string, seq uint64, m *nats.Msg) (Entry, entryPosition, bool) {
	p, err := l.openEntryMsg(subject, seq, m.Header, m.Data)
	if err != nil {
		l.unauthenticEntry(shard, seq, err)
		return Entry{}, p, false
	}
	rec := new(auditv1.AccessRecord)
	if err := proto.Unmarshal(m.Data, rec); err != nil || rec.GetCitizenPseudonym() != pseudonym {
		// Authentic yet not this citizen's record: only a broker bug could write it.
		l.log.Error("authentic access index entry does not decode as the citizen's record; not listed", "shard", shard, "index_seq", seq)
		return Entry{}, p, false
	}
	return Entry{Record: rec, Leaf: m.Data, LeafIndex: p.leaf}, p, true
}

// search lists as list does, by asking JetStream for the citizen's entries on the subject before
// below (> 0): counts (which JetStream keeps per subject) locate the page. Past nats-server's summary
// expiry it loads every block between two entries, so list uses it only where links end.
func (l *Log) search(ctx context.Context, shard int, subject, pseudonym string, n, below uint64) ([]Entry, string, error) {
	l.metrics.searched()
	stream := IndexStreamName(l.opts.IndexShards, shard)
	total, err := l.countFrom(ctx, stream, subject, 1)
	if err != nil {
		return nil, "", err
	}
	after, err := l.countFrom(ctx, stream, subject, below)
	if err != nil {
		return nil, "", err
	}
	if total <= after {
		return nil, "", nil
	}
	if n == 0 {
		return nil, encodePageToken(below), nil // the page is full, and there is more
	}
	avail := total - after // entries before below

	// Find from, as late as possible, with at least n entries in [from, below): widen a window
	// back from below, doubling it, so about n to 2n entries are read whatever the citizen's
	// share of the shard.
	from, k := uint64(1), avail
	if avail > n {
		for w := 4 * n; ; w *= 2 {
			if w >= below-1 {
				break
			}
			c, err := l.countFrom(ctx, stream, subject, below-w)
			if err != nil {
				return nil, "", err
			}
			if c > after && c-after >= n {
				from, k = below-w, c-after
				break
			}
		}
	}

	// Keep the newest n of the entries read, in a ring.
	type entry struct {
		seq uint64
		msg *nats.Msg
	}
	ring := make([]entry, n)
	var read uint64
	_, err = l.scan(ctx, stream, from, subject, int(min(k, 4096)), func(seq uint64, m *nats.Msg) (bool, error) {
		if seq >= below {
			return true, nil
		}
		ring[read%n] = entry{seq, m}
		read++
		return false, nil
	})
	if err != nil {
		return nil, "", err
	}
	got := min(read, n)
	out := make([]Entry, 0, got)
	var oldest uint64
	for i := uint64(1); i <= got; i++ {
		e := ring[(read-i)%n]
		oldest = e.seq
		if entry, _, ok := l.listedEntry(shard, subject, pseudonym, e.seq, e.msg); ok {
			out = append(out, entry)
		}
	}
	next := ""
	if read > n || (from > 1 && avail > k) {
		next = encodePageToken(oldest)
	}
	return out, next, nil
}

// Records calls fn for every record of the log from ACCESS sequence fromSeq (1 is the first) up
// to the last batch present when it is called, in log order: (sequence, index in batch). leaf is the
// record's exact log bytes, its Merkle leaf. An error from fn stops the iteration and is returned.
//
// Every batch is authenticated before any of its records is passed on: at a batch without a valid
// broker MAC, Records stops and returns a *BatchError naming it, wrapping ErrUnauthenticBatch. The
// records of such a batch are never leaves; leaves are numbered over authentic batches only.
func (l *Log) Records(ctx context.Context, fromSeq uint64, fn func(seq uint64, index int, leaf []byte) error) error {
	info, err := l.access.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: read log state: %w", ErrUnavailable, err)
	}
	last := info.State.LastSeq
	fromSeq = max(fromSeq, 1)
	if fromSeq > last {
		return nil
	}
	_, err = l.scan(ctx, AccessStream, fromSeq, "", 64, func(seq uint64, m *nats.Msg) (bool, error) {
		if seq > last {
			return true, nil
		}
		leaves, err := OpenBatch(l.opts.Sealer, m.Data)
		if err != nil {
			return true, &BatchError{Seq: seq, Err: err}
		}
		for i, leaf := range leaves {
			if err := fn(seq, i, leaf); err != nil {
				return true, err
			}
		}
		return seq >= last, nil
	})
	return err
}

func encodePageToken(below uint64) string {
	return base64.RawURLEncoding.EncodeToString(binary.AppendUvarint([]byte{1}, below))
}

func parsePageToken(tok string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != 1 {
		return 0, ErrInvalidPageToken
	}
	v, n := binary.Uvarint(b[1:])
	if n != len(b)-1 || v == 0 {
		return 0, ErrInvalidPageToken
	}
	return v, nil
}

// directRequest is a JetStream direct get (ADR-31), batched.
type directRequest struct {
	Seq      uint64 `json:"seq,omitempty"`
	LastFor  string `json:"last_by_subj,omitempty"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// directMaxBytes bounds one direct get response.
const directMaxBytes = 4 << 20

// scan calls fn for the messages of stream from seq on, in sequence order (only those on subject,
// if set), fetching chunk messages per request, until fn stops it or the stream ends. It reports
// whether it reached the end.
func (l *Log) scan(ctx context.Context, stream string, seq uint64, subject string, chunk int, fn func(seq uint64, m *nats.Msg) (stop bool, err error)) (bool, error) {
	seq = max(seq, 1)
	for {
		var (
			stopped bool
			fnErr   error
		)
		last, pending, err := l.directBatch(ctx, stream, directRequest{Seq: seq, NextFor: subject, Batch: chunk, MaxBytes: directMaxBytes},
			func(s uint64, m *nats.Msg) bool {
				stopped, fnErr = fn(s, m)
				return stopped || fnErr != nil
			})
		switch {
		case fnErr != nil:
			return false, fnErr
		case err != nil:
			return false, err
		case stopped:
			return false, nil
		case last == 0 || pending == 0:
			return true, nil
		}
		seq = last + 1
	}
}

// directLast returns the newest message on subject in stream, or nil if there is none.
func (l *Log) directLast(ctx context.Context, stream, subject string) (*nats.Msg, error) {
	return l.directGet(ctx, stream, directRequest{LastFor: subject})
}

// directGet returns the one message req asks for (by sequence, or the newest on a subject), or nil
// if there is none.
func (l *Log) directGet(ctx context.Context, stream string, req directRequest) (*nats.Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("direct get %s: %w", stream, err)
	}
	m, err := l.nc.RequestWithContext(ctx, l.api+"DIRECT.GET."+stream, body)
	if err != nil {
		return nil, fmt.Errorf("%w: direct get %s: %w", ErrUnavailable, stream, err)
	}
	if len(m.Data) == 0 {
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404":
			return nil, nil
		default:
			return nil, fmt.Errorf("%w: direct get %s: status %s %s", ErrUnavailable, stream, status, m.Header.Get("Description"))
		}
	}
	return m, nil
}

// countFrom returns how many messages on subject stream holds from sequence seq on. JetStream
// counts them from its per-subject state without reading them.
func (l *Log) countFrom(ctx context.Context, stream, subject string, seq uint64) (uint64, error) {
	var found bool
	_, pending, err := l.directBatch(ctx, stream, directRequest{Seq: seq, NextFor: subject, Batch: 1}, func(uint64, *nats.Msg) bool {
		found = true
		return false
	})
	if err != nil || !found {
		return 0, err
	}
	return pending + 1, nil
}

// serverHeader is a header a direct get response carries from the server. The server appends it
// after the stored message's own headers, which a writer may have filled with the same names: the
// last value is the server's.
func serverHeader(m *nats.Msg, name string) string {
	v := m.Header.Values(name)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func msgSeq(m *nats.Msg) (uint64, error) {
	seq, err := strconv.ParseUint(serverHeader(m, "Nats-Sequence"), 10, 64)
	if err != nil {
		return 0, errors.New("direct get response without sequence")
	}
	return seq, nil
}

// directBatch sends one batched direct get and calls fn for each message until fn returns true. It
// returns the sequence of the last message received (0 if none) and how many matching messages the
// server reported after it.
func (l *Log) directBatch(ctx context.Context, stream string, req directRequest, fn func(seq uint64, m *nats.Msg) bool) (last, pending uint64, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, 0, fmt.Errorf("direct get %s: %w", stream, err)
	}
	reply, msgs, done := l.replies.open(req.Batch)
	defer done()
	if err := l.nc.PublishRequest(l.api+"DIRECT.GET."+stream, reply, body); err != nil {
		return 0, 0, fmt.Errorf("%w: direct get %s: %w", ErrUnavailable, stream, err)
	}
	for {
		var m *nats.Msg
		select {
		case m = <-msgs:
		case <-ctx.Done():
			return last, 0, fmt.Errorf("%w: direct get %s: %w", ErrUnavailable, stream, context.Cause(ctx))
		}
		if len(m.Data) == 0 {
			if status := m.Header.Get("Status"); status != "" {
				switch status {
				case "204": // end of batch
					pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
					return last, pending, nil
				case "404": // nothing (more) from seq on
					return last, 0, nil
				case "503":
					return last, 0, fmt.Errorf("%w: direct get %s: no responders", ErrUnavailable, stream)
				default:
					return last, 0, fmt.Errorf("%w: direct get %s: status %s %s", ErrUnavailable, stream, status, m.Header.Get("Description"))
				}
			}
		}
		seq, err := msgSeq(m)
		if err != nil {
			return last, 0, fmt.Errorf("direct get %s: %w", stream, err)
		}
		last = seq
		if fn(seq, m) {
			return last, 1, nil
		}
	}
}
