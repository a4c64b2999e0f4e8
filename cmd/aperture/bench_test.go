package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// TestBenchThreeRuns runs `aperture bench --json` briefly on a fresh data directory: all three paths
// (direct, bare proxy, brokered) answer without an error, the load covers every case asked for, and
// every brokered call counted left a durable access record.
func TestBenchThreeRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack three times over")
	}
	var out, errOut bytes.Buffer
	args := []string{"bench", "--json", "--data", t.TempDir(), "--duration", "400ms", "--warmup", "100ms",
		"--concurrency", "4", "--citizens", "3", "--cases", "2"}
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("aperture bench: exit %d\n%s", code, errOut.String())
	}
	var res benchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bench --json printed %q: %v", out.String(), err)
	}
	if res.DirectOpsPerSec <= 0 || res.ProxyOpsPerSec <= 0 || res.BrokeredOpsPerSec <= 0 {
		t.Fatalf("a run made no call: %+v", res)
	}
	if res.DirectErrors+res.ProxyErrors+res.BrokeredErrors != 0 {
		t.Fatalf("errors: %+v", res)
	}
	if res.Citizens != 3 || res.Cases != 6 {
		t.Fatalf("load over %d cases of %d citizens, want 6 of 3", res.Cases, res.Citizens)
	}
	if res.BrokeredOverProxy <= 0 || res.ProxyCPUMicros <= 0 || res.BrokeredCPUMicros <= 0 || res.DirectCPUMicros <= 0 {
		t.Fatalf("ratios or CPU per call missing: %+v", res)
	}
	// Every brokered call counted was answered, so its record is durable (warm-up records count too).
	if measured := uint64(res.BrokeredOpsPerSec * res.DurationS); res.AccessLogRecords < measured {
		t.Fatalf("%d access records for about %d brokered calls", res.AccessLogRecords, measured)
	}
	// The stage breakdown comes from the broker's own histograms over the brokered run's measured
	// window: every stage of every release, and the durable writes that carried their records.
	stages := map[string]stageFigure{}
	for _, f := range res.BrokeredStages {
		stages[f.Stage] = f
	}
	for _, src := range releaseStages() {
		f, ok := stages[src.stage]
		if !ok {
			t.Fatalf("no %q in the stage breakdown: %+v", src.stage, res.BrokeredStages)
		}
		if f.Mean <= 0 || f.P50 <= 0 || f.P99 < f.P50 {
			t.Fatalf("stage %q: mean %.3f ms, p50 %.3f ms, p99 %.3f ms", f.Stage, f.Mean, f.P50, f.P99)
		}
	}
	// Each measured call passed every stage and was timed before it was answered; the stages are read
	// when the measured window opens, so a call then in flight may have passed some stages before.
	for _, st := range []string{"release", "decide", "fetch", "log_append"} {
		if n, calls := stages[st].Count, uint64(res.BrokeredOpsPerSec*res.DurationS); n+uint64(res.Concurrency) < calls {
			t.Fatalf("stage %q timed %d times for about %d brokered calls", st, n, calls)
		}
	}
	// A write is timed just before it is counted as a batch, so at either end of the run one write may
	// be timed and not yet counted.
	if w := stages["durable_write"].Count; w == 0 || w > res.AccessLogBatches+2 {
		t.Fatalf("%d durable writes timed, %d ACCESS batches written", w, res.AccessLogBatches)
	}
}

func TestBucketQuantile(t *testing.T) {
	bounds := []float64{1, 2, 4}
	for _, c := range []struct {
		name       string
		q          float64
		cumulative []uint64
		n          uint64
		want       float64
	}{
		{"inside the first bucket, from 0", 0.5, []uint64{10, 10, 10}, 10, 0.5},
		{"inside a later bucket", 0.5, []uint64{0, 10, 10}, 10, 1.5},
		{"interpolated by rank", 0.75, []uint64{5, 5, 10}, 10, 3},
		{"past the last bound", 0.99, []uint64{1, 2, 3}, 100, 4},
		{"the rank at a bucket's upper edge", 0.5, []uint64{5, 5, 5}, 10, 1},
	} {
		if got := bucketQuantile(c.q, bounds, c.cumulative, c.n); got != c.want {
			t.Errorf("%s: q %.2f of %v (n %d) = %v, want %v", c.name, c.q, c.cumulative, c.n, got, c.want)
		}
	}
	if got := bucketQuantile(0.5, nil, nil, 10); got != 0 {
		t.Errorf("no bounds: %v, want 0 (nothing to estimate from)", got)
	}
}

// TestPassProxyIsTransparent calls every registry authority directly and through the bench's bare
// proxy: the same answers, and the authority's own error status (code and message)
// passed back unchanged.
func TestPassProxyIsTransparent(t *testing.T) {
	ts := newTestStack(t)
	brokerSrc, err := ts.CA.Source("broker", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	citizen := ts.Population.IDs()[0]
	for _, a := range ts.Registry.Authorities {
		t.Run(a.ID, func(t *testing.T) {
			id := mtls.ID(trustDomain, "authority", a.ID)
			p, err := startPassProxy("127.0.0.1:0", ts.AuthorityAddrs[a.ID], id, brokerSrc, brokerSrc, authorityv1.AuthorityService_ServiceDesc)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			dial := func(addr, want string) authorityv1.AuthorityServiceClient {
				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(brokerSrc, want))))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cc.Close() })
				return authorityv1.NewAuthorityServiceClient(cc)
			}
			direct := dial(ts.AuthorityAddrs[a.ID], id)
			proxied := dial(p.Addr(), mtls.ID(trustDomain, "broker", ""))

			want, err := direct.Describe(ctx, &authorityv1.DescribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := proxied.Describe(ctx, &authorityv1.DescribeRequest{})
			if err != nil {
				t.Fatalf("Describe through the proxy: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("Describe through the proxy differs:\n got %v\nwant %v", got, want)
			}
			if len(want.GetDatasets()) == 0 {
				t.Fatal("authority describes no dataset")
			}
			ds := want.GetDatasets()[0].GetName()
			// A mask naming no field of the dataset: the authority's refusal must come back as it is.
			bad := &authorityv1.FetchRequest{CitizenId: citizen, Dataset: ds, FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"no_such_field"}},
				Context: &authorityv1.AccessContext{AccessId: "bench", CaseId: "case", Journey: "j", Step: "s", Agency: "a", Caseworker: "c"}}
			_, werr := direct.Fetch(ctx, bad)
			_, gerr := proxied.Fetch(ctx, bad)
			if werr == nil {
				t.Fatal("the authority accepted an unknown field path")
			}
			if ws, gs := status.Convert(werr), status.Convert(gerr); ws.Code() != gs.Code() || ws.Message() != gs.Message() {
				t.Fatalf("error through the proxy %v, directly %v", gerr, werr)
			}
		})
	}
}

// TestBenchScaleOut runs `aperture bench --cluster 3 --brokers 2 --json` briefly: a three-node NATS
// cluster on loopback and two broker replicas on it. Both runs (one broker, then two) answer without
// an error, and every call counted left a durable access record, whichever replica took it.
func TestBenchScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node NATS cluster and two brokers")
	}
	var out, errOut bytes.Buffer
	args := []string{"bench", "--json", "--data", t.TempDir(), "--cluster", "3", "--brokers", "2", "--duration", "500ms", "--warmup", "100ms",
		"--concurrency", "4", "--citizens", "3"}
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("aperture bench --cluster: exit %d\n%s", code, errOut.String())
	}
	var res scaleOutResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bench --cluster --json printed %q: %v", out.String(), err)
	}
	if res.NATSNodes != 3 || res.Replicas != 3 || res.Cases != 3 {
		t.Fatalf("cluster of %d nodes, %d replicas, %d cases; want 3, 3, 3", res.NATSNodes, res.Replicas, res.Cases)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs, want one per broker count (2): %+v", len(res.Runs), res.Runs)
	}
	for i, r := range res.Runs {
		if r.Brokers != i+1 || r.OpsPerSec <= 0 || r.Errors != 0 {
			t.Fatalf("run with %d brokers (want %d): %.0f ops/s, %d errors", r.Brokers, i+1, r.OpsPerSec, r.Errors)
		}
		if measured := uint64(r.OpsPerSec * res.DurationS); r.AccessLogRecords < measured {
			t.Fatalf("%d brokers: %d access records for about %d brokered calls", r.Brokers, r.AccessLogRecords, measured)
		}
		// Every replica's histograms count: the release stage covers the calls of both (less those in
		// flight when the measured window opened, as in TestBenchThreeRuns).
		if len(r.Stages) != len(releaseStages()) || r.Stages[0].Stage != "release" ||
			r.Stages[0].Count+uint64(res.Concurrency) < uint64(r.OpsPerSec*res.DurationS) {
			t.Fatalf("%d brokers: stage breakdown %+v for about %.0f calls", r.Brokers, r.Stages, r.OpsPerSec*res.DurationS)
		}
	}
}

// TestBenchFlagsRefused: flag combinations the scale-out bench cannot honour are refused, not ignored.
func TestBenchFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--brokers", "2"},
		{"--cluster", "2"},
		{"--cluster", "3", "--brokered-only"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"bench", "--data", t.TempDir()}, args...), &out, &errOut); code == 0 {
			t.Errorf("aperture bench %v: exit 0, want a refusal", args)
		}
	}
}

// TestTHPMode reads the selected mode out of the kernel's transparent_hugepage/enabled line.
func TestTHPMode(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"always [madvise] never\n", "madvise"},
		{"[always] madvise never\n", "always"},
		{"always madvise [never]", "never"},
		{"always madvise never", ""},
		{"[always", ""},
		{"", ""},
	} {
		if got := thpMode(tc.line); got != tc.want {
			t.Errorf("thpMode(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
