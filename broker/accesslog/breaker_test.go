package accesslog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/accesslog"
)

// waitWritable waits until the log's breaker is closed again (a probe write was durable).
func waitWritable(t *testing.T, l *accesslog.Log) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for l.Writable() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the log did not become writable again: %v", l.Writable())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBreakerRefusesAtOnceAndProbes: after the first failed write every append fails at once with
// ErrBreakerOpen (no caller waits for a write that cannot succeed); once the server is back a probe
// write closes the breaker, appends succeed, and the probes left no leaf and nothing in any listing.
func TestBreakerRefusesAtOnceAndProbes(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{AppendTimeout: 250 * time.Millisecond})
	for i := range 5 {
		if err := l.Append(ctx(t), record(0, fmt.Sprintf("c0-before-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if st := l.Breaker(); st.Open {
		t.Fatalf("breaker open while the log works: %+v", st)
	}
	e.stop()
	// The first append meets the failure itself.
	if err := l.Append(ctx(t), record(0, "c0-first-fail")); !errors.Is(err, accesslog.ErrUnavailable) {
		t.Fatalf("Append with the server down: %v, want ErrUnavailable", err)
	}
	if st := l.Breaker(); !st.Open || st.Cause == nil {
		t.Fatalf("breaker after a failed write: %+v, want open with a cause", st)
	}
	for i := range 50 {
		begin := time.Now()
		err := l.Append(ctx(t), record(1, fmt.Sprintf("c1-refused-%d", i)))
		if !errors.Is(err, accesslog.ErrBreakerOpen) || !errors.Is(err, accesslog.ErrUnavailable) {
			t.Fatalf("Append with the breaker open: %v, want ErrBreakerOpen", err)
		}
		// Refused before anything is queued or sent: no timer involved, so a generous bound is
		// still orders of magnitude below a write timeout.
		if d := time.Since(begin); d > 50*time.Millisecond {
			t.Fatalf("a refusal took %s", d)
		}
	}
	if err := l.Writable(); !errors.Is(err, accesslog.ErrBreakerOpen) {
		t.Fatalf("Writable with the breaker open: %v", err)
	}
	if s := l.Stats(); s.Refused < 50 {
		t.Fatalf("stats %+v: want at least 50 refused", s)
	}
	time.Sleep(300 * time.Millisecond) // let some probes fail
	e.restart()
	waitWritable(t, l)
	if st := l.Breaker(); st.Open {
		t.Fatalf("breaker still open after Writable: %+v", st)
	}
	if err := l.Append(ctx(t), record(0, "c0-after")); err != nil {
		t.Fatalf("Append after the probe succeeded: %v", err)
	}
	at, _ := logOrder(t, l)
	for id := range at {
		if len(id) > 10 && id[:10] == "c1-refused" {
			t.Fatalf("a refused append %s is in the log", id)
		}
	}
	if _, ok := at["c0-after"]; !ok || len(at) < 6 {
		t.Fatalf("log holds %v, want the five records before, the one after (and perhaps the failed one)", at)
	}
	caughtUp(t, l)
	rep, err := l.VerifyIndex(ctx(t))
	if err != nil || !rep.OK() || rep.Leaves != uint64(len(at)) {
		t.Fatalf("VerifyIndex after probes: %+v, %v (log has %d records)", rep, err, len(at))
	}
	// Probes are batches of their own in ACCESS: more messages than record batches.
	var seqs = map[uint64]bool{}
	if err := l.Records(context.Background(), 1, func(seq uint64, _ int, _ []byte) error { seqs[seq] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx(t), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs <= uint64(len(seqs)) {
		t.Fatalf("ACCESS holds %d messages and %d carry records: no probe write was made", info.State.Msgs, len(seqs))
	}
	t.Logf("stats %+v; %d ACCESS messages, %d with records", l.Stats(), info.State.Msgs, len(seqs))
}
