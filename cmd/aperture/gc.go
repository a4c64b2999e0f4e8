package main

import (
	"os"
	"runtime/debug"
)

// embeddedGCPercent is the garbage collector's target (GOGC) for a process that runs the NATS server
// itself: the broker with the embedded server, dev and bench. The server's file store keeps the
// write cache of every stream's newest block in the Go heap (up to 8 MB each, without pointers),
// which makes up most of the live heap; at Go's default of 100 the heap then grows to twice that,
// into pages the process has not touched yet. 50 keeps it smaller, and the tail with it.
//
// aperture bench sets it for its brokered runs only: the direct and proxy rows stand for processes
// without NATS, where it would only add collections (it slowed them by ~15 % when set for the whole
// run).
//
// aperture bench, alternating pairs, GOGC 100 against 50: with GOGC set for the whole process, six
// pairs, brokered p99 26.5–31.9 against 19.5–23.6 ms, CPU per release mean 164 against 159 µs; as
// built (the brokered run only), three pairs, p99 25.6–34.9 against 20.4–23.3 ms, CPU 147–169
// against 143–173 µs, releases/s within the noise. 25 cost more CPU on every path (three pairs
// against 50: brokered 196–210 against 142–178 µs, proxy 115–122 against 78–94).
const embeddedGCPercent = 50

// lowerGCForEmbeddedNATS sets embeddedGCPercent unless the environment sets GOGC, which wins, and
// returns what restores the previous target.
func lowerGCForEmbeddedNATS() (restore func()) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return func() {}
	}
	old := debug.SetGCPercent(embeddedGCPercent)
	return func() { debug.SetGCPercent(old) }
}
