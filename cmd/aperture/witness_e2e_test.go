package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/broker/witness"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// releasable finds, in the policies, a journey whose first step needs no consent and is not covert, and
// one dataset that step may see.
func releasable(t *testing.T, ts *testStack) (journey, agency, authority, dataset string) {
	t.Helper()
	for _, j := range ts.Broker.Bundle().Journeys() {
		st := j.Steps[0]
		if st.Consent == nil && st.Covert == nil && len(st.Rules) > 0 {
			return j.ID, st.Agency, st.Rules[0].Authority, st.Rules[0].Dataset
		}
	}
	t.Fatal("no journey starts with a step that needs no consent")
	return
}

// TestDevWitnessesCosign runs the dev stack with two local witnesses: every checkpoint of the access
// log ends up cosigned by both, checked here with transparency-dev's verifiers and the keys the
// banner prints; the cosigning latency is measured.
func TestDevWitnessesCosign(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.Witnesses = 2 })
	if len(ts.Witnesses) != 2 || ts.Broker.Witnessing() == nil {
		t.Fatalf("%d witnesses, cosigner %v", len(ts.Witnesses), ts.Broker.Witnessing())
	}
	var banner bytes.Buffer
	printDevBanner(&banner, ts.stack, ts.dataDir)
	for _, w := range ts.Witnesses {
		if !strings.Contains(banner.String(), w.URL) || !strings.Contains(banner.String(), w.VKey) {
			t.Fatalf("banner does not show witness %s:\n%s", w.Name, banner.String())
		}
	}

	// The verifier's own keys: the log's published key and the witnesses' printed keys.
	vkey, err := os.ReadFile(filepath.Join(ts.dataDir, "keys", tlog.VerifierKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	logV, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	vs := []note.Verifier{logV}
	for _, w := range ts.Witnesses {
		v, err := fnote.NewVerifierForCosignatureV1(w.VKey)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}

	journey, agency, authority, dataset := releasable(t, ts)
	ctx := context.Background()
	var lat []time.Duration
	for round := range 8 {
		cs := ts.open(agency, journey, ts.citizenFor(journey))
		rel, err := ts.agency(agency).Release(cw("cw-1"), &brokerv1.ReleaseRequest{CaseId: cs.GetId(), Authority: authority, Dataset: dataset})
		if err != nil {
			t.Fatal(err)
		}
		// Poll both every millisecond: when does a log-signed checkpoint include the release, and
		// when is a cosigned one stored that does?
		var signedAt time.Time
		var leaf uint64
		haveLeaf := false
		deadline := time.Now().Add(30 * time.Second)
		for {
			if !haveLeaf {
				if l, err := ts.Broker.Transparency().LeafByID(ctx, rel.GetAccessId()); err == nil {
					leaf, haveLeaf = l.Index, true
				}
			}
			if haveLeaf && signedAt.IsZero() {
				if cp, err := ts.Broker.Transparency().LatestCheckpoint(ctx); err == nil && cp.Size > leaf {
					signedAt = time.Now()
				}
			}
			if haveLeaf {
				if b, err := ts.Broker.Witnessing().LatestCheckpoint(ctx); err == nil {
					n, err := note.Open(b, note.VerifierList(vs...))
					if err != nil {
						t.Fatalf("cosigned checkpoint does not verify: %v\n%s", err, b)
					}
					var size uint64
					if _, err := fmt.Sscan(strings.Split(n.Text, "\n")[1], &size); err != nil {
						t.Fatal(err)
					}
					if size > leaf {
						if len(n.Sigs) != 3 {
							t.Fatalf("round %d: %d valid signatures, want the log's and both witnesses'", round, len(n.Sigs))
						}
						if signedAt.IsZero() {
							signedAt = time.Now()
						}
						lat = append(lat, time.Since(signedAt))
						break
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: leaf %d (found %v) not in a cosigned checkpoint", round, leaf, haveLeaf)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := ts.Broker.Witnessing().Health(); err != nil {
		t.Fatalf("witness alarm: %v", err)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("dev stack, 2 witnesses: log-signed checkpoint seen → cosigned checkpoint seen, %d rounds: median %v, max %v; last cosigning round %v",
		len(lat), lat[len(lat)/2], lat[len(lat)-1], ts.Broker.Witnessing().Stats().LastLatency)
}

// TestWitnessCommand: `aperture witness keygen` and `aperture witness serve` as another institution
// runs them, fed the dev log's published key; the log's checkpoint gets a cosignature that verifies
// with the printed key.
func TestWitnessCommand(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) { o.Witnesses = 0 })
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dpa.key")
	aperture := func(ctx context.Context, wantExit int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, args, &out, &errOut); code != wantExit {
			t.Fatalf("aperture %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantExit, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	out := aperture(context.Background(), 0, "witness", "keygen", "--name", "dpa.example/witness", "--key", keyFile)
	vkey := regexp.MustCompile(`verifier key: (\S+)`).FindStringSubmatch(out)
	if vkey == nil {
		t.Fatalf("keygen printed %q", out)
	}
	aperture(context.Background(), 1, "witness", "keygen", "--name", "dpa.example/witness", "--key", keyFile) // never overwrites
	aperture(context.Background(), 2, "witness", "serve", "--key", keyFile, "--state", filepath.Join(dir, "state"))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan string, 1)
	go func() {
		var out, errOut bytes.Buffer
		run(ctx, []string{"witness", "serve", "--key", keyFile, "--state", filepath.Join(dir, "state"), "--listen", addr,
			"--log-keys", filepath.Join(ts.dataDir, "keys", tlog.VerifierKeyFile)}, &out, &errOut)
		served <- out.String() + errOut.String()
	}()
	t.Cleanup(func() {
		cancel()
		<-served
	})

	journey, agency, authority, dataset := releasable(t, ts)
	cs := ts.open(agency, journey, ts.citizenFor(journey))
	if _, err := ts.agency(agency).Release(cw("cw-1"), &brokerv1.ReleaseRequest{CaseId: cs.GetId(), Authority: authority, Dataset: dataset}); err != nil {
		t.Fatal(err)
	}
	var cp tlog.Checkpoint
	deadline := time.Now().Add(30 * time.Second)
	for cp, err = ts.Broker.Transparency().LatestCheckpoint(context.Background()); err != nil; cp, err = ts.Broker.Transparency().LatestCheckpoint(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey[1])
	if err != nil {
		t.Fatal(err)
	}
	c := witness.Client{URL: "http://" + addr, Key: v}
	var line []byte
	for line, err = c.AddCheckpoint(context.Background(), 0, nil, cp.Note); err != nil; line, err = c.AddCheckpoint(context.Background(), 0, nil, cp.Note) {
		if time.Now().After(deadline) { // the server may still be starting
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := note.Open(append(cp.Note, line...), note.VerifierList(v)); err != nil {
		t.Fatalf("cosignature from the command does not verify: %v", err)
	}
}
