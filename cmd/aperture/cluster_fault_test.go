package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/policies"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// natsCluster is a three-node NATS cluster in this process, on loopback ports that stay the same
// across restarts of a node (its store too), so a restarted node rejoins.
type natsCluster struct {
	t       *testing.T
	dirs    []string
	ports   []int // client ports
	routes  []int // cluster ports
	servers []*server.Server
}

func startNATSCluster(t *testing.T, n int) *natsCluster {
	c := newNATSCluster(t, n)
	for i := range n {
		c.start(i)
	}
	return c
}

// newNATSCluster lays out a cluster of n nodes without starting any.
func newNATSCluster(t *testing.T, n int) *natsCluster {
	c := &natsCluster{t: t, servers: make([]*server.Server, n)}
	for range n {
		c.dirs = append(c.dirs, t.TempDir())
		c.ports = append(c.ports, natstest.FreePort(t))
		c.routes = append(c.routes, natstest.FreePort(t))
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
	})
	return c
}

func (c *natsCluster) start(i int) {
	c.t.Helper()
	var routes []*url.URL
	for j, p := range c.routes {
		if j != i {
			routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
		}
	}
	s, err := server.NewServer(&server.Options{
		ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: c.ports[i],
		JetStream: true, StoreDir: c.dirs[i], NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "aperture-fault", Host: "127.0.0.1", Port: c.routes[i]},
		Routes:  routes,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("node %d not ready", i+1)
	}
	c.servers[i] = s
}

func (c *natsCluster) stop(i int) {
	c.servers[i].Shutdown()
	c.servers[i].WaitForShutdown()
	c.servers[i] = nil
}

func (c *natsCluster) url() string {
	var us []string
	for _, p := range c.ports {
		us = append(us, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	return strings.Join(us, ",")
}

// scrape returns the value of the first sample of metric whose line contains every label given.
func scrape(t *testing.T, addr, metric string, labels ...string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

func readyz(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestClusterQuorumLossFailsPromptly is the fault test of a scaled-out broker: a three-node NATS
// cluster on loopback, streams with three replicas, real callers over mutual TLS releasing under
// load. Two nodes are killed (the streams lose quorum) and later restarted. It asserts that the
// broker refuses promptly (p99 of the refusals' latency at most 250ms), that gRPC health and /readyz
// say NOT_SERVING during the fault and SERVING after, that the metrics show the outage, that every
// release a caller received is in the access log, and that the log verifies as `audit verify` does.
func TestClusterQuorumLossFailsPromptly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node NATS cluster")
	}
	cl := startNATSCluster(t, 3)
	// Connected at once: the broker starts while the cluster is still electing its metadata leader
	// and must wait for it (start-up retry).
	nc, err := nats.Connect(cl.url(), append(broker.NATSOptions("fault-test"), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	st, err := startStack(ctx, stackOptions{
		DataDir: data, Listen: "127.0.0.1:0", Citizens: 100, Policies: policies.Files(), RandomPorts: true,
		NATS: nc, NATSURL: cl.url(), Replicas: 3, MetricsListen: "127.0.0.1:0", AppendTimeout: 250 * time.Millisecond, Logger: logger,
	})
	if err != nil {
		t.Fatalf("start stack on the cluster: %v", err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- st.Run(runCtx) }()
	defer func() {
		stopRun()
		if err := <-runDone; err != nil {
			t.Errorf("stack run: %v", err)
		}
	}()
	metricsAddr := st.Metrics.Addr()

	// Callers: the first step's agency of a journey, on one case, over mutual TLS.
	j := st.Broker.Bundle().Journeys()[0]
	first := j.Steps[0]
	rule := first.Rules[0]
	src, err := st.CA.Source("agency", first.Agency)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(st.Broker.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, mtls.ID(trustDomain, "broker", "")))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := brokerv1.NewBrokerServiceClient(cc)
	healthClient := healthpb.NewHealthClient(cc)
	service := brokerv1.BrokerService_ServiceDesc.ServiceName
	serving := func() healthpb.HealthCheckResponse_ServingStatus {
		hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
		defer hcancel()
		resp, err := healthClient.Check(hctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	waitStatus := func(want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) time.Duration {
		t.Helper()
		begin := time.Now()
		for serving() != want {
			if time.Since(begin) > within {
				t.Fatalf("gRPC health of %s is %v after %s, want %v (failing: %v)", service, serving(), within, want, st.Broker.HealthFailing())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(begin)
	}
	waitStatus(healthpb.HealthCheckResponse_SERVING, 15*time.Second)

	citizen := st.Population.Featured()[0].ID
	opened, err := client.OpenCase(cw("cw-1"), &brokerv1.OpenCaseRequest{Journey: j.ID, CitizenId: citizen})
	if err != nil {
		t.Fatal(err)
	}
	req := &brokerv1.ReleaseRequest{CaseId: opened.GetCase().GetId(), Authority: rule.Authority, Dataset: rule.Dataset}

	type refusal struct {
		at   time.Time
		took time.Duration
	}
	var (
		mu       sync.Mutex
		released []string
		refused  []refusal
		wg       sync.WaitGroup
		stop     = make(chan struct{})
	)
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				begin := time.Now()
				rctx, rcancel := context.WithTimeout(cw("load"), 10*time.Second)
				resp, err := client.Release(rctx, req)
				rcancel()
				took := time.Since(begin)
				mu.Lock()
				switch {
				case err == nil && resp.GetRecord() != nil:
					released = append(released, resp.GetAccessId())
				case err == nil:
					t.Error("a release without a record")
				case status.Code(err) == codes.Unavailable:
					refused = append(refused, refusal{begin, took})
				default:
					t.Errorf("release during the fault: %v, want Unavailable", err)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(2 * time.Millisecond) // a caller retrying, not a spin
				}
			}
		})
	}
	// Case transitions under the same fault: every case whose opening was acknowledged must have its
	// case_opened event in EVENTS, exactly once, after recovery (the outbox relays what the fault held up).
	var openedCases []string
	wg.Go(func() {
		citizens := st.Population.Featured()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			octx, ocancel := context.WithTimeout(cw("opener"), 5*time.Second)
			resp, err := client.OpenCase(octx, &brokerv1.OpenCaseRequest{Journey: j.ID, CitizenId: citizens[i%len(citizens)].ID})
			ocancel()
			if err == nil {
				mu.Lock()
				openedCases = append(openedCases, resp.GetCase().GetId())
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	time.Sleep(time.Second)
	mu.Lock()
	before := len(released)
	mu.Unlock()
	if before == 0 {
		t.Fatal("no release succeeded before the fault; the test proves nothing")
	}
	trips0, _ := scrape(t, metricsAddr, "aperture_accesslog_breaker_trips_total")

	// Quorum loss: two of the three nodes die.
	faultAt := time.Now()
	var kill sync.WaitGroup
	for _, n := range []int{1, 2} {
		kill.Go(func() { cl.stop(n) })
	}
	kill.Wait()
	lostAt := time.Now() // both nodes are gone: no stream has a quorum from here on
	waitStatus(healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	toNotServing := time.Since(faultAt) // from the first kill, both nodes' shutdown included
	if code := readyz(t, metricsAddr); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the fault: %d, want 503", code)
	}
	// Health can turn NOT_SERVING on another store's lost leader a moment before the first append
	// times out (AppendTimeout) and opens the breaker; the breaker must be open soon after.
	breakerOpen := func() (float64, bool) { return scrape(t, metricsAddr, "aperture_accesslog_breaker_open") }
	v, ok := breakerOpen()
	for deadline := time.Now().Add(2 * time.Second); (!ok || v != 1) && time.Now().Before(deadline); v, ok = breakerOpen() {
		time.Sleep(50 * time.Millisecond)
	}
	if !ok || v != 1 {
		t.Errorf("aperture_accesslog_breaker_open during the fault: %v (present %v), want 1 within 2s of NOT_SERVING", v, ok)
	}
	time.Sleep(3 * time.Second) // refusals under load
	if trips, _ := scrape(t, metricsAddr, "aperture_accesslog_breaker_trips_total"); trips <= trips0 {
		t.Errorf("aperture_accesslog_breaker_trips_total %v after the fault, %v before: the outage does not show", trips, trips0)
	}
	if v, ok := scrape(t, metricsAddr, "aperture_release_decisions_total", `decision="unavailable"`); !ok || v == 0 {
		t.Errorf("no unavailable release decisions counted during the fault")
	}

	// Recovery.
	healAt := time.Now()
	cl.start(1)
	cl.start(2)
	waitStatus(healthpb.HealthCheckResponse_SERVING, 40*time.Second)
	toServing := time.Since(healAt) // from the first restart, both nodes' start included
	deadline := time.Now().Add(20 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(cw("after"), 5*time.Second)
		_, err := client.Release(rctx, req)
		rcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no release succeeds after the nodes are back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if code := readyz(t, metricsAddr); code != http.StatusOK {
		t.Errorf("/readyz after recovery: %d, want 200 (failing %v)", code, st.Broker.HealthFailing())
	}

	// Promptness, over the refusals while the quorum was lost (from when both nodes were gone until
	// they were restarted). Refusals while the nodes were going down are a leader failover, not
	// quorum loss; they are reported, not asserted.
	var lat []time.Duration
	var failover time.Duration
	for _, r := range refused {
		switch {
		case r.at.After(lostAt) && r.at.Before(healAt):
			lat = append(lat, r.took)
		case r.at.After(faultAt) && r.at.Before(lostAt):
			failover = max(failover, r.took)
		}
	}
	if len(lat) < 100 {
		t.Fatalf("only %d refusals during the fault: too few to measure", len(lat))
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	t.Logf("fault: %d releases before, %d refusals during quorum loss (p50 %s, p99 %s, max %s; slowest while the nodes went down %s); killing took %s; NOT_SERVING %s after the kill began, SERVING %s after the restart began",
		before, len(lat), p50, p99, worst, failover, lostAt.Sub(faultAt).Round(time.Millisecond), toNotServing.Round(time.Millisecond), toServing.Round(time.Millisecond))
	if p99 > 250*time.Millisecond {
		t.Errorf("p99 time to Unavailable under quorum loss is %s, want at most 250ms", p99)
	}

	// No acknowledged release is missing from the log.
	inLog := map[string]bool{}
	if err := st.Broker.AccessLog().Records(context.Background(), 1, func(_ uint64, _ int, leaf []byte) error {
		var r auditv1.AccessRecord
		if err := proto.Unmarshal(leaf, &r); err != nil {
			return err
		}
		if r.GetDecision() == auditv1.Decision_DECISION_RELEASED {
			inLog[r.GetId()] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range released {
		if !inLog[id] {
			t.Fatalf("access %s was released but is not in the log", id)
		}
	}

	// No event lost: each acknowledged opening's case_opened event is in EVENTS once.
	if len(openedCases) == 0 {
		t.Fatal("no case was opened; the event check proves nothing")
	}
	ejs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	edeadline := time.Now().Add(30 * time.Second)
	for {
		seen, err := openedEvents(ejs)
		missing, dup := 0, 0
		for _, id := range openedCases {
			switch seen[id] {
			case 0:
				missing++
			case 1:
			default:
				dup++
			}
		}
		if err == nil && missing == 0 {
			if dup > 0 {
				t.Fatalf("%d cases have their case_opened event more than once", dup)
			}
			t.Logf("events: all %d acknowledged openings have their case_opened event once", len(openedCases))
			break
		}
		if time.Now().After(edeadline) {
			t.Fatalf("%d of %d acknowledged openings have no case_opened event in %s (%v)", missing, len(openedCases), cases.EventStream, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// What `aperture audit verify` checks: every checkpoint is the log's key's, the tree and tiles
	// are recomputed from the records, and every ACCESS batch carries the broker's MAC.
	lp, err := keys.OpenLocalProvider(filepath.Join(data, "keys"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	vdeadline := time.Now().Add(15 * time.Second)
	for {
		vctx, vcancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := tlog.VerifyWith(vctx, js, tlog.VerifyOptions{Verifiers: []tlog.Verifier{lp.Checkpoints().Verifier()}, Sealer: lp.Sealer()})
		vcancel()
		if err == nil && len(res.Forged) == 0 && res.Latest.Size > 0 {
			t.Logf("audit verify: %d records, %d checkpoints, latest size %d", res.Records, res.Checkpoints, res.Latest.Size)
			break
		}
		if time.Now().After(vdeadline) {
			t.Fatalf("verification after the fault: %+v, %v", res, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestStartWaitsForClusterLeader starts the broker against a cluster of which only one node of
// three runs, so JetStream has no metadata leader and every stream creation would go unanswered.
// The broker waits, saying so, and starts once the other nodes join, instead of failing at its
// first deadline.
func TestStartWaitsForClusterLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node NATS cluster")
	}
	cl := newNATSCluster(t, 3)
	cl.start(0)
	nc, err := nats.Connect(cl.url(), append(broker.NATSOptions("start-test"), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	data := t.TempDir()
	type started struct {
		st  *stack
		err error
	}
	done := make(chan started, 1)
	begin := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		st, err := startStack(ctx, stackOptions{
			DataDir: data, Listen: "127.0.0.1:0", Citizens: 10, Policies: policies.Files(), RandomPorts: true,
			NATS: nc, NATSURL: cl.url(), Replicas: 3, Logger: logger,
		})
		done <- started{st, err}
	}()
	// Long enough for a first attempt to have gone unanswered.
	const alone = 3 * time.Second
	select {
	case r := <-done:
		t.Fatalf("the broker started (err %v) on a single node of three, with no metadata leader", r.err)
	case <-time.After(alone):
	}
	if !strings.Contains(logs.String(), "waiting for JetStream") {
		t.Fatalf("no progress line while waiting for the cluster; log:\n%s", logs.String())
	}
	cl.start(1)
	cl.start(2)
	r := <-done
	if r.err != nil {
		t.Fatalf("the broker did not start once the cluster had a leader: %v\nlog:\n%s", r.err, logs.String())
	}
	runCtx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.st.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-runDone; err != nil {
			t.Errorf("stack run: %v", err)
		}
	}()
	if took := time.Since(begin); took < alone {
		t.Fatalf("started after %s, before the cluster could have had a leader", took)
	}
	if !strings.Contains(logs.String(), "JetStream is available") {
		t.Errorf("no line saying the wait is over; log:\n%s", logs.String())
	}
	s, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Stream(context.Background(), "ACCESS")
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("ACCESS has %d replicas, want 3", got)
	}
}

// openedEvents counts the case_opened events in EVENTS by case id (the first part of their
// Nats-Msg-Id, "<case>:<revision>:<type>:<agency>").
func openedEvents(js jetstream.JetStream) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, cases.EventStream)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]int{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !strings.HasSuffix(m.Subject, "."+cases.EventCaseOpened) {
			continue
		}
		id, _, _ := strings.Cut(m.Header.Get(nats.MsgIdHdr), ":")
		seen[id]++
	}
	return seen, nil
}
