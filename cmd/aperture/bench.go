package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/aperture-gov/aperture/broker/server"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// benchResult is what `aperture bench --json` prints.
type benchResult struct {
	DirectOpsPerSec   float64 `json:"direct_ops_per_sec"`
	BrokeredOpsPerSec float64 `json:"brokered_ops_per_sec"`
	Ratio             float64 `json:"ratio"`
	DirectP50Ms       float64 `json:"direct_p50_ms"`
	DirectP99Ms       float64 `json:"direct_p99_ms"`
	BrokeredP50Ms     float64 `json:"brokered_p50_ms"`
	BrokeredP99Ms     float64 `json:"brokered_p99_ms"`
	Concurrency       int     `json:"concurrency"`
	DurationS         float64 `json:"duration_s"`
	Dataset           string  `json:"dataset"`
	Fields            int     `json:"fields"`
	AccessLogBatches  uint64  `json:"access_log_batches"`
	AccessLogRecords  uint64  `json:"access_log_records"`
	BrokeredErrors    uint64  `json:"brokered_errors"`
	DirectErrors      uint64  `json:"direct_errors"`
	RecordsPerDurable float64 `json:"records_per_durable_write"`
	// CPU time of the whole process (load generator, broker, authority and NATS) per successful call:
	// what each path costs on this machine, whatever the concurrency.
	DirectCPUMicros   float64 `json:"direct_cpu_us_per_op"`
	BrokeredCPUMicros float64 `json:"brokered_cpu_us_per_op"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		asJSON      = fs.Bool("json", false, "print one JSON object")
		concurrency = fs.Int("concurrency", 64, "concurrent callers, the same for both runs")
		duration    = fs.Duration("duration", 10*time.Second, "length of each run")
		warmup      = fs.Duration("warmup", 2*time.Second, "warm-up before each run")
		data        = fs.String("data", "", "data directory (default: a new temporary directory, removed after)")
		cpuProfile  = fs.String("cpuprofile", "", "write a CPU profile of the brokered run to this file")
	)
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
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
	st, err := startStack(ctx, stackOptions{DataDir: dir, Listen: "127.0.0.1:0", Citizens: 1000, Policies: pfs, RandomPorts: true, Logger: logger})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx) }()
	defer func() { stop(); <-done }()

	res, err := bench(ctx, st, *concurrency, *warmup, *duration, *cpuProfile)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(stdout, "Aperture bench: %s, %d fields, %d concurrent callers, %.0fs per run, every brokered call durably logged\n\n",
		res.Dataset, res.Fields, res.Concurrency, res.DurationS)
	fmt.Fprintln(tw, "\tops/s\tp50 ms\tp99 ms\tCPU µs/op\terrors\t")
	fmt.Fprintf(tw, "direct authority Fetch\t%.0f\t%.2f\t%.2f\t%.0f\t%d\t\n", res.DirectOpsPerSec, res.DirectP50Ms, res.DirectP99Ms, res.DirectCPUMicros, res.DirectErrors)
	fmt.Fprintf(tw, "brokered Release\t%.0f\t%.2f\t%.2f\t%.0f\t%d\t\n", res.BrokeredOpsPerSec, res.BrokeredP50Ms, res.BrokeredP99Ms, res.BrokeredCPUMicros, res.BrokeredErrors)
	tw.Flush()
	fmt.Fprintf(stdout, "\nratio brokered/direct: %.2f   access log: %d records in %d durable writes (%.1f per write)\n",
		res.Ratio, res.AccessLogRecords, res.AccessLogBatches, res.RecordsPerDurable)
	return nil
}

func bench(ctx context.Context, st *stack, concurrency int, warmup, duration time.Duration, cpuProfile string) (*benchResult, error) {
	featured := st.Population.Featured()
	if len(featured) == 0 {
		return nil, fmt.Errorf("demo population has no featured citizen")
	}
	citizen := featured[0].ID
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

	// The broker's own identity, so the direct client is served exactly like the broker.
	brokerSrc, err := st.CA.Source("broker", "")
	if err != nil {
		return nil, err
	}
	direct, err := grpc.NewClient(st.AuthorityAddrs[authority], grpc.WithTransportCredentials(credentials.NewTLS(
		mtls.ClientConfig(brokerSrc, mtls.ID(trustDomain, "authority", authority)))))
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	agencySrc, err := st.CA.Source("agency", agency)
	if err != nil {
		return nil, err
	}
	brokered, err := grpc.NewClient(st.Broker.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		mtls.ClientConfig(agencySrc, mtls.ID(trustDomain, "broker", "")))))
	if err != nil {
		return nil, err
	}
	defer brokered.Close()

	bc := brokerv1.NewBrokerServiceClient(brokered)
	cctx := metadata.AppendToOutgoingContext(ctx, server.CaseworkerHeader, "bench")
	opened, err := bc.OpenCase(cctx, &brokerv1.OpenCaseRequest{Journey: journey, CitizenId: citizen})
	if err != nil {
		return nil, fmt.Errorf("open case: %w", err)
	}
	caseID := opened.GetCase().GetId()

	ac := authorityv1.NewAuthorityServiceClient(direct)
	fetchReq := &authorityv1.FetchRequest{
		CitizenId: citizen, Dataset: dataset, FieldMask: &fieldmaskpb.FieldMask{Paths: rule.Fields},
		Context: &authorityv1.AccessContext{AccessId: "bench", CaseId: caseID, Journey: journey, Step: j.Steps[0].ID, Agency: agency, Caseworker: "bench"},
	}
	relReq := &brokerv1.ReleaseRequest{CaseId: caseID, Authority: authority, Dataset: dataset, Fields: rule.Fields}

	directOp := func(ctx context.Context) error { _, err := ac.Fetch(ctx, fetchReq); return err }
	brokeredOp := func(ctx context.Context) error { _, err := bc.Release(ctx, relReq); return err }

	before := st.Broker.AccessLog().Stats()
	cpu0 := processCPU()
	dRate, dLat, dErr := load(ctx, directOp, concurrency, warmup, duration)
	cpu1 := processCPU()
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	cpu2 := processCPU()
	bRate, bLat, bErr := load(cctx, brokeredOp, concurrency, warmup, duration)
	cpu3 := processCPU()
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	after := st.Broker.AccessLog().Stats()

	res := &benchResult{
		DirectOpsPerSec: dRate, BrokeredOpsPerSec: bRate,
		DirectP50Ms: pct(dLat, 0.50), DirectP99Ms: pct(dLat, 0.99),
		BrokeredP50Ms: pct(bLat, 0.50), BrokeredP99Ms: pct(bLat, 0.99),
		Concurrency: concurrency, DurationS: duration.Seconds(),
		Dataset: authority + "." + dataset, Fields: len(rule.Fields),
		AccessLogBatches: after.Batches - before.Batches, AccessLogRecords: after.Records - before.Records,
		BrokeredErrors: bErr, DirectErrors: dErr,
	}
	if dRate > 0 {
		res.Ratio = bRate / dRate
		res.DirectCPUMicros = perOp(cpu1-cpu0, dRate, warmup+duration)
	}
	if bRate > 0 {
		res.BrokeredCPUMicros = perOp(cpu3-cpu2, bRate, warmup+duration)
	}
	if res.AccessLogBatches > 0 {
		res.RecordsPerDurable = float64(res.AccessLogRecords) / float64(res.AccessLogBatches)
	}
	return res, nil
}

// load runs op from concurrency goroutines for warmup, then measures for duration. It returns
// successful operations per second, their latencies and the error count.
func load(ctx context.Context, op func(context.Context) error, concurrency int, warmup, duration time.Duration) (float64, []time.Duration, uint64) {
	var (
		measuring atomic.Bool
		errs      atomic.Uint64
		mu        sync.Mutex
		all       []time.Duration
		wg        sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx)
				d := time.Since(t0)
				if !measuring.Load() {
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
	measuring.Store(true)
	start := time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	return float64(len(all)) / elapsed.Seconds(), all, errs.Load()
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perOp spreads the CPU of a run (warm-up included, at the same rate) over its operations.
func perOp(cpu time.Duration, rate float64, wall time.Duration) float64 {
	return float64(cpu.Microseconds()) / (rate * wall.Seconds())
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return float64(d[i].Microseconds()) / 1000
}
