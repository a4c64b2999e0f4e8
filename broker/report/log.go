package report

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/tlog"
)

// timeFormat is how times appear in CSV and Markdown.
const timeFormat = "2006-01-02T15:04:05Z07:00"

// Compute adds up the first cp.Size leaves of the log for period p and checks that they are the
// leaves cp commits to (tlog.Replay). cp must be a checkpoint whose signature the caller verified.
// sealer, if set, also authenticates every batch.
func Compute(ctx context.Context, js jetstream.JetStream, cp tlog.Checkpoint, p Period, sealer accesslog.Sealer) (Figures, error) {
	b, err := NewBuilder(p)
	if err != nil {
		return Figures{}, err
	}
	if err := tlog.Replay(ctx, js, cp, sealer, func(_ uint64, leaf []byte) error { return b.Add(leaf) }); err != nil {
		return Figures{}, fmt.Errorf("report over checkpoint of size %d: %w", cp.Size, err)
	}
	return b.Figures(), nil
}

// New computes the report of period p over the signed checkpoint cp.
func New(ctx context.Context, js jetstream.JetStream, cp tlog.Checkpoint, p Period, sealer accesslog.Sealer) (*Report, error) {
	shown, err := p.In()
	if err != nil {
		return nil, err
	}
	f, err := Compute(ctx, js, cp, p, sealer)
	if err != nil {
		return nil, err
	}
	return &Report{
		Format: Format, Period: shown, Figures: f, NotCovered: NotCovered(),
		Checkpoint: Checkpoint{Origin: cp.Origin, TreeSize: cp.Size, RootHash: base64.StdEncoding.EncodeToString(cp.Root), Note: string(cp.Note)},
	}, nil
}

// ErrMismatch means a report's figures are not the ones its checkpoint's log gives.
var ErrMismatch = errors.New("the report's figures differ from the log")

// MismatchError lists the figures that differ.
type MismatchError struct{ Differences []string }

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%v: %d figure(s):\n  %s", ErrMismatch, len(e.Differences), strings.Join(e.Differences, "\n  "))
}

func (e *MismatchError) Unwrap() error { return ErrMismatch }

// OpenCheckpoint verifies the report's signed checkpoint with the log's verifier keys and checks that
// the origin, size and root the report states are the signed ones.
func (r *Report) OpenCheckpoint(v []tlog.Verifier) (tlog.Checkpoint, error) {
	if len(v) == 0 {
		return tlog.Checkpoint{}, errors.New("no checkpoint verifier key")
	}
	cp, err := tlog.OpenCheckpoint([]byte(r.Checkpoint.Note), v[0], v[1:]...)
	if err != nil {
		return cp, fmt.Errorf("the report's checkpoint: %w", err)
	}
	root, err := base64.StdEncoding.DecodeString(r.Checkpoint.RootHash)
	if err != nil {
		return cp, fmt.Errorf("the report's root hash is not base64: %w", err)
	}
	switch {
	case cp.Origin != r.Checkpoint.Origin:
		return cp, fmt.Errorf("the report states origin %q, its signed checkpoint says %q", r.Checkpoint.Origin, cp.Origin)
	case cp.Size != r.Checkpoint.TreeSize:
		return cp, fmt.Errorf("the report states tree size %d, its signed checkpoint says %d", r.Checkpoint.TreeSize, cp.Size)
	case !bytes.Equal(cp.Root, root):
		return cp, fmt.Errorf("the report states root %s, its signed checkpoint says %s", r.Checkpoint.RootHash, base64.StdEncoding.EncodeToString(cp.Root))
	}
	return cp, nil
}

// Recompute checks the report against the log: its period is written in the time zone it states, its
// checkpoint verifies with v, the log's first TreeSize leaves are the ones it commits to, and the
// figures recomputed from them for the report's period equal the report's (a *MismatchError lists
// those that do not). The caller checks separately that the stored log is consistent with the
// checkpoint (tlog.VerifyWith with it as trusted).
func (r *Report) Recompute(ctx context.Context, js jetstream.JetStream, v []tlog.Verifier, sealer accesslog.Sealer) (Figures, error) {
	if r.Format != Format {
		return Figures{}, fmt.Errorf("not a %s report (format %q)", Format, r.Format)
	}
	if err := r.Period.statedIn(); err != nil {
		return Figures{}, err
	}
	cp, err := r.OpenCheckpoint(v)
	if err != nil {
		return Figures{}, err
	}
	f, err := Compute(ctx, js, cp, r.Period, sealer)
	if err != nil {
		return Figures{}, err
	}
	if d := Diff(r.Figures, f); len(d) > 0 {
		return f, &MismatchError{Differences: d}
	}
	return f, nil
}

// statedIn checks that the period's boundaries are written with the offsets of the time zone the
// report states: a report whose zone was changed afterwards would name a period it was not made for.
func (p Period) statedIn() error {
	loc, err := p.Location()
	if err != nil {
		return err
	}
	for _, t := range []time.Time{p.From, p.To} {
		_, stated := t.Zone()
		if _, want := t.In(loc).Zone(); stated != want {
			return fmt.Errorf("the report's period boundary %s is not written in its time zone %s", t.Format(time.RFC3339), p.zone())
		}
	}
	return nil
}

// Decode reads a report in its JSON form, refusing unknown fields (a report with a figure this
// version does not know cannot be verified by it).
func Decode(rd io.Reader) (*Report, error) {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	if r.Format != Format {
		return nil, fmt.Errorf("read report: format %q, want %q", r.Format, Format)
	}
	if err := r.Period.Validate(); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	return &r, nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
