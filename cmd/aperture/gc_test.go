package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestLowerGCForEmbeddedNATS: without GOGC in the environment the target drops to
// embeddedGCPercent until restored; with GOGC set it is left alone.
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
	restore := lowerGCForEmbeddedNATS()
	if got := current(); got != embeddedGCPercent {
		t.Fatalf("without GOGC: target %d, want %d", got, embeddedGCPercent)
	}
	restore()
	if got := current(); got != 100 {
		t.Fatalf("after restore: target %d, want 100", got)
	}

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	restore = lowerGCForEmbeddedNATS()
	if got := current(); got != 200 {
		t.Fatalf("with GOGC=200: target %d, want 200 (the environment wins)", got)
	}
	restore()
}
