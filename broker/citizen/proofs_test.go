package citizen_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// newWitnessedEnv is newEnv with two witnesses (real HTTP servers) and a 2-of-2 witness policy.
func newWitnessedEnv(t testing.TB) (*env, *witness.Policy) {
	t.Helper()
	dir := t.TempDir()
	ca, err := mtls.OpenDevCA(filepath.Join(dir, "pki"), trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := keys.OpenLocalProvider(filepath.Join(dir, "keys"), "")
	if err != nil {
		t.Fatal(err)
	}
	pn, err := keys.OpenLocal(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	logKey := kp.Checkpoints().Verifier()
	var policy strings.Builder
	for i := 1; i <= 2; i++ {
		skey, vkey, err := witness.GenerateKey(fmt.Sprintf("w%d.test/witness", i))
		if err != nil {
			t.Fatal(err)
		}
		sd, err := witness.OpenStateDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		srv, err := witness.NewServer(witness.ServerConfig{Key: skey, State: sd, Logger: slog.New(slog.DiscardHandler),
			Logs: []witness.Log{{Origin: logKey.Name(), Verifiers: []note.Verifier{logKey}}}})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		fmt.Fprintf(&policy, "witness w%d %s %s\n", i, vkey, hs.URL)
	}
	policy.WriteString("group both all w1 w2\nquorum both\n")
	p, err := witness.ParsePolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}

	addrs := map[string]string{}
	for _, a := range authorities(t) {
		srv := kittest.StartWithCA(t, ca, a, kit.WithLogger(slog.New(slog.DiscardHandler)))
		addrs[a.ID] = srv.Addr
	}
	certs, err := ca.Source(mtls.KindBroker, "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ca: ca, pn: pn, clock: &clock{}, logs: &logBuffer{}, conns: map[string]*grpc.ClientConn{}, broker: map[string]brokerv1.BrokerServiceClient{}}
	e.secrets = []string{anna, bo, cai, tokAnna, tokBo, tokCai, tokExpired}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.b, err = broker.New(ctx, broker.Config{
		DataDir: dir, Listen: "127.0.0.1:0", CitizenListen: "127.0.0.1:0", AuthorityAddresses: addrs,
		StartTimeout: 30 * time.Second, CheckpointInterval: 50 * time.Millisecond,
	}, broker.Deps{
		Policies: policyFiles(), Certs: certs, Pseudonyms: pn, Sealer: kp.Sealer(), Checkpoints: kp.Checkpoints(),
		Citizens:  tokens{tokAnna: anna, tokBo: bo, tokCai: cai},
		Witnesses: p,
		Logger:    slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       e.clock.Now,
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.b.Run(runCtx) }()
	var once sync.Once
	var runErr error
	e.stop = func() error {
		once.Do(func() { stop(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		e.mu.Lock()
		if e.cconn != nil {
			e.cconn.Close()
		}
		e.mu.Unlock()
		if err := e.stop(); err != nil {
			t.Errorf("broker run: %v", err)
		}
		logs := e.logs.String()
		for _, s := range e.secrets {
			if strings.Contains(logs, s) {
				t.Errorf("the broker logged a secret %q:\n%s", s, logs)
			}
		}
	})
	return e, p.WithLog(logKey)
}

// proofOf asks for an access proof until the access is in a cosigned checkpoint (UNAVAILABLE until
// then), with a generous deadline.
func (e *env) proofOf(token, id string) (*citizenv1.GetAccessProofResponse, error) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := e.citizen().GetAccessProof(as(token), &citizenv1.GetAccessProofRequest{AccessId: id})
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return resp, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGetAccessProof: a citizen's access is proven in the cosigned checkpoint over real gRPC and TLS;
// the response verifies from its bytes alone (transparency-dev's RFC 6962 verifier, the witness
// policy); another citizen asking for it gets NOT_FOUND, as for an id that does not exist.
func TestGetAccessProof(t *testing.T) {
	e, policy := newWitnessedEnv(t)
	b := e.b.Bundle()
	authority, journey := b.Registry.Authorities[0].ID, b.Journeys()[0].ID
	var recs []*auditv1.AccessRecord
	for i := range 5 {
		who := anna
		if i%2 == 1 {
			who = bo
		}
		recs = append(recs, e.appendRecord(who, time.Now().Add(-time.Duration(5-i)*time.Minute), authority, journey, nil))
	}
	annas := recs[4]

	for _, tc := range []struct {
		name  string
		token string
		id    string
		code  codes.Code
	}{
		{"own access", tokAnna, annas.GetId(), codes.OK},
		{"own older access", tokAnna, recs[0].GetId(), codes.OK},
		{"own access of the other citizen", tokBo, recs[1].GetId(), codes.OK},
		{"another citizen's access", tokBo, annas.GetId(), codes.NotFound},
		{"citizen with no accesses", tokCai, annas.GetId(), codes.NotFound},
		{"no such access", tokAnna, "acc_" + strings.Repeat("0", 26), codes.NotFound},
		{"malformed id", tokAnna, "acc_nope", codes.InvalidArgument},
		{"no token", "", annas.GetId(), codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.proofOf(tc.token, tc.id)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Verify from the response alone: the leaf's id, the cosignatures and the inclusion.
			var logged auditv1.AccessRecord
			if err := proto.Unmarshal(resp.GetLeaf(), &logged); err != nil || logged.GetId() != tc.id {
				t.Fatalf("leaf is %q (%v), want %s", logged.GetId(), err, tc.id)
			}
			cosigners, err := policy.Verify(resp.GetCheckpoint())
			if err != nil || len(cosigners) != 2 {
				t.Fatalf("checkpoint: cosigners %v, %v", cosigners, err)
			}
			cp, err := policy.Open(resp.GetCheckpoint())
			if err != nil {
				t.Fatal(err)
			}
			h := rfc6962.DefaultHasher
			if err := proof.VerifyInclusion(h, resp.GetLeafIndex(), cp.Size, h.HashLeaf(resp.GetLeaf()), resp.GetInclusionProof(), cp.Root); err != nil {
				t.Fatalf("inclusion proof: %v", err)
			}
			if resp.GetTreeSize() != cp.Size || resp.GetQuorum() != 2 || resp.GetWitnesses() != 2 || len(resp.GetCosigners()) != 2 {
				t.Fatalf("response %d/%d of %d by %v", resp.GetTreeSize(), resp.GetQuorum(), resp.GetWitnesses(), resp.GetCosigners())
			}
			// A proof for another leaf does not pass as this one's.
			if err := proof.VerifyInclusion(h, resp.GetLeafIndex(), cp.Size, h.HashLeaf(append(resp.GetLeaf(), 0)), resp.GetInclusionProof(), cp.Root); err == nil {
				t.Fatal("the proof verifies a different leaf")
			}
		})
	}
	if err := e.b.Witnessing().Health(); err != nil {
		t.Fatalf("witness alarm: %v", err)
	}

	// Someone with NATS access, in the next two cases.
	js, err := jetstream.New(e.b.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("repointed access-id lookup does not change the proof", func(t *testing.T) {
		// Someone with NATS access points Anna's access id at Bo's leaf in the tree's lookup, which
		// nothing authenticates. Anna's proof comes from her own index entry, which the broker's MAC
		// does: she still gets her own record, at its own leaf.
		before, err := e.proofOf(tokAnna, annas.GetId())
		if err != nil {
			t.Fatal(err)
		}
		bos, err := e.b.Transparency().LeafByID(context.Background(), recs[1].GetId())
		if err != nil {
			t.Fatal(err)
		}
		subj := tlog.LookupSubject(annas.GetId())
		if _, err := js.Publish(context.Background(), subj, tlog.AppendLookup(nil, annas.GetId(), bos)); err != nil {
			t.Fatal(err)
		}
		if l, err := e.b.Transparency().LeafByID(context.Background(), annas.GetId()); err != nil || l != bos {
			t.Fatalf("the lookup was not repointed: %+v, %v", l, err)
		}
		after, err := e.proofOf(tokAnna, annas.GetId())
		if err != nil {
			t.Fatal(err)
		}
		var logged auditv1.AccessRecord
		if err := proto.Unmarshal(after.GetLeaf(), &logged); err != nil || logged.GetId() != annas.GetId() ||
			after.GetLeafIndex() != before.GetLeafIndex() || after.GetLeafIndex() == bos.Index {
			t.Fatalf("after repointing: leaf %d holding %q (%v); before: leaf %d; Bo's: %d",
				after.GetLeafIndex(), logged.GetId(), err, before.GetLeafIndex(), bos.Index)
		}
	})

	t.Run("corrupted tree proves nothing", func(t *testing.T) {
		// The index entry and the tree must agree: with a hash in the tree's storage changed, the
		// proof does not verify against the cosigned checkpoint and is not served.
		kv, err := js.KeyValue(context.Background(), tlog.TreeBucket)
		if err != nil {
			t.Fatal(err)
		}
		entry, err := kv.Get(context.Background(), "tile.0.0.p") // fewer than 256 leaves: partial
		if err != nil {
			t.Fatal(err)
		}
		tile := bytes.Clone(entry.Value())
		for i := range tile {
			tile[i] ^= 0xff
		}
		if _, err := kv.Put(context.Background(), "tile.0.0.p", tile); err != nil {
			t.Fatal(err)
		}
		_, err = e.citizen().GetAccessProof(as(tokAnna), &citizenv1.GetAccessProofRequest{AccessId: annas.GetId()})
		wantCode(t, err, codes.Internal)
		if !strings.Contains(e.logs.String(), "inclusion proof from the stored tree does not verify") {
			t.Fatal("no error-level log line for the proof that does not verify")
		}
	})
}
