package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	brokerserver "github.com/aperture-gov/aperture/broker/server"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// scaleOutResult is what `aperture bench --cluster N --brokers M --json` prints: brokered Release
// throughput with 1 to M broker replicas sharing one NATS cluster of N nodes.
type scaleOutResult struct {
	NATSNodes   int     `json:"nats_nodes"`
	Replicas    int     `json:"stream_replicas"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"duration_s"`
	Citizens    int     `json:"citizens"`
	Cases       int     `json:"cases"`
	// CPUs is how many cores the whole cluster (NATS nodes, brokers, authorities, load) shares.
	CPUs int `json:"cpus"`
	// HostTHP is the kernel's transparent huge page mode, as in benchResult.
	HostTHP string        `json:"host_thp"`
	Runs    []scaleOutRun `json:"runs"`
}

// scaleOutRun is one run with Brokers replicas taking the load, round robin by caller.
type scaleOutRun struct {
	Brokers   int     `json:"brokers"`
	OpsPerSec float64 `json:"brokered_ops_per_sec"`
	P50Ms     float64 `json:"brokered_p50_ms"`
	P99Ms     float64 `json:"brokered_p99_ms"`
	// CPUMicros is the CPU of the whole process per successful call: every node, broker and authority.
	CPUMicros float64 `json:"cpu_us_per_op"`
	// Faults is the whole process's page faults per successful call, as in benchResult.
	Faults            float64 `json:"faults_per_op"`
	Errors            uint64  `json:"errors"`
	AccessLogRecords  uint64  `json:"access_log_records"`
	AccessLogBatches  uint64  `json:"access_log_batches"`
	RecordsPerDurable float64 `json:"records_per_durable_write"`
	// IndexFailures counts failed attempts of the replicas' indexers during the run (each is retried,
	// then the index is repaired against the log): replicas contending for the index show here.
	IndexFailures uint64 `json:"index_failures"`
	// IndexLagBatches is how many ACCESS batches the index had yet to take in when the run ended.
	IndexLagBatches uint64 `json:"index_lag_batches"`
	// Stages is where the calls' time went inside the brokers, summed over the replicas.
	Stages []stageFigure `json:"stages"`
}

// benchScaleOut starts a NATS cluster of nodes on loopback (JetStream, fsync always as in
// deploy/nats), the stack's first broker with the authorities on it, and brokers-1 more broker
// replicas on the same cluster and keys, then runs the brokered load on 1, 2, … brokers replicas in
// turn. All of it shares this machine's cores: the figures show what replication and more replicas
// cost, not what more machines gain.
func benchScaleOut(ctx context.Context, dir string, nodes, brokers int, o benchOptions, logger *slog.Logger) (*scaleOutResult, error) {
	// The NATS nodes run in this process too (on a real cluster they are processes of their own).
	thp := hostTHP()
	defer lowerGCForEmbeddedNATS(thp)()
	urls, stopCluster, err := startBenchCluster(filepath.Join(dir, "nats-cluster"), nodes)
	if err != nil {
		return nil, err
	}
	defer stopCluster()
	pfs, err := policyFS("")
	if err != nil {
		return nil, err
	}
	population := max(1000, o.Citizens)
	var stacks []*stack
	defer func() {
		for i := len(stacks) - 1; i >= 0; i-- {
			stacks[i].Close()
		}
	}()
	first := filepath.Join(dir, "broker-1")
	for i := range brokers {
		bdir := filepath.Join(dir, "broker-"+strconv.Itoa(i+1))
		so := stackOptions{DataDir: bdir, Listen: "127.0.0.1:0", Citizens: population, Policies: pfs, RandomPorts: true, Logger: logger,
			NATSURL: urls, InsecureNATS: true, Replicas: nodes, AppendTimeout: scaleOutAppendTimeout, IndexShards: o.IndexShards}
		if i > 0 {
			// A replica: the same keys and development CA as the first broker, and its authorities.
			for _, sub := range []string{"keys", "pki"} {
				if err := copyDir(filepath.Join(first, sub), filepath.Join(bdir, sub)); err != nil {
					return nil, fmt.Errorf("broker replica %d: %w", i+1, err)
				}
			}
			so.Authorities = stacks[0].AuthorityAddrs
		}
		st, err := startStack(ctx, so)
		if err != nil {
			return nil, fmt.Errorf("broker replica %d: %w", i+1, err)
		}
		st.startBroker()
		stacks = append(stacks, st)
	}

	const journey, authority, dataset = "sickness-benefit", "population", "person"
	st := stacks[0]
	j, ok := st.Broker.Bundle().Journey(journey)
	if !ok {
		return nil, fmt.Errorf("policy has no journey %q", journey)
	}
	rule, ok := j.Steps[0].Rule(authority, dataset)
	if !ok {
		return nil, fmt.Errorf("first step of %s releases nothing from %s.%s", journey, authority, dataset)
	}
	citizens := st.Population.IDs()
	if o.Citizens > 0 {
		citizens = citizens[:min(o.Citizens, len(citizens))]
	}
	agencySrc, err := st.CA.Source("agency", j.Steps[0].Agency)
	if err != nil {
		return nil, err
	}
	creds := grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(agencySrc, mtls.ID(trustDomain, "broker", ""))))
	clients := make([]brokerv1.BrokerServiceClient, len(stacks))
	for i, s := range stacks {
		cc, err := grpc.NewClient(s.Broker.Addr(), creds)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		clients[i] = brokerv1.NewBrokerServiceClient(cc)
	}
	cctx := metadata.AppendToOutgoingContext(ctx, brokerserver.CaseworkerHeader, "bench")
	targets, err := openBenchCases(cctx, clients[0], citizens, o.CasesPer, journey)
	if err != nil {
		return nil, err
	}
	for i := range targets {
		targets[i].release.Authority, targets[i].release.Dataset, targets[i].release.Fields = authority, dataset, rule.Fields
	}

	res := &scaleOutResult{NATSNodes: nodes, Replicas: nodes, Concurrency: o.Concurrency, DurationS: o.Duration.Seconds(),
		Citizens: len(citizens), Cases: len(targets), CPUs: runtime.NumCPU(), HostTHP: thp}
	wall := o.Warmup + o.Duration
	for k := 1; k <= brokers; k++ {
		op := func(ctx context.Context, i int) error {
			_, err := clients[i%k].Release(ctx, targets[i%len(targets)].release)
			return err
		}
		if err := settle(ctx, stacks[0].Broker); err != nil {
			return nil, err
		}
		before := logStats(stacks)
		gatherers := make([]prometheus.Gatherer, len(stacks))
		for i, s := range stacks {
			gatherers[i] = s.telemetry.Gatherer()
		}
		stop := func() error { return nil }
		if k == 1 {
			// The one-broker round is the one worth profiling: more replicas on the same cores only
			// add contention.
			var err error
			if stop, err = startProfiles(o.CPUProfile, o.MemProfile); err != nil {
				return nil, err
			}
		}
		use0 := processUsage()
		var stages0 histSnapshot
		var stagesErr error
		rate, lat, errs := load(cctx, op, o.Concurrency, o.Warmup, o.Duration, func() {
			stages0, stagesErr = snapshotStages(gatherers...)
		})
		use1 := processUsage()
		stages1, err := snapshotStages(gatherers...)
		if err = cmp.Or(stagesErr, err); err != nil {
			return nil, err
		}
		if err := stop(); err != nil {
			return nil, fmt.Errorf("profile: %w", err)
		}
		after := logStats(stacks)
		run := scaleOutRun{Brokers: k, OpsPerSec: rate, P50Ms: pct(lat, 0.50), P99Ms: pct(lat, 0.99), Errors: errs,
			AccessLogRecords: after[0] - before[0], AccessLogBatches: after[1] - before[1], IndexFailures: after[2] - before[2],
			Stages: stagesBetween(stages0, stages1)}
		if rate > 0 {
			run.CPUMicros, run.Faults = use1.perOp(use0, rate, wall)
		}
		if run.AccessLogBatches > 0 {
			run.RecordsPerDurable = float64(run.AccessLogRecords) / float64(run.AccessLogBatches)
		}
		lag, err := st.Broker.AccessLog().IndexLag(ctx)
		if err != nil {
			return nil, fmt.Errorf("index lag after the run with %d brokers: %w", k, err)
		}
		run.IndexLagBatches = lag.Batches
		res.Runs = append(res.Runs, run)
	}
	return res, nil
}

// logStats sums the access log's durable records, batches and indexer failures over every broker
// replica.
func logStats(stacks []*stack) [3]uint64 {
	var n [3]uint64
	for _, s := range stacks {
		st := s.Broker.AccessLog().Stats()
		n[0] += st.Records
		n[1] += st.Batches
		n[2] += st.IndexFailures
	}
	return n
}

func printScaleOut(w io.Writer, res *scaleOutResult) {
	fmt.Fprintf(w, "Aperture scale-out bench: %d-node NATS cluster on loopback (streams replicated %d ways, fsync always), %d cases of %d citizens, %d concurrent callers, %.0fs per run\n",
		res.NATSNodes, res.Replicas, res.Cases, res.Citizens, res.Concurrency, res.DurationS)
	fmt.Fprintf(w, "Every node, broker and authority shares this machine's %d cores: more replicas show their overhead here, not the speed-up of more machines.\n\n", res.CPUs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "brokers\tops/s\tp50 ms\tp99 ms\tCPU µs/op\tfaults/op\trecords/write\terrors\tindexer failures\tindex lag (batches)\t")
	for _, r := range res.Runs {
		fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.1f\t%d\t%d\t%d\t\n", r.Brokers, r.OpsPerSec, r.P50Ms, r.P99Ms, r.CPUMicros, r.Faults, r.RecordsPerDurable, r.Errors, r.IndexFailures, r.IndexLagBatches)
	}
	tw.Flush()
	if res.HostTHP != "" {
		fmt.Fprintf(w, "host: transparent huge pages %q (the Go heap grows in 2 MB pages only with \"always\")\n", res.HostTHP)
	}
	fmt.Fprintf(w, "\nwhere a call's time went inside the brokers (their own histograms; mean / p99 ms, p99 to a bucket's resolution):\n\n")
	fmt.Fprint(tw, "brokers\t")
	for _, src := range releaseStages() {
		fmt.Fprintf(tw, "%s\t", src.stage)
	}
	fmt.Fprintln(tw)
	for _, r := range res.Runs {
		fmt.Fprintf(tw, "%d\t", r.Brokers)
		for _, src := range releaseStages() {
			i := slices.IndexFunc(r.Stages, func(f stageFigure) bool { return f.Stage == src.stage })
			if i < 0 {
				fmt.Fprint(tw, "-\t")
				continue
			}
			fmt.Fprintf(tw, "%.2f / %.2f\t", r.Stages[i].Mean, r.Stages[i].P99)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// scaleOutAppendTimeout is the brokers' access log append timeout in the scale-out bench. Three nodes
// and three brokers on one small host can take longer than the production 250 ms for a replicated
// write under full load; the bench measures throughput, so it waits rather than counting refusals.
const scaleOutAppendTimeout = 2 * time.Second

// startBenchCluster starts a JetStream cluster of n nodes in this process on loopback, with stores
// under dir, and returns its client URLs and a function that stops it. Every node routes to the
// first (a JetStream cluster needs configured routes, the first node's to itself), and route gossip
// completes the mesh; so only the first node's route port is chosen in advance, and bound at once,
// while every other port is one the server picks itself (nothing can take it between choosing and
// binding). The nodes fsync every write (sync_interval: always, as deploy/nats configures them) and,
// being loopback-only and throwaway, have neither TLS nor authentication.
func startBenchCluster(dir string, n int) (string, func(), error) {
	seedPort, err := freeLoopbackPort()
	if err != nil {
		return "", nil, err
	}
	seed := []*url.URL{{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(seedPort))}}
	var servers []*server.Server
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	var clientURLs []string
	for i := range n {
		routePort := server.RANDOM_PORT
		if i == 0 {
			routePort = seedPort
		}
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("bench-n%d", i+1), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), SyncAlways: true, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "aperture-bench", Host: "127.0.0.1", Port: routePort},
			Routes:  seed,
		})
		if err != nil {
			stop()
			return "", nil, fmt.Errorf("NATS node %d: %w", i+1, err)
		}
		s.Start()
		servers = append(servers, s)
		if !s.ReadyForConnections(30 * time.Second) {
			stop()
			return "", nil, fmt.Errorf("NATS node %d not ready after 30s", i+1)
		}
		clientURLs = append(clientURLs, s.ClientURL())
	}
	return strings.Join(clientURLs, ","), stop, nil
}

// freeLoopbackPort returns a loopback port free now, for a listener bound right after.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// copyDir copies the regular files of src (recursively) to dst, keeping their permissions: key
// files stay 0600.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}
