package accesslog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/accesslog"
)

// startLimited starts a real NATS server whose JetStream store may hold at most maxStore bytes
// (max_file_store): when the log and index fill it, writes fail as on a full disk.
func startLimited(t *testing.T, dir string, port int, maxStore int64) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, JetStreamMaxStore: maxStore,
		SyncAlways: true, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	return s
}

// TestDiskFullMidLoad fills the NATS store under load (appends to the log and index writes start
// failing), then restarts the server with room again: every append that was acknowledged is in
// the log and in its citizen's listing, exactly once, and VerifyIndex finds no difference.
func TestDiskFullMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a NATS store")
	}
	dir := t.TempDir()
	srv := startLimited(t, dir, -1, 400<<10)
	port := srv.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect("nats://127.0.0.1:"+strconv.Itoa(port), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sealer := newSealer(t)
	opts := accesslog.Options{IndexShards: testShards, Sealer: sealer, PublishTimeout: time.Second, AppendTimeout: 250 * time.Millisecond}
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	l, err := accesslog.Open(ctx(t), js, opts)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu     sync.Mutex
		acked  = map[string]int{} // id → citizen
		failed int
		failAt []time.Duration // how long each failed append took to fail
		wg     sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			fails := 0
			for i := 0; fails < 20 && i < 100_000; i++ {
				c := (g + i) % 4
				id := fmt.Sprintf("c%d-g%d-%d", c, g, i)
				begin := time.Now()
				err := l.Append(context.Background(), record(c, id))
				took := time.Since(begin)
				mu.Lock()
				switch {
				case err == nil:
					acked[id] = c
				case errors.Is(err, accesslog.ErrUnavailable):
					failed++
					fails++
					failAt = append(failAt, took)
				default:
					t.Errorf("Append: %v", err)
					fails = 20
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(acked) == 0 || failed == 0 {
		t.Fatalf("%d appends acknowledged, %d failed: the store never filled (or never worked)", len(acked), failed)
	}
	slices.Sort(failAt)
	p99 := failAt[len(failAt)*99/100]
	t.Logf("store full after %d acknowledged appends (%d refused, p99 time to fail %s, max %s); stats %+v",
		len(acked), failed, p99, failAt[len(failAt)-1], l.Stats())
	// A full store refuses at once and the breaker keeps later appends from trying: no caller waits
	// for a write that cannot be made.
	if p99 > 250*time.Millisecond {
		t.Errorf("p99 time to fail with the store full is %s, want at most 250ms", p99)
	}
	l.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	// Room again.
	srv = startLimited(t, dir, port, 1<<30)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	deadline := time.Now().Add(10 * time.Second)
	for nc.Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The client reconnects before the restarted server's JetStream answers; wait for it.
	for {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(c)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream does not answer after the restart: %v", err)
		}
	}
	l, err = accesslog.Open(ctx(t), js, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	caughtUp(t, l)

	inLog := map[string]bool{}
	if err := l.Records(ctx(t), 1, func(_ uint64, _ int, lf []byte) error {
		inLog[string(lf)] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	listed := map[string]int{}
	for c := range 4 {
		for _, en := range listEntries(t, l, pseudonym(c)) {
			listed[en.Record.GetId()]++
		}
	}
	for id, c := range acked {
		if !inLog[string(leaf(t, record(c, id)))] {
			t.Fatalf("acknowledged record %s is not in the log", id)
		}
		if listed[id] != 1 {
			t.Fatalf("acknowledged record %s is listed %d times after recovery, want once", id, listed[id])
		}
	}
	rep, err := l.VerifyIndex(ctx(t))
	if err != nil || !rep.OK() || rep.Leaves != uint64(len(inLog)) {
		t.Fatalf("VerifyIndex after recovery: %+v, %v (log has %d leaves)", rep, err, len(inLog))
	}
	t.Logf("after recovery: %d leaves, %d listed, all %d acknowledged records listed once", rep.Leaves, len(listed), len(acked))
}
