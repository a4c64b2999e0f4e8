package tlog_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/tlog"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// benchSize is the tree size of the proof and verify benchmarks: APERTURE_TLOG_BENCH_N, default
// 100,000 (1,000,000 takes about ten times as long to set up).
func benchSize(b *testing.B) int {
	if s := os.Getenv("APERTURE_TLOG_BENCH_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	return 100_000
}

// fill writes n records straight into ACCESS in batches of 512, as the committer would under load,
// without the per-append round trips that would dominate the set-up time.
func fill(b *testing.B, js jetstream.JetStream, from, n int) {
	b.Helper()
	fillWith(b, js, from, n, record)
}

func fillWith(b *testing.B, js jetstream.JetStream, from, n int, record func(int) *auditv1.AccessRecord) {
	b.Helper()
	var futures []jetstream.PubAckFuture
	for i := from; i < from+n; {
		var batch auditv1.AccessBatch
		for ; i < from+n && len(batch.Records) < 512; i++ {
			leaf, err := proto.MarshalOptions{Deterministic: true}.Marshal(record(i))
			if err != nil {
				b.Fatal(err)
			}
			batch.Records = append(batch.Records, leaf)
		}
		data, err := accesslog.SealBatch(testSealer, batch.Records)
		if err != nil {
			b.Fatal(err)
		}
		f, err := js.PublishAsync(accesslog.LogSubject, data)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
}

// bigTree returns an environment with a tree of benchSize leaves, integrated and checkpointed.
func bigTree(b *testing.B) (*env, int) {
	n := benchSize(b)
	e := newEnv(b)
	start := time.Now()
	fill(b, e.js, 0, n)
	filled := time.Since(start)
	in, err := tlog.StartIntegrator(ctx(b), e.tree, e.log, e.signer, tlog.IntegratorOptions{Interval: 10 * time.Millisecond, LeaseTTL: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(in.Close)
	start = time.Now()
	deadline := start.Add(10 * time.Minute)
	for {
		cp, err := e.tree.LatestCheckpoint(context.Background())
		if err == nil && cp.Size >= uint64(n) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("tree of %d not integrated in time", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Logf("%d records: written in %s, integrated in %s (%.0f records/s)", n, filled.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
	return e, n
}

// BenchmarkInclusionProof measures one inclusion proof for a random leaf, read from the stored
// tiles, and reports p50 and p99.
func BenchmarkInclusionProof(b *testing.B) {
	e, n := bigTree(b)
	cp := e.lastCheckpoint(b)
	h := rfc6962.DefaultHasher
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		index := rand.Uint64N(uint64(n))
		start := time.Now()
		p, err := e.tree.InclusionProof(context.Background(), index, cp.Size)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if i%64 == 0 {
			lh, err := e.tree.LeafHash(context.Background(), index)
			if err != nil {
				b.Fatal(err)
			}
			if err := proof.VerifyInclusion(h, index, cp.Size, lh, p, cp.Root); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(n), "leaves")
}

// reportLatency reports the p50 and p99 of lat.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkLeafByID measures finding a random access id's leaf when every second of the log holds
// APERTURE_TLOG_BENCH_IDS_PER_SEC ids (default 10,500, Denmark's estimated peak in the README's
// capacity model): the lookup reads all of that second's lookup messages.
func BenchmarkLeafByID(b *testing.B) {
	perSec := 10_500
	if s := os.Getenv("APERTURE_TLOG_BENCH_IDS_PER_SEC"); s != "" {
		var err error
		if perSec, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	n := 5 * perSec
	id := func(i int) string { return accessIDAt(1_700_000_000_000+int64(i)*1000/int64(perSec), uint64(i)) }
	e := newEnv(b)
	fillWith(b, e.js, 0, n, func(i int) *auditv1.AccessRecord {
		r := record(i)
		r.Id = id(i)
		return r
	})
	e.integratorWith(b, "bench", tlog.IntegratorOptions{})
	e.waitCheckpoint(b, uint64(n))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		_, err := e.tree.LeafByID(context.Background(), id(rand.IntN(n)))
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(perSec), "ids/s")
}

// BenchmarkVerify measures a full `audit verify`: every record re-hashed, every checkpoint checked.
func BenchmarkVerify(b *testing.B) {
	e, n := bigTree(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := tlog.Verify(context.Background(), e.js, e.signer.Verifier())
		if err != nil {
			b.Fatal(err)
		}
		if res.Records != uint64(n) {
			b.Fatalf("verified %d records, want %d", res.Records, n)
		}
	}
	b.ReportMetric(float64(n), "leaves")
}

// BenchmarkAppend measures concurrent Append throughput with the integrator off and on: the tree
// must not slow the hot path down.
func BenchmarkAppend(b *testing.B) {
	for _, integrate := range []bool{false, true} {
		b.Run("integration="+strconv.FormatBool(integrate), func(b *testing.B) {
			e := newEnv(b)
			if integrate {
				in, err := tlog.StartIntegrator(ctx(b), e.tree, e.log, e.signer, tlog.IntegratorOptions{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(in.Close)
			}
			var mu sync.Mutex
			next := 0
			b.SetParallelism(64)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if err := e.log.Append(context.Background(), record(i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
			if integrate {
				b.StopTimer()
				// The integrator must keep up: the checkpoint reaches the log's size within a few
				// intervals after the load stops.
				loadEnd := time.Now()
				deadline := loadEnd.Add(30 * time.Second)
				for {
					cp, err := e.tree.LatestCheckpoint(context.Background())
					if err == nil && cp.Size >= uint64(b.N) {
						b.ReportMetric(float64(time.Since(loadEnd).Milliseconds()), "catch-up-ms")
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("integrator did not catch up with %d records", b.N)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
}
