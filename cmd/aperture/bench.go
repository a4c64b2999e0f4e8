package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/server"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// benchResult is what `aperture bench --json` prints.
type benchResult struct {
	DirectOpsPerSec   float64 `json:"direct_ops_per_sec"`
	ProxyOpsPerSec    float64 `json:"proxy_ops_per_sec"`
	BrokeredOpsPerSec float64 `json:"brokered_ops_per_sec"`
	// Ratio is brokered over direct; BrokeredOverProxy brokered over the bare proxy, the limit a broker
	// that adds one mTLS gRPC hop can reach on the same cores.
	Ratio             float64 `json:"ratio"`
	BrokeredOverProxy float64 `json:"brokered_over_proxy"`
	ProxyOverDirect   float64 `json:"proxy_over_direct"`
	DirectP50Ms       float64 `json:"direct_p50_ms"`
	DirectP99Ms       float64 `json:"direct_p99_ms"`
	ProxyP50Ms        float64 `json:"proxy_p50_ms"`
	ProxyP99Ms        float64 `json:"proxy_p99_ms"`
	BrokeredP50Ms     float64 `json:"brokered_p50_ms"`
	BrokeredP99Ms     float64 `json:"brokered_p99_ms"`
	Concurrency       int     `json:"concurrency"`
	DurationS         float64 `json:"duration_s"`
	Dataset           string  `json:"dataset"`
	Fields            int     `json:"fields"`
	// Citizens and Cases are what the load is spread over: every call goes to the next case, round robin.
	Citizens          int     `json:"citizens"`
	Cases             int     `json:"cases"`
	AccessLogBatches  uint64  `json:"access_log_batches"`
	AccessLogRecords  uint64  `json:"access_log_records"`
	BrokeredErrors    uint64  `json:"brokered_errors"`
	ProxyErrors       uint64  `json:"proxy_errors"`
	DirectErrors      uint64  `json:"direct_errors"`
	RecordsPerDurable float64 `json:"records_per_durable_write"`
	// IndexLagBatches is how many ACCESS batches the per-citizen index had yet to take in when the
	// brokered run ended: an indexer that cannot keep up shows here.
	IndexLagBatches uint64 `json:"index_lag_batches"`
	// CPU time of the whole process (load generator, broker or proxy, authority and NATS) per successful
	// call: what each path costs on this machine, whatever the concurrency.
	DirectCPUMicros   float64 `json:"direct_cpu_us_per_op"`
	ProxyCPUMicros    float64 `json:"proxy_cpu_us_per_op"`
	BrokeredCPUMicros float64 `json:"brokered_cpu_us_per_op"`
	// Heap allocations of the whole process per successful call (objects and bytes), warm-up included
	// at the same rate: exact counts (runtime.MemStats), steadier than CPU on a shared host.
	DirectAllocs       float64 `json:"direct_allocs_per_op"`
	ProxyAllocs        float64 `json:"proxy_allocs_per_op"`
	BrokeredAllocs     float64 `json:"brokered_allocs_per_op"`
	DirectAllocBytes   float64 `json:"direct_alloc_bytes_per_op"`
	ProxyAllocBytes    float64 `json:"proxy_alloc_bytes_per_op"`
	BrokeredAllocBytes float64 `json:"brokered_alloc_bytes_per_op"`
	// Page faults of the whole process per successful call (minor and major, from getrusage), warm-up
	// included: the first touch of each page the heap grows into costs one, and what one costs is the
	// host's (see HostTHP).
	DirectFaults   float64 `json:"direct_faults_per_op"`
	ProxyFaults    float64 `json:"proxy_faults_per_op"`
	BrokeredFaults float64 `json:"brokered_faults_per_op"`
	// HostTHP is the kernel's transparent huge page mode, the bracketed word of
	// /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise", "never"; "" where there is no
	// such file). Go does not ask for huge pages itself, so only with "always" does its heap grow in
	// 2 MB pages, one fault each, rather than in 4 KiB ones.
	HostTHP string `json:"host_thp"`
	// BrokeredStages is where the brokered calls' time went inside the broker, from its own histograms.
	BrokeredStages []stageFigure `json:"brokered_stages"`
}

// benchOptions are the flags of `aperture bench` that shape the load.
type benchOptions struct {
	Concurrency      int
	Warmup, Duration time.Duration
	// Citizens is how many demo citizens the load is spread over (0: all); CasesPer is how many open
	// cases each of them has.
	Citizens, CasesPer int
	CPUProfile         string
	MemProfile         string
	// BrokeredOnly skips the direct and proxy runs (for profiling the broker).
	BrokeredOnly bool
	// IndexShards is the brokers' index_shards (0: their default).
	IndexShards int
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		asJSON      = fs.Bool("json", false, "print one JSON object")
		concurrency = fs.Int("concurrency", 64, "concurrent callers, the same for every run")
		duration    = fs.Duration("duration", 10*time.Second, "length of each run")
		warmup      = fs.Duration("warmup", 2*time.Second, "warm-up before each run")
		citizens    = fs.Int("citizens", 0, "demo citizens the load is spread over (default: all 1,000 of the demo population)")
		casesPer    = fs.Int("cases", 1, "open cases per citizen; every call goes to the next case, round robin")
		data        = fs.String("data", "", "data directory (default: a new temporary directory, removed after)")
		cpuProfile  = fs.String("cpuprofile", "", "write a CPU profile of the brokered run (with --cluster: of the one-broker round) to this file")
		memProfile  = fs.String("memprofile", "", "write an allocation profile of the brokered run to this file (and of everything before it to FILE.before: go tool pprof -diff_base FILE.before FILE)")
		onlyBroker  = fs.Bool("brokered-only", false, "skip the direct and proxy runs (for profiling the broker)")
		cluster     = fs.Int("cluster", 0, "scale-out run: a NATS cluster of this many nodes on loopback, streams replicated on all of them (0: the single embedded server and the three-path comparison)")
		brokers     = fs.Int("brokers", 0, "with --cluster: brokered runs with 1, 2, … up to this many broker replicas (default 3)")
		indexShards = fs.Int("index-shards", 0, "the broker's --index-shards (0: its default), to weigh releases against listings")
	)
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
	}
	switch {
	case *concurrency < 1:
		return fmt.Errorf("--concurrency %d: want at least 1", *concurrency)
	case *citizens < 0:
		return fmt.Errorf("--citizens %d: want 0 (all) or more", *citizens)
	case *casesPer < 1:
		return fmt.Errorf("--cases %d: want at least 1", *casesPer)
	case *duration <= 0 || *warmup < 0:
		return fmt.Errorf("--duration must be positive and --warmup not negative")
	case *cluster < 0 || *cluster == 2 || *cluster > 7:
		return fmt.Errorf("--cluster %d: want 0 (embedded server), 1, or 3 to 7 nodes (a cluster of 2 loses its quorum with either node)", *cluster)
	case *brokers < 0:
		return fmt.Errorf("--brokers %d: want at least 1", *brokers)
	case *cluster == 0 && *brokers > 0:
		return fmt.Errorf("--brokers needs --cluster")
	case *indexShards < 0 || *indexShards > 256:
		return fmt.Errorf("--index-shards %d: want 0 (the broker's default) or 1 to 256", *indexShards)
	case *cluster > 0 && *onlyBroker:
		return fmt.Errorf("--cluster measures brokered runs only: --brokered-only says nothing more")
	}
	dir := *data
	if dir == "" {
		tmp, err := os.MkdirTemp("", "aperture-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pfs, err := policyFS("")
	if err != nil {
		return err
	}
	if *cluster > 0 {
		res, err := benchScaleOut(ctx, dir, *cluster, cmp.Or(*brokers, 3), benchOptions{
			Concurrency: *concurrency, Warmup: *warmup, Duration: *duration, Citizens: *citizens, CasesPer: *casesPer,
			CPUProfile: *cpuProfile, MemProfile: *memProfile, IndexShards: *indexShards,
		}, logger)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		}
		printScaleOut(stdout, res)
		return nil
	}
	population := max(1000, *citizens)
	st, err := startStack(ctx, stackOptions{DataDir: dir, Listen: "127.0.0.1:0", Citizens: population, Policies: pfs, RandomPorts: true, Logger: logger,
		IndexShards: *indexShards})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx) }()
	defer func() { stop(); <-done }()

	res, err := bench(ctx, st, benchOptions{
		Concurrency: *concurrency, Warmup: *warmup, Duration: *duration,
		Citizens: *citizens, CasesPer: *casesPer, CPUProfile: *cpuProfile, MemProfile: *memProfile, BrokeredOnly: *onlyBroker,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(stdout, "Aperture bench: %s, %d fields, %d cases of %d citizens, %d concurrent callers, %.0fs per run, every brokered call durably logged\n\n",
		res.Dataset, res.Fields, res.Cases, res.Citizens, res.Concurrency, res.DurationS)
	fmt.Fprintln(tw, "\tops/s\tp50 ms\tp99 ms\tCPU µs/op\tallocs/op\tKiB/op\tfaults/op\terrors\t")
	fmt.Fprintf(tw, "direct authority Fetch\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%.1f\t%.2f\t%d\t\n", res.DirectOpsPerSec, res.DirectP50Ms, res.DirectP99Ms, res.DirectCPUMicros, res.DirectAllocs, res.DirectAllocBytes/1024, res.DirectFaults, res.DirectErrors)
	fmt.Fprintf(tw, "bare mTLS proxy to the authority\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%.1f\t%.2f\t%d\t\n", res.ProxyOpsPerSec, res.ProxyP50Ms, res.ProxyP99Ms, res.ProxyCPUMicros, res.ProxyAllocs, res.ProxyAllocBytes/1024, res.ProxyFaults, res.ProxyErrors)
	fmt.Fprintf(tw, "brokered Release\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%.1f\t%.2f\t%d\t\n", res.BrokeredOpsPerSec, res.BrokeredP50Ms, res.BrokeredP99Ms, res.BrokeredCPUMicros, res.BrokeredAllocs, res.BrokeredAllocBytes/1024, res.BrokeredFaults, res.BrokeredErrors)
	tw.Flush()
	fmt.Fprintf(stdout, "\nbrokered/proxy: %.2f   brokered/direct: %.2f   proxy/direct: %.2f\naccess log: %d records in %d durable writes (%.1f per write); the index was %d batches behind at the end\n",
		res.BrokeredOverProxy, res.Ratio, res.ProxyOverDirect, res.AccessLogRecords, res.AccessLogBatches, res.RecordsPerDurable, res.IndexLagBatches)
	if res.HostTHP != "" {
		fmt.Fprintf(stdout, "host: transparent huge pages %q (the Go heap grows in 2 MB pages only with \"always\")\n", res.HostTHP)
	}
	if len(res.BrokeredStages) > 0 {
		fmt.Fprintf(stdout, "\nwhere a brokered call's time went inside the broker (its own histograms; p50/p99 to a bucket's resolution):\n\n")
		fmt.Fprintln(tw, "\tcount\tmean ms\tp50 ms\tp99 ms\t")
		for _, f := range res.BrokeredStages {
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t\n", f.Stage, f.Count, f.Mean, f.P50, f.P99)
		}
		tw.Flush()
	}
	return nil
}

// benchTarget is one open case and the two requests that read the same record for it.
type benchTarget struct {
	fetch   *authorityv1.FetchRequest
	release *brokerv1.ReleaseRequest
}

func bench(ctx context.Context, st *stack, o benchOptions) (*benchResult, error) {
	const journey, authority, dataset = "sickness-benefit", "population", "person"
	j, ok := st.Broker.Bundle().Journey(journey)
	if !ok {
		return nil, fmt.Errorf("policy has no journey %q", journey)
	}
	rule, ok := j.Steps[0].Rule(authority, dataset)
	if !ok {
		return nil, fmt.Errorf("first step of %s releases nothing from %s.%s", journey, authority, dataset)
	}
	agency := j.Steps[0].Agency
	citizens := st.Population.IDs()
	if o.Citizens > 0 {
		if o.Citizens > len(citizens) {
			return nil, fmt.Errorf("--citizens %d: the demo population has %d", o.Citizens, len(citizens))
		}
		citizens = citizens[:o.Citizens]
	}

	// The broker's own identity, so the direct client and the proxy are served exactly like the broker.
	brokerSrc, err := st.CA.Source("broker", "")
	if err != nil {
		return nil, err
	}
	authorityID := mtls.ID(trustDomain, "authority", authority)
	direct, err := grpc.NewClient(st.AuthorityAddrs[authority], grpc.WithTransportCredentials(credentials.NewTLS(
		mtls.ClientConfig(brokerSrc, authorityID))))
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	agencySrc, err := st.CA.Source("agency", agency)
	if err != nil {
		return nil, err
	}
	// The agency reaches the broker and the proxy alike: mTLS, expecting the broker's certificate.
	agencyCreds := grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(agencySrc, mtls.ID(trustDomain, "broker", ""))))
	brokered, err := grpc.NewClient(st.Broker.Addr(), agencyCreds)
	if err != nil {
		return nil, err
	}
	defer brokered.Close()
	proxy, err := startPassProxy("127.0.0.1:0", st.AuthorityAddrs[authority], authorityID, brokerSrc, brokerSrc, authorityv1.AuthorityService_ServiceDesc)
	if err != nil {
		return nil, err
	}
	defer proxy.Close()
	proxied, err := grpc.NewClient(proxy.Addr(), agencyCreds)
	if err != nil {
		return nil, err
	}
	defer proxied.Close()

	bc := brokerv1.NewBrokerServiceClient(brokered)
	cctx := metadata.AppendToOutgoingContext(ctx, server.CaseworkerHeader, "bench")
	targets, err := openBenchCases(cctx, bc, citizens, o.CasesPer, journey)
	if err != nil {
		return nil, err
	}
	for i := range targets {
		t := &targets[i]
		t.fetch = &authorityv1.FetchRequest{
			CitizenId: t.fetch.GetCitizenId(), Dataset: dataset, FieldMask: &fieldmaskpb.FieldMask{Paths: rule.Fields},
			Context: &authorityv1.AccessContext{AccessId: "bench", CaseId: t.release.GetCaseId(), Journey: journey, Step: j.Steps[0].ID, Agency: agency, Caseworker: "bench"},
		}
		t.release.Authority, t.release.Dataset, t.release.Fields = authority, dataset, rule.Fields
	}

	ac := authorityv1.NewAuthorityServiceClient(direct)
	pc := authorityv1.NewAuthorityServiceClient(proxied)
	directOp := func(ctx context.Context, i int) error {
		_, err := ac.Fetch(ctx, targets[i%len(targets)].fetch)
		return err
	}
	proxyOp := func(ctx context.Context, i int) error {
		_, err := pc.Fetch(ctx, targets[i%len(targets)].fetch)
		return err
	}
	brokeredOp := func(ctx context.Context, i int) error {
		_, err := bc.Release(ctx, targets[i%len(targets)].release)
		return err
	}

	use0, mem0 := processUsage(), heapAllocs()
	var (
		dRate, pRate float64
		dLat, pLat   []time.Duration
		dErr, pErr   uint64
	)
	if !o.BrokeredOnly {
		dRate, dLat, dErr = load(ctx, directOp, o.Concurrency, o.Warmup, o.Duration, nil)
	}
	use1, mem1 := processUsage(), heapAllocs()
	if !o.BrokeredOnly {
		pRate, pLat, pErr = load(ctx, proxyOp, o.Concurrency, o.Warmup, o.Duration, nil)
	}
	use2, mem2 := processUsage(), heapAllocs()
	if err := settle(ctx, st.Broker); err != nil {
		return nil, err
	}
	stopProfile, err := startProfiles(o.CPUProfile, o.MemProfile)
	if err != nil {
		return nil, err
	}
	before := st.Broker.AccessLog().Stats()
	thp := hostTHP()
	restoreGC := lowerGCForEmbeddedNATS(thp) // as in a broker with the embedded server
	use3, mem3 := processUsage(), heapAllocs()
	var stages0 histSnapshot
	var stagesErr error
	bRate, bLat, bErr := load(cctx, brokeredOp, o.Concurrency, o.Warmup, o.Duration, func() {
		stages0, stagesErr = snapshotStages(st.telemetry.Gatherer())
	})
	use4, mem4 := processUsage(), heapAllocs()
	restoreGC()
	stages1, err := snapshotStages(st.telemetry.Gatherer())
	if err = cmp.Or(stagesErr, err); err != nil {
		return nil, err
	}
	after := st.Broker.AccessLog().Stats()
	if err := stopProfile(); err != nil {
		return nil, err
	}

	res := &benchResult{
		DirectOpsPerSec: dRate, ProxyOpsPerSec: pRate, BrokeredOpsPerSec: bRate,
		DirectP50Ms: pct(dLat, 0.50), DirectP99Ms: pct(dLat, 0.99),
		ProxyP50Ms: pct(pLat, 0.50), ProxyP99Ms: pct(pLat, 0.99),
		BrokeredP50Ms: pct(bLat, 0.50), BrokeredP99Ms: pct(bLat, 0.99),
		Concurrency: o.Concurrency, DurationS: o.Duration.Seconds(),
		Dataset: authority + "." + dataset, Fields: len(rule.Fields),
		Citizens: len(citizens), Cases: len(targets),
		AccessLogBatches: after.Batches - before.Batches, AccessLogRecords: after.Records - before.Records,
		BrokeredErrors: bErr, ProxyErrors: pErr, DirectErrors: dErr,
		BrokeredStages: stagesBetween(stages0, stages1),
		HostTHP:        thp,
	}
	wall := o.Warmup + o.Duration
	if dRate > 0 {
		res.Ratio = bRate / dRate
		res.ProxyOverDirect = pRate / dRate
		res.DirectCPUMicros, res.DirectFaults = use1.perOp(use0, dRate, wall)
		res.DirectAllocs, res.DirectAllocBytes = mem1.perOp(mem0, dRate, wall)
	}
	if pRate > 0 {
		res.BrokeredOverProxy = bRate / pRate
		res.ProxyCPUMicros, res.ProxyFaults = use2.perOp(use1, pRate, wall)
		res.ProxyAllocs, res.ProxyAllocBytes = mem2.perOp(mem1, pRate, wall)
	}
	if bRate > 0 {
		res.BrokeredCPUMicros, res.BrokeredFaults = use4.perOp(use3, bRate, wall)
		res.BrokeredAllocs, res.BrokeredAllocBytes = mem4.perOp(mem3, bRate, wall)
	}
	if res.AccessLogBatches > 0 {
		res.RecordsPerDurable = float64(res.AccessLogRecords) / float64(res.AccessLogBatches)
	}
	lag, err := st.Broker.AccessLog().IndexLag(ctx)
	if err != nil {
		return nil, fmt.Errorf("index lag after the brokered run: %w", err)
	}
	res.IndexLagBatches = lag.Batches
	return res, nil
}

// openBenchCases opens perCitizen cases of journey for each citizen, a few at a time, and returns them
// in an order that alternates citizens (consecutive calls go to different citizens).
func openBenchCases(ctx context.Context, bc brokerv1.BrokerServiceClient, citizens []string, perCitizen int, journey string) ([]benchTarget, error) {
	targets := make([]benchTarget, len(citizens)*perCitizen)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for k := range perCitizen {
		for i, citizen := range citizens {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				opened, err := openCaseRetrying(ctx, bc, journey, citizen)
				if err != nil {
					cancel(fmt.Errorf("open a %s case for demo citizen %d: %w", journey, i+1, err))
					return
				}
				targets[k*len(citizens)+i] = benchTarget{
					fetch:   &authorityv1.FetchRequest{CitizenId: citizen},
					release: &brokerv1.ReleaseRequest{CaseId: opened.GetCase().GetId()},
				}
			})
		}
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return targets, nil
}

// openCaseRetrying opens a case, trying again a few times while the broker answers Unavailable: on a
// loaded host a durable write can outlast the broker's append timeout, which opens the access log's
// breaker until a probe write succeeds (fail closed, as it should).
func openCaseRetrying(ctx context.Context, bc brokerv1.BrokerServiceClient, journey, citizen string) (*brokerv1.OpenCaseResponse, error) {
	for attempt := 1; ; attempt++ {
		opened, err := bc.OpenCase(ctx, &brokerv1.OpenCaseRequest{Journey: journey, CitizenId: citizen})
		if err == nil || status.Code(err) != codes.Unavailable || attempt == 10 {
			return opened, err
		}
		select {
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// startProfiles starts the CPU profile and writes the allocation profile so far to memFile.before;
// the returned function stops the CPU profile and writes the allocation profile again to memFile, so
// that pprof -diff_base shows the allocations of what ran in between.
func startProfiles(cpuFile, memFile string) (func() error, error) {
	var cpu *os.File
	if cpuFile != "" {
		f, err := os.Create(cpuFile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		cpu = f
	}
	if memFile != "" {
		if err := writeAllocs(memFile + ".before"); err != nil {
			return nil, err
		}
	}
	return func() error {
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				return err
			}
		}
		if memFile == "" {
			return nil
		}
		return writeAllocs(memFile)
	}, nil
}

// writeAllocs writes the allocation profile so far (every allocation since the process started).
func writeAllocs(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// load runs op from concurrency goroutines for warmup, then measures for duration. It returns
// successful operations per second, their latencies and the error count. measuring, if not nil, is
// called once the warm-up is over, just before the measured window starts.
//
// Caller k makes its calls with indexes k, k+concurrency, k+2·concurrency, …, so that together the
// callers walk every index in turn.
func load(ctx context.Context, op func(context.Context, int) error, concurrency int, warmup, duration time.Duration, measuring func()) (float64, []time.Duration, uint64) {
	var (
		measured atomic.Bool
		errs     atomic.Uint64
		mu       sync.Mutex
		all      []time.Duration
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for k := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for i := k; ctx.Err() == nil; i += concurrency {
				t0 := time.Now()
				err := op(ctx, i)
				d := time.Since(t0)
				if !measured.Load() {
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	time.Sleep(warmup)
	if measuring != nil {
		measuring()
	}
	measured.Store(true)
	start := time.Now()
	time.Sleep(duration)
	measured.Store(false)
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	return float64(len(all)) / elapsed.Seconds(), all, errs.Load()
}

// rusage is what getrusage reports of this process so far: CPU time (user and system) and page
// faults (minor and major).
type rusage struct {
	cpu    time.Duration
	faults uint64
}

func processUsage() rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return rusage{}
	}
	return rusage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), faults: uint64(ru.Minflt + ru.Majflt)}
}

// perOp spreads the CPU (in µs) and the faults since before over the operations of a run (warm-up
// included, at the same rate).
func (u rusage) perOp(before rusage, rate float64, wall time.Duration) (cpuMicros, faults float64) {
	n := rate * wall.Seconds()
	return float64((u.cpu - before.cpu).Microseconds()) / n, float64(u.faults-before.faults) / n
}

// allocCount is the process's heap allocations so far.
type allocCount struct{ objects, bytes uint64 }

func heapAllocs() allocCount {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return allocCount{objects: ms.Mallocs, bytes: ms.TotalAlloc}
}

// perOp spreads the allocations since before over the operations of a run, like rusage.perOp.
func (a allocCount) perOp(before allocCount, rate float64, wall time.Duration) (objects, bytes float64) {
	n := rate * wall.Seconds()
	return float64(a.objects-before.objects) / n, float64(a.bytes-before.bytes) / n
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return float64(d[i].Microseconds()) / 1000
}

// settle waits until the work the bench's own setup left behind is done: the access index has taken
// in every batch (the cases' OpenCase records) and the case events relay has published every case
// event. Otherwise that backlog, which is no part of a release, runs during the measured run: on a
// cluster, thousands of event publishes and their Raft commits.
func settle(ctx context.Context, b *broker.Broker) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(b.NATSConn())
	if err != nil {
		return err
	}
	for {
		lag, err := b.AccessLog().IndexLag(ctx)
		if err != nil {
			return fmt.Errorf("settle: index lag: %w", err)
		}
		relay, err := js.Consumer(ctx, "KV_"+cases.Bucket, cases.RelayConsumer)
		if err != nil {
			return fmt.Errorf("settle: case events relay: %w", err)
		}
		info, err := relay.Info(ctx)
		if err != nil {
			return fmt.Errorf("settle: case events relay: %w", err)
		}
		if lag.Batches == 0 && info.NumPending == 0 && info.NumAckPending == 0 {
			return nil
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("settle: index %d batches behind, case events relay %d pending and %d unacknowledged: %w",
				lag.Batches, info.NumPending, info.NumAckPending, context.Cause(ctx))
		}
	}
}
