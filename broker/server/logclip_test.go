package server

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		n        int
		want     string
	}{
		{"short", "field x", 16, "field x"},
		{"exact", "abcd", 4, "abcd"},
		{"long", "abcdef", 4, "abcd…[2 bytes cut]"},
		{"on a rune boundary", "abcæøå", 4, "abc…[6 bytes cut]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clip(tc.in, tc.n)
			if got != tc.want {
				t.Fatalf("clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Fatalf("clip made invalid UTF-8: %q", got)
			}
		})
	}
}

// TestClippedAttributes: a 100 KB reason or cause logs as a bounded line.
func TestClippedAttributes(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	huge := strings.Repeat("a", 100<<10)
	log.Info("request refused", "reason", clipped(huge), "err", clippedErr{errors.New(huge)}, "none", clippedErr{})
	if n := buf.Len(); n > 2*MaxLoggedText+200 {
		t.Fatalf("log line of %d bytes: %.300s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "bytes cut") || !strings.Contains(buf.String(), `none=""`) {
		t.Fatalf("unexpected line: %s", buf.String())
	}
}
