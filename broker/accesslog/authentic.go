package accesslog

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrUnauthenticBatch means an ACCESS message does not carry a valid MAC under the broker's sealing
// key: something other than a broker wrote it. Its records MUST NOT become leaves of the tree; the
// integrator halts on it and reports it.
var ErrUnauthenticBatch = errors.New("access batch is not authenticated by the broker")

// ErrUnauthenticEntry means an index entry does not carry a valid MAC under the broker's sealing key,
// or its MAC does not cover what it says (another citizen, another leaf). It is never listed.
var ErrUnauthenticEntry = errors.New("access index entry is not authenticated by the broker")

// BatchError names the ACCESS message (stream sequence) that could not be used, and why.
type BatchError struct {
	Seq uint64
	Err error
}

func (e *BatchError) Error() string { return fmt.Sprintf("ACCESS message %d: %v", e.Seq, e.Err) }

func (e *BatchError) Unwrap() error { return e.Err }

// Domain separation of the two MACs: a batch MAC can never pass as an entry MAC or the reverse.
const (
	batchMACDomain = "aperture/access-batch/v1\x00"
	entryMACDomain = "aperture/access-index-entry/v1\x00"
	// A linked entry's MAC also covers its link (see HeaderIndexPrev), under its own domain: a link
	// cannot be stripped to pass the entry off as unlinked, nor added to an unlinked one.
	linkedEntryMACDomain = "aperture/access-index-entry/v2\x00"
)

// batchMACField is the AccessBatch field holding the MAC (see audit.proto).
const batchMACField = 2

// batchAD is the associated data a batch's MAC covers: the domain and the SHA-256 of the encoded
// records. Hashing first keeps the sealer's copy of the associated data small for large batches.
func batchAD(records []byte) []byte {
	sum := sha256.Sum256(records)
	return append([]byte(batchMACDomain), sum[:]...)
}

// SealBatch returns the ACCESS message body of a batch of leaves: the AccessBatch encoding of the
// records followed by their MAC under s. Only the broker (and tests that play it) call this.
func SealBatch(s Sealer, leaves [][]byte) ([]byte, error) {
	size := 0
	for _, leaf := range leaves {
		size += protowire.SizeTag(1) + protowire.SizeBytes(len(leaf))
	}
	data := make([]byte, 0, size+64)
	for _, leaf := range leaves {
		data = protowire.AppendTag(data, 1, protowire.BytesType)
		data = protowire.AppendBytes(data, leaf)
	}
	return appendBatchMAC(s, data)
}

// appendBatchMAC appends the MAC field over the records encoded in data.
func appendBatchMAC(s Sealer, data []byte) ([]byte, error) {
	mac, err := s.Seal(nil, batchAD(data))
	if err != nil {
		return nil, fmt.Errorf("authenticate access batch: %w", err)
	}
	data = protowire.AppendTag(data, batchMACField, protowire.BytesType)
	return protowire.AppendBytes(data, mac), nil
}

// OpenBatch checks that data is an ACCESS message the broker wrote (records, then one MAC that
// verifies under s) and returns its leaves, which alias data. A message that is not in that shape
// or whose MAC does not verify gives an error wrapping ErrUnauthenticBatch; its records MUST be
// treated as absent.
func OpenBatch(s Sealer, data []byte) ([][]byte, error) {
	var leaves [][]byte
	b := data
	for len(b) > 0 {
		start := len(data) - len(b)
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return nil, fmt.Errorf("%w: not an access batch", ErrUnauthenticBatch)
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, fmt.Errorf("%w: not an access batch", ErrUnauthenticBatch)
		}
		b = b[n+m:]
		switch num {
		case 1:
			leaves = append(leaves, v)
		case batchMACField:
			if len(b) != 0 {
				return nil, fmt.Errorf("%w: fields after the MAC", ErrUnauthenticBatch)
			}
			if _, err := s.Open(v, batchAD(data[:start])); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnauthenticBatch, err)
			}
			return leaves, nil
		default:
			return nil, fmt.Errorf("%w: unexpected field %d", ErrUnauthenticBatch, num)
		}
	}
	return nil, fmt.Errorf("%w: no MAC", ErrUnauthenticBatch)
}

// entryPosition is where an index entry's record stands in the log and in the tree.
type entryPosition struct {
	seq        uint64 // ACCESS stream sequence of its batch
	idx        int    // position in the batch
	leaf       uint64 // leaf index in the tree
	batchFirst uint64 // leaf index of the batch's first record
	batchCount int    // records in the batch
	// linked says the entry names the citizen's previous entry in its shard: prev, the index
	// sequence of that entry, or 0 if there was none (see HeaderIndexPrev). self is the entry's own
	// index sequence, which a linked entry's MAC covers too: a copy of it stored elsewhere, whose
	// link would skip the entries in between, is not authentic.
	linked     bool
	prev, self uint64
}

// entryAD is what an index entry's MAC covers: the citizen whose subject it is on, every position
// header (the link too, if it has one), and the leaf bytes. Moving an entry to another citizen or
// leaf, or changing any header or byte, breaks it.
func entryAD(pseudonym string, p entryPosition, leaf []byte) []byte {
	return appendEntryAD(make([]byte, 0, len(linkedEntryMACDomain)+len(pseudonym)+1+7*8+len(leaf)), pseudonym, p, leaf)
}

// adBuffers holds the buffers sealEntry writes associated data into: the indexer seals one entry per
// record, and the AD (a whole leaf) is garbage as soon as the MAC is made.
var adBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func appendEntryAD(b []byte, pseudonym string, p entryPosition, leaf []byte) []byte {
	if p.linked {
		b = append(b, linkedEntryMACDomain...)
	} else {
		b = append(b, entryMACDomain...)
	}
	b = append(b, pseudonym...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, p.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(p.idx))
	b = binary.BigEndian.AppendUint64(b, p.leaf)
	b = binary.BigEndian.AppendUint64(b, p.batchFirst)
	b = binary.BigEndian.AppendUint64(b, uint64(p.batchCount))
	if p.linked {
		b = binary.BigEndian.AppendUint64(b, p.prev)
		b = binary.BigEndian.AppendUint64(b, p.self)
	}
	return append(b, leaf...)
}

func sealEntry(s Sealer, pseudonym string, p entryPosition, leaf []byte) (string, error) {
	bp := adBuffers.Get().(*[]byte)
	ad := appendEntryAD((*bp)[:0], pseudonym, p, leaf)
	mac, err := s.Seal(nil, ad) // Seal keeps nothing of ad
	if cap(ad) <= 64<<10 {
		*bp = ad[:0]
		adBuffers.Put(bp)
	}
	if err != nil {
		return "", fmt.Errorf("authenticate index entry: %w", err)
	}
	return base64.RawStdEncoding.EncodeToString(mac), nil
}

func openEntry(s Sealer, pseudonym string, p entryPosition, leaf []byte, mac string) error {
	raw, err := base64.RawStdEncoding.DecodeString(mac)
	if err != nil {
		return fmt.Errorf("%w: malformed MAC", ErrUnauthenticEntry)
	}
	if _, err := s.Open(raw, entryAD(pseudonym, p, leaf)); err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthenticEntry, err)
	}
	return nil
}
