// Package lifecycle runs a process's long-running components under one supervisor, errgroup style:
// the first component to fail — by returning an error, by returning before it was asked to stop, or
// by panicking — stops all the others, and that failure is what the process exits with.
//
// Components belong to stages, and stages stop in the order they were declared: a server stops
// accepting and drains its in-flight calls before the background loops it relies on stop, and those
// before the stores they write are closed (OnStop steps, run last, in order). Nothing stops all at
// once.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Component is one long-running part of a process.
type Component struct {
	// Name says which component failed, in errors and logs.
	Name string
	// Run runs the component until ctx ends, then stops it and returns nil (or ctx's error). It MUST
	// return once ctx ends. Returning earlier, with or without an error, is a failure.
	Run func(ctx context.Context) error
}

// ErrStoppedEarly is the failure of a component whose Run returned nil before it was asked to stop.
var ErrStoppedEarly = errors.New("stopped before it was asked to")

// ErrStuck means a stage did not stop within the stop timeout; the supervisor went on without it.
var ErrStuck = errors.New("did not stop in time")

// PanicError is the failure of a component that panicked. Its message names the component and the
// panic's type, not its value (which may be anything the component held); Stack has the frames.
type PanicError struct {
	Component string
	Value     any
	Stack     string
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("component %s panicked (%T)", e.Component, e.Value)
}

// Options configures a Supervisor.
type Options struct {
	// StopTimeout bounds the wait for each stage to stop (default 30s).
	StopTimeout time.Duration
	Logger      *slog.Logger
}

// Supervisor runs components in stages. Create it with New; add components with Go at any time
// before it stops; Wait until it stops.
type Supervisor struct {
	opts   Options
	stages []*stage

	mu       sync.Mutex
	stopping bool
	failure  error
	closers  []closer
	late     []error       // failures after the first
	stopc    chan struct{} // closed when shutdown must begin
	stopOnce sync.Once
	waitOnce sync.Once
	result   error
}

type stage struct {
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   []error // errors returned while stopping
}

type closer struct {
	name string
	f    func() error
}

// New returns a supervisor whose stages stop in the order given.
func New(opts Options, stages ...string) *Supervisor {
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Supervisor{opts: opts, stopc: make(chan struct{})}
	for _, name := range stages {
		ctx, cancel := context.WithCancel(context.Background())
		s.stages = append(s.stages, &stage{name: name, ctx: ctx, cancel: cancel})
	}
	return s
}

// Go starts c in the named stage. A component added after shutdown began is not started. An unknown
// stage is a programming error and fails the supervisor.
func (s *Supervisor) Go(stageName string, c Component) {
	i := slices.IndexFunc(s.stages, func(st *stage) bool { return st.name == stageName })
	if i < 0 {
		s.fail(fmt.Errorf("component %s: no stage %q", c.Name, stageName))
		return
	}
	st := s.stages[i]
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		s.opts.Logger.Warn("component added during shutdown: not started", "component", c.Name)
		return
	}
	st.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer st.wg.Done()
		err := run(st.ctx, c)
		s.mu.Lock()
		asked := st.ctx.Err() != nil
		if asked && err != nil && !errors.Is(err, context.Canceled) {
			st.errs = append(st.errs, fmt.Errorf("component %s: %w", c.Name, err))
		}
		s.mu.Unlock()
		switch {
		case asked:
		case err == nil:
			s.fail(fmt.Errorf("component %s: %w", c.Name, ErrStoppedEarly))
		default:
			s.fail(fmt.Errorf("component %s: %w", c.Name, err))
		}
	}()
}

// run calls c.Run, turning a panic into a PanicError.
func run(ctx context.Context, c Component) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Component: c.Name, Value: p, Stack: stackFrames()}
		}
	}()
	return c.Run(ctx)
}

// stackFrames is the panicking goroutine's stack as "function file:line" lines, without the argument
// words a runtime stack trace prints.
func stackFrames() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(4, pcs)])
	var sb strings.Builder
	for {
		f, more := frames.Next()
		fmt.Fprintf(&sb, "%s %s:%d\n", f.Function, f.File, f.Line)
		if !more {
			return sb.String()
		}
	}
}

// OnStop adds a step run after every stage has stopped, in the order added: closing the stores the
// components wrote.
func (s *Supervisor) OnStop(name string, f func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, closer{name, f})
}

// fail records the first failure and begins shutdown.
func (s *Supervisor) fail(err error) {
	s.mu.Lock()
	first := s.failure == nil && !s.stopping
	if first {
		s.failure = err
	} else {
		s.late = append(s.late, err)
	}
	s.mu.Unlock()
	if first {
		attrs := []any{"err", err}
		var pe *PanicError
		if errors.As(err, &pe) {
			attrs = append(attrs, "stack", pe.Stack)
		}
		s.opts.Logger.Error("component failed: stopping everything", attrs...)
	}
	s.Stop()
}

// Stop begins an orderly shutdown, as the end of Wait's context does.
func (s *Supervisor) Stop() { s.stopOnce.Do(func() { close(s.stopc) }) }

// Wait blocks until ctx ends, Stop is called or a component fails; then it stops the stages in order,
// runs the OnStop steps and returns the first failure (nil for a requested stop), joined with errors
// of the shutdown itself. Later calls return the same.
func (s *Supervisor) Wait(ctx context.Context) error {
	s.waitOnce.Do(func() {
		select {
		case <-ctx.Done():
		case <-s.stopc:
		}
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		errs := []error{}
		for _, st := range s.stages {
			s.opts.Logger.Debug("stopping stage", "stage", st.name)
			st.cancel()
			stopped := make(chan struct{})
			go func() { st.wg.Wait(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(s.opts.StopTimeout):
				err := fmt.Errorf("stage %s: %w after %v", st.name, ErrStuck, s.opts.StopTimeout)
				s.opts.Logger.Error("stage did not stop in time; going on without it", "stage", st.name, "timeout", s.opts.StopTimeout)
				errs = append(errs, err)
			}
			s.mu.Lock()
			errs = append(errs, st.errs...)
			s.mu.Unlock()
		}
		s.mu.Lock()
		closers := s.closers
		failure := s.failure
		errs = append(errs, s.late...)
		s.mu.Unlock()
		for _, c := range closers {
			if err := c.f(); err != nil {
				s.opts.Logger.Warn("stop step failed", "step", c.name, "err", err)
				errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			}
		}
		s.result = errors.Join(append([]error{failure}, errs...)...)
	})
	return s.result
}
