package accesslog

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// # Circuit breaker
//
// A stream that lost its quorum does not refuse a write: it never answers, and every caller would
// wait out the append timeout (or its own deadline) before hearing "unavailable". So the first
// failed or timed-out write opens the breaker: from then on Append fails at once with ErrBreakerOpen,
// the records already queued fail with it, and batches still in flight fail as soon as their ack is
// not already there. While open, a prober writes an empty, authenticated batch (no records, so no
// leaf and nothing a citizen sees) through the same committer and stream, backing off from
// probeMinWait to probeMaxWait; the first probe JetStream acknowledges closes the breaker. A probe is
// the only honest test: it proves that a write through the very path the records take is durable
// again, not merely that a leader answers a status request.

// ErrBreakerOpen means a recent write to the log failed and no probe write has succeeded since:
// nothing is released until one does. It wraps ErrUnavailable.
var ErrBreakerOpen = fmt.Errorf("%w: a recent write failed and no probe write has succeeded since", ErrUnavailable)

const (
	probeMinWait = 25 * time.Millisecond
	probeMaxWait = 500 * time.Millisecond
)

type breaker struct {
	mu    sync.Mutex
	open  bool
	since time.Time
	cause error
	// opened is closed when the breaker opens, so batches awaiting their ack stop waiting; a new
	// one is made when it closes.
	opened chan struct{}
	// prober is closed when the prober goroutine has returned (nil if none ever ran).
	prober chan struct{}
}

// BreakerState is the circuit breaker's state, for health and metrics.
type BreakerState struct {
	Open bool
	// Since is when it last opened (zero if it never did).
	Since time.Time
	// Cause is the write error that opened it; nil while closed.
	Cause error
}

// Breaker returns the state of the log's circuit breaker.
func (l *Log) Breaker() BreakerState {
	l.brk.mu.Lock()
	defer l.brk.mu.Unlock()
	st := BreakerState{Open: l.brk.open, Since: l.brk.since}
	if l.brk.open {
		st.Cause = l.brk.cause
	}
	return st
}

// Writable returns nil if the log is taking writes, else why not (wrapping ErrUnavailable): closed,
// or the breaker is open. A caller about to do costly work for a release checks it first, so the
// citizen's data is not fetched for an answer that must be Unavailable anyway.
func (l *Log) Writable() error {
	if l.closingNow() {
		return ErrClosed
	}
	l.brk.mu.Lock()
	defer l.brk.mu.Unlock()
	if l.brk.open {
		return fmt.Errorf("%w (since %s): %w", ErrBreakerOpen, l.brk.since.UTC().Format(time.RFC3339Nano), l.brk.cause)
	}
	return nil
}

// breakerOpen reports whether appends are refused now.
func (l *Log) breakerOpen() bool {
	l.brk.mu.Lock()
	defer l.brk.mu.Unlock()
	return l.brk.open
}

// openedCh is the channel closed when the breaker next opens (already closed if it is open).
func (l *Log) openedCh() <-chan struct{} {
	l.brk.mu.Lock()
	defer l.brk.mu.Unlock()
	return l.brk.opened
}

// trip opens the breaker after a failed write: queued records fail at once and a prober starts.
func (l *Log) trip(cause error) {
	if errors.Is(cause, ErrClosed) {
		return
	}
	l.brk.mu.Lock()
	if l.brk.open {
		l.brk.mu.Unlock()
		return
	}
	l.brk.open, l.brk.since, l.brk.cause = true, time.Now(), cause
	close(l.brk.opened)
	prober := make(chan struct{})
	l.brk.prober = prober
	l.brk.mu.Unlock()
	l.metrics.trips.Add(bgCtx, 1)
	if l.opts.OnBreaker != nil {
		l.opts.OnBreaker(true)
	}
	l.log.Error("access log breaker open: releases are refused at once until a probe write succeeds", "err", cause)

	// Records queued behind the failed write would meet the same fate after a full timeout each.
	l.mu.Lock()
	var queued []*waiter
	kept := l.queue[:0]
	for _, w := range l.queue {
		if w.probe {
			kept = append(kept, w)
		} else {
			queued = append(queued, w)
		}
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	l.mu.Unlock()
	for _, w := range queued {
		l.stats.failed.Add(1)
		w.done <- ErrBreakerOpen
	}
	go l.probeLoop(prober)
}

// reset closes the breaker after a successful probe.
func (l *Log) reset() {
	l.brk.mu.Lock()
	if !l.brk.open {
		l.brk.mu.Unlock()
		return
	}
	since := l.brk.since
	l.brk.open, l.brk.cause = false, nil
	l.brk.opened = make(chan struct{})
	l.brk.mu.Unlock()
	if l.opts.OnBreaker != nil {
		l.opts.OnBreaker(false)
	}
	l.log.Info("access log breaker closed: a probe write is durable, releases resume", "open_for", time.Since(since).Round(time.Millisecond).String())
}

// probeLoop writes probe batches until one is durable or the log closes.
func (l *Log) probeLoop(done chan struct{}) {
	defer close(done)
	wait := probeMinWait
	for {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return
		}
		err := l.probe()
		l.metrics.probe(err)
		switch {
		case err == nil:
			l.reset()
			return
		case errors.Is(err, ErrClosed):
			return
		}
		l.log.Debug("access log probe write failed", "err", err)
		wait = min(2*wait, probeMaxWait)
	}
}

// probe writes one empty batch through the committer and waits for its outcome.
func (l *Log) probe() error {
	w := &waiter{probe: true, done: make(chan error, 1)}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	l.wake()
	return <-w.done
}
