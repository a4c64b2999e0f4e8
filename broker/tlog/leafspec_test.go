package tlog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// TestLeafEncodingSpec follows the leaf specification in audit.proto (AccessRecord) as a verifier in
// another language would: raw ACCESS messages, a hand-written reader for AccessBatch, leaf and node
// hashes with crypto/sha256 alone, the checkpoint body read by hand. The root must be the signed one.
func TestLeafEncodingSpec(t *testing.T) {
	e := newEnv(t)
	e.integrator(t, "a")
	e.append(t, 300)
	cp := e.waitCheckpoint(t, 300)

	// The signed checkpoint: verify the signature, then read "<origin>\n<size>\n<base64 root>\n".
	v, err := note.NewVerifier(e.vkey(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp.Note, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		t.Fatal(err)
	}

	// The leaves: AccessBatch.records (field 1, wire type 2) of every ACCESS message, in order.
	s, err := e.js.Stream(ctx(t), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var leafHashes [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && uint64(len(leafHashes)) < size; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		leaves, err := batchLeaves(m.Data)
		if err != nil {
			t.Fatalf("ACCESS message %d: %v", seq, err)
		}
		for _, leaf := range leaves {
			checkDeterministic(t, leaf)
			h := sha256.Sum256(append([]byte{0x00}, leaf...))
			leafHashes = append(leafHashes, h[:])
		}
	}
	if got := mth(leafHashes[:size]); !bytes.Equal(got, root) {
		t.Fatalf("root from the spec %x, signed root %x", got, root)
	}
	// And one leaf hash per the spec equals the stored level-0 hash the API and tiles serve.
	stored, err := e.tree.LeafHash(ctx(t), 123)
	if err != nil || !bytes.Equal(stored, leafHashes[123]) {
		t.Fatalf("leaf 123: stored %x, spec %x (%v)", stored, leafHashes[123], err)
	}
}

// batchLeaves reads the length-delimited field 1 of an AccessBatch, skipping any other field.
func batchLeaves(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		key, n := uvarint(b)
		if n == 0 {
			return nil, errors.New("bad tag")
		}
		b = b[n:]
		field, wire := key>>3, key&7
		switch wire {
		case 0:
			_, n = uvarint(b)
			if n == 0 {
				return nil, errors.New("bad varint")
			}
			b = b[n:]
		case 2:
			l, n := uvarint(b)
			if n == 0 || uint64(len(b)-n) < l {
				return nil, errors.New("bad length")
			}
			if field == 1 {
				out = append(out, b[n:n+int(l)])
			}
			b = b[n+int(l):]
		default:
			return nil, errors.New("unexpected wire type")
		}
	}
	return out, nil
}

func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i := 0; i < len(b) && i < 10; i++ {
		x |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return x, i + 1
		}
	}
	return 0, 0
}

// mth is the RFC 6962 Merkle tree hash of leaf hashes.
func mth(hs [][]byte) []byte {
	switch len(hs) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return hs[0]
	}
	k := 1
	for k*2 < len(hs) {
		k *= 2
	}
	h := sha256.Sum256(append(append([]byte{0x01}, mth(hs[:k])...), mth(hs[k:])...))
	return h[:]
}

// checkDeterministic checks the spec's claims about the leaf bytes: they are the deterministic
// encoding of the record they decode to, with fields in ascending field-number order.
func checkDeterministic(t *testing.T, leaf []byte) {
	t.Helper()
	var r auditv1.AccessRecord
	if err := proto.Unmarshal(leaf, &r); err != nil {
		t.Fatal(err)
	}
	again, err := proto.MarshalOptions{Deterministic: true}.Marshal(&r)
	if err != nil || !bytes.Equal(again, leaf) {
		t.Fatalf("leaf is not the deterministic encoding of its record")
	}
	last := uint64(0)
	for b := leaf; len(b) > 0; {
		key, n := uvarint(b)
		b = b[n:]
		if key>>3 < last {
			t.Fatalf("field %d after field %d", key>>3, last)
		}
		last = key >> 3
		switch key & 7 {
		case 0:
			_, n = uvarint(b)
			b = b[n:]
		case 2:
			l, n := uvarint(b)
			b = b[n+int(l):]
		default:
			t.Fatalf("unexpected wire type %d", key&7)
		}
	}
}
