package main

import (
	"os"
	"runtime/debug"
	"strings"
)

// embeddedGCPercent is the garbage collector's target (GOGC) for a process that runs the NATS server
// itself: the broker with the embedded server, dev and bench. The server's file store keeps the
// write cache of every stream's newest block in the Go heap (up to 8 MB each, without pointers),
// which makes up most of the live heap; at Go's default of 100 the heap then grows to twice that,
// into pages the process has not touched yet. 50 keeps it smaller, and the tail with it. aperture
// bench, alternating pairs, GOGC 100 against 50: with GOGC set for the whole process, six pairs,
// brokered p99 26.5–31.9 against 19.5–23.6 ms, CPU per release mean 164 against 159 µs; as built
// (the brokered run only), three pairs, p99 25.6–34.9 against 20.4–23.3 ms, CPU 147–169 against
// 143–173 µs, releases/s within the noise. 25 cost more CPU on every path (three pairs against 50:
// brokered 196–210 against 142–178 µs, proxy 115–122 against 78–94).
//
// What costs is the first touch of each page: ~9 µs a fault on this project's 2-core virtual
// machine, ~0.6 faults a release in aperture bench's brokered run. Where the kernel backs anonymous
// memory with transparent huge pages (mode "always"; Go itself no longer asks for them) the heap
// grows in 2 MB pages, a release takes ~0.07 faults, and Go's default costs less than 50, so the
// target is left alone. Brokered runs of aperture bench, alternating pairs, GOGC 100 against 50:
// with "always", 11,128–11,335 against 10,369–10,582 releases/s, 144–146 against 150–155 µs per
// release, p99 17.0–18.7 against 17.7–19.0 ms; with "madvise", 9,186–9,650 against 9,518–9,903
// releases/s, p99 30.4–31.4 against 20.3–21.5 ms.
//
// aperture bench sets it for its brokered runs only: the direct and proxy rows stand for processes
// without NATS, where it would only add collections (it slowed them by ~15 % when set for the whole
// run).
const embeddedGCPercent = 50

// lowerGCForEmbeddedNATS sets embeddedGCPercent unless the environment sets GOGC, which wins, or the
// host's transparent huge page mode thp (hostTHP) is "always" and GODEBUG does not turn them off for
// this process, and returns what restores the previous target.
func lowerGCForEmbeddedNATS(thp string) (restore func()) {
	_, set := os.LookupEnv("GOGC")
	hugePages := thp == "always" && !strings.Contains(os.Getenv("GODEBUG"), "disablethp=1")
	if set || hugePages {
		return func() {}
	}
	old := debug.SetGCPercent(embeddedGCPercent)
	return func() { debug.SetGCPercent(old) }
}

// hostTHP is the kernel's transparent huge page mode, or "" where it cannot be read.
func hostTHP() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return ""
	}
	return thpMode(string(b))
}

// thpMode picks the selected mode, the bracketed word, out of a line like "always [madvise] never".
func thpMode(line string) string {
	_, rest, ok := strings.Cut(line, "[")
	if !ok {
		return ""
	}
	mode, _, ok := strings.Cut(rest, "]")
	if !ok {
		return ""
	}
	return mode
}
