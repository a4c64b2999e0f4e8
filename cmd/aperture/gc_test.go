package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestLowerGCForEmbeddedNATS: without GOGC in the environment the target drops to
// embeddedGCPercent until restored; with GOGC set, or on a host whose heap grows in huge pages, it is
// left alone.
func TestLowerGCForEmbeddedNATS(t *testing.T) {
	current := func() int {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	start := current()
	t.Cleanup(func() { debug.SetGCPercent(start) })
	debug.SetGCPercent(100)

	t.Setenv("GOGC", "100") // restored after the test, then unset for the first case
	os.Unsetenv("GOGC")
	for _, thp := range []string{"madvise", "never", ""} {
		restore := lowerGCForEmbeddedNATS(thp)
		if got := current(); got != embeddedGCPercent {
			t.Fatalf("without GOGC, huge pages %q: target %d, want %d", thp, got, embeddedGCPercent)
		}
		restore()
		if got := current(); got != 100 {
			t.Fatalf("after restore: target %d, want 100", got)
		}
	}
	restore := lowerGCForEmbeddedNATS("always")
	if got := current(); got != 100 {
		t.Fatalf("without GOGC, huge pages always: target %d, want 100 (left alone)", got)
	}
	restore()
	t.Setenv("GODEBUG", "disablethp=1")
	restore = lowerGCForEmbeddedNATS("always")
	if got := current(); got != embeddedGCPercent {
		t.Fatalf("huge pages always but GODEBUG=disablethp=1: target %d, want %d", got, embeddedGCPercent)
	}
	restore()

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	restore = lowerGCForEmbeddedNATS("madvise")
	if got := current(); got != 200 {
		t.Fatalf("with GOGC=200: target %d, want 200 (the environment wins)", got)
	}
	restore()
}
