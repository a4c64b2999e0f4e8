package server

import (
	"fmt"
	"log/slog"
	"unicode/utf8"
)

// MaxLoggedText bounds request-derived text (refusal reasons that quote a field path, a dataset or
// an id the caller sent, and the causes behind them) in a log line: a caller must not be able to turn
// a 100 KB field path into a 100 KB log line. Citizen ids and field values never reach these texts
// at all (see package refusal); this bounds what may.
const MaxLoggedText = 256

// MaxStatusText bounds the message of a refusal returned to a caller: long enough for every reason
// the broker writes, short enough that an oversized request is not echoed back whole.
const MaxStatusText = 1024

// clipped is request-derived text for a log attribute; it logs at most MaxLoggedText bytes.
type clipped string

// LogValue implements slog.LogValuer.
func (c clipped) LogValue() slog.Value { return slog.StringValue(clip(string(c), MaxLoggedText)) }

// clippedErr is an error for a log attribute, clipped like clipped; a nil error logs as "".
type clippedErr struct{ err error }

// LogValue implements slog.LogValuer.
func (c clippedErr) LogValue() slog.Value {
	if c.err == nil {
		return slog.StringValue("")
	}
	return slog.StringValue(clip(c.err.Error(), MaxLoggedText))
}

// clip cuts s to at most n bytes on a UTF-8 boundary and says how much was cut, so a reader of the
// log knows the text was longer.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("…[%d bytes cut]", len(s)-i)
}
