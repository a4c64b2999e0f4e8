package tlogweb_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/tlog/tlogweb"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

const origin = "test.aperture/public-log"

// logServer is a log on a real NATS server, integrated and signed, served over real HTTP.
type logServer struct {
	url    string
	vkey   string
	tree   *tlog.Tree
	log    *accesslog.Log
	leaves [][]byte // the records in log order, as a citizen or auditor gets them over the APIs
}

func startLog(t testing.TB, n int) *logServer {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t)
	l, err := accesslog.Open(ctx, js, accesslog.Options{IndexShards: 1, Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	keyDir := t.TempDir()
	signer, err := tlog.OpenLocalSigner(keyDir, origin)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := tlog.Open(ctx, js, signer.Verifier(), tlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := tlog.StartIntegrator(ctx, tree, l, signer, tlog.IntegratorOptions{Interval: 20 * time.Millisecond, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	s := &logServer{tree: tree, log: l}
	s.appendRecords(t, 0, n)
	s.wait(t, uint64(n))
	vk, err := os.ReadFile(filepath.Join(keyDir, tlog.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	s.vkey = strings.TrimSpace(string(vk))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/log/", tlogweb.Handler(tlogweb.TreeCheckpoints{Tree: tree}, tree, tlogweb.Options{CheckpointTTL: time.Millisecond}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.url = "http://" + lis.Addr().String() + "/log"
	return s
}

func (s *logServer) appendRecords(t testing.TB, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r := &auditv1.AccessRecord{
			Id: fmt.Sprintf("acc_web%06d", i), Time: timestamppb.New(time.Unix(1_700_000_000+int64(i), 0)),
			CitizenPseudonym: fmt.Sprintf("%032x", i%5), Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
			Purpose: "p", Decision: auditv1.Decision_DECISION_RELEASED,
		}
		if err := s.log.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	s.leaves = s.leaves[:0]
	err := s.log.Records(context.Background(), 1, func(_ uint64, _ int, leaf []byte) error {
		s.leaves = append(s.leaves, append([]byte(nil), leaf...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (s *logServer) wait(t testing.TB, size uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cp, err := s.tree.LatestCheckpoint(context.Background())
		if err == nil && cp.Size >= size {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size %d: %v", size, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- The third-party client: net/http, transparency-dev/formats, transparency-dev/merkle and the
// note package only. Nothing of Aperture.

type client struct {
	base string
	v    note.Verifier
}

func (c client) get(path string) ([]byte, http.Header, error) {
	resp, err := http.Get(c.base + "/" + path)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.Header, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, resp.Header, nil
}

func (c client) checkpoint() (*log.Checkpoint, error) {
	b, _, err := c.get("checkpoint")
	if err != nil {
		return nil, err
	}
	cp, _, _, err := log.ParseCheckpoint(b, c.v.Name(), c.v)
	return cp, err
}

// tilePath is the C2SP tlog-tiles path of tile (level, index), width w of 256.
func tilePath(level, index, w uint64) string {
	n := fmt.Sprintf("%03d", index%1000)
	for index >= 1000 {
		index /= 1000
		n = fmt.Sprintf("x%03d/%s", index%1000, n)
	}
	p := fmt.Sprintf("tile/%d/%s", level, n)
	if w < 256 {
		p += fmt.Sprintf(".p/%d", w)
	}
	return p
}

// node returns the hash of a node of the tree of size from the tiles, folding the hashes below it
// when its level is not a multiple of 8.
func (c client) node(size uint64, id compact.NodeID) ([]byte, error) {
	tl, sub := uint64(id.Level/8), uint64(id.Level%8)
	first := id.Index << sub
	tileIndex := first / 256
	w := min(256, (size>>(8*tl))-tileIndex*256)
	tile, _, err := c.get(tilePath(tl, tileIndex, w))
	if err != nil {
		return nil, err
	}
	if uint64(len(tile)) != w*32 {
		return nil, fmt.Errorf("tile %d/%d has %d bytes, want %d", tl, tileIndex, len(tile), w*32)
	}
	off := first % 256
	r := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for i := range uint64(1) << sub {
		if err := r.Append(tile[(off+i)*32:(off+i+1)*32], nil); err != nil {
			return nil, err
		}
	}
	return r.GetRootHash(nil)
}

func (c client) fetch(size uint64, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := c.node(size, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

func (c client) verifyInclusion(cp *log.Checkpoint, index uint64, leaf []byte) error {
	nodes, err := proof.Inclusion(index, cp.Size)
	if err != nil {
		return err
	}
	p, err := c.fetch(cp.Size, nodes)
	if err != nil {
		return err
	}
	return proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, rfc6962.DefaultHasher.HashLeaf(leaf), p, cp.Hash)
}

func (c client) verifyConsistency(old, cur *log.Checkpoint) error {
	nodes, err := proof.Consistency(old.Size, cur.Size)
	if err != nil {
		return err
	}
	p, err := c.fetch(cur.Size, nodes)
	if err != nil {
		return err
	}
	return proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cur.Size, p, old.Hash, cur.Hash)
}

// --- end of the client.

// TestPublicEndpointThirdParty: a client written only against transparency-dev packages and
// net/http follows the log: it verifies the checkpoint with the published key, inclusion proofs of
// records it got elsewhere and a consistency proof between two checkpoints, all assembled from the
// public tiles.
func TestPublicEndpointThirdParty(t *testing.T) {
	s := startLog(t, 600)
	v, err := note.NewVerifier(s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	c := client{base: s.url, v: v}
	first, err := c.checkpoint()
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if first.Size != 600 {
		t.Fatalf("checkpoint size %d, want 600", first.Size)
	}
	for _, i := range []uint64{0, 1, 255, 256, 511, 512, 599} {
		if err := c.verifyInclusion(first, i, s.leaves[i]); err != nil {
			t.Fatalf("inclusion of leaf %d: %v", i, err)
		}
	}
	if err := c.verifyInclusion(first, 7, []byte("not the record")); err == nil {
		t.Fatal("inclusion verified for a record that is not in the log")
	}

	s.appendRecords(t, 600, 100)
	s.wait(t, 700)
	second, err := c.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if second.Size != 700 {
		t.Fatalf("second checkpoint size %d", second.Size)
	}
	if err := c.verifyConsistency(first, second); err != nil {
		t.Fatalf("consistency %d -> %d: %v", first.Size, second.Size, err)
	}
	if err := c.verifyInclusion(second, 650, s.leaves[650]); err != nil {
		t.Fatalf("inclusion of a new leaf: %v", err)
	}
}

// TestPublicEndpointHTTP checks paths, status codes and caching headers.
func TestPublicEndpointHTTP(t *testing.T) {
	s := startLog(t, 300)
	tests := []struct {
		path, cache string
		status      int
		size        int
	}{
		{"checkpoint", "no-cache", 200, -1},
		{"tile/0/000", "public, max-age=31536000, immutable", 200, 256 * 32},
		{"tile/0/001.p/44", "public, max-age=60", 200, 44 * 32},
		{"tile/0/001.p/10", "public, max-age=60", 200, 10 * 32}, // an older tree's partial tile
		{"tile/1/000.p/1", "public, max-age=60", 200, 32},
		{"tile/0/001", "", 404, -1},      // not full in the signed tree
		{"tile/0/001.p/45", "", 404, -1}, // beyond the signed tree
		{"tile/0/002.p/1", "", 404, -1},
		{"tile/0/0", "", 404, -1}, // not canonical
		{"tile/0/x000/000", "", 404, -1},
		{"tile/entries/000", "", 404, -1}, // leaf contents are not public
		{"tile/data/000", "", 404, -1},
		{"tile/0/000.p/256", "", 404, -1},
		{"nothing", "", 404, -1},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(s.url + "/" + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status != 200 {
				return
			}
			if got := resp.Header.Get("Cache-Control"); got != tc.cache {
				t.Fatalf("Cache-Control %q, want %q", got, tc.cache)
			}
			if tc.size >= 0 && len(b) != tc.size {
				t.Fatalf("%d bytes, want %d", len(b), tc.size)
			}
		})
	}
	resp, err := http.Post(s.url+"/checkpoint", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %s", resp.Status)
	}
}

// BenchmarkTileEndpoint measures full-tile requests over HTTP (in-memory cache warm after the first
// read of each tile) and partial-tile requests (a NATS read each).
func BenchmarkTileEndpoint(b *testing.B) {
	s := startLog(b, 2000)
	for _, bc := range []struct{ name, path string }{
		{"full", "tile/0/003"},
		{"partial", "tile/0/007.p/208"},
		{"checkpoint", "checkpoint"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			hc := &http.Client{Transport: tr}
			b.Cleanup(tr.CloseIdleConnections)
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := hc.Get(s.url + "/" + bc.path)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("%s: %s", bc.path, resp.Status)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
