package lifecycle_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/lifecycle"
)

// recorder notes events from several goroutines in order.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// until is a well-behaved component: it runs until asked to stop and notes when it stopped.
func until(name string, r *recorder) lifecycle.Component {
	return lifecycle.Component{Name: name, Run: func(ctx context.Context) error {
		<-ctx.Done()
		r.add("stop " + name)
		return ctx.Err()
	}}
}

func TestFailures(t *testing.T) {
	boom := errors.New("listener closed")
	tests := []struct {
		name  string
		run   func(ctx context.Context) error
		check func(t *testing.T, err error)
	}{
		{"error", func(context.Context) error { return boom }, func(t *testing.T, err error) {
			if !errors.Is(err, boom) || !strings.Contains(err.Error(), "component failing") {
				t.Errorf("Wait = %v, want the component's error, named", err)
			}
		}},
		{"panic", func(context.Context) error { panic("secret value 0101901234") }, func(t *testing.T, err error) {
			var pe *lifecycle.PanicError
			if !errors.As(err, &pe) || pe.Component != "failing" {
				t.Fatalf("Wait = %v, want a PanicError of the component", err)
			}
			if strings.Contains(err.Error(), "0101901234") {
				t.Errorf("the error shows the panic's value: %v", err)
			}
			if !strings.Contains(pe.Stack, "lifecycle_test") {
				t.Errorf("the stack does not show where it panicked:\n%s", pe.Stack)
			}
		}},
		{"returned early", func(context.Context) error { return nil }, func(t *testing.T, err error) {
			if !errors.Is(err, lifecycle.ErrStoppedEarly) {
				t.Errorf("Wait = %v, want ErrStoppedEarly", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := lifecycle.New(lifecycle.Options{}, "serve", "background")
			s.Go("serve", until("server", r))
			s.Go("background", until("loop", r))
			s.Go("background", lifecycle.Component{Name: "failing", Run: tc.run})
			err := s.Wait(context.Background()) // nothing ends it but the failure
			tc.check(t, err)
			if got, want := r.get(), []string{"stop server", "stop loop"}; !slices.Equal(got, want) {
				t.Errorf("stopped %v, want %v", got, want)
			}
			if again := s.Wait(context.Background()); again == nil || again.Error() != err.Error() {
				t.Errorf("second Wait = %v, want %v", again, err)
			}
		})
	}
}

// Stages stop in the order declared, each completely before the next begins, then the stop steps run
// in order: stop accepting and drain, stop the loops, close the log, close NATS.
func TestShutdownOrder(t *testing.T) {
	r := &recorder{}
	s := lifecycle.New(lifecycle.Options{}, "serve", "background")
	loopRunning := make(chan struct{})
	s.Go("background", lifecycle.Component{Name: "loop", Run: func(ctx context.Context) error {
		close(loopRunning)
		<-ctx.Done()
		r.add("stop loop")
		return nil
	}})
	s.Go("serve", lifecycle.Component{Name: "grpc", Run: func(ctx context.Context) error {
		<-ctx.Done()
		r.add("stop accepting")
		time.Sleep(20 * time.Millisecond) // a drain that takes a while: the loops must wait for it
		r.add("drained")
		return nil
	}})
	s.OnStop("close log", func() error { r.add("close log"); return nil })
	s.OnStop("close nats", func() error { r.add("close nats"); return nil })
	<-loopRunning
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait after a requested stop = %v, want nil", err)
	}
	want := []string{"stop accepting", "drained", "stop loop", "close log", "close nats"}
	if got := r.get(); !slices.Equal(got, want) {
		t.Errorf("shutdown order %v, want %v", got, want)
	}
}

func TestStuckStageAndLateErrors(t *testing.T) {
	s := lifecycle.New(lifecycle.Options{StopTimeout: 50 * time.Millisecond}, "serve", "background")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s.Go("serve", lifecycle.Component{Name: "stuck", Run: func(context.Context) error { <-release; return nil }})
	closeErr := errors.New("flush failed")
	s.OnStop("close log", func() error { return closeErr })
	s.Stop()
	err := s.Wait(context.Background())
	if !errors.Is(err, lifecycle.ErrStuck) || !errors.Is(err, closeErr) {
		t.Errorf("Wait = %v, want ErrStuck and the stop step's error", err)
	}
}

func TestUnknownStage(t *testing.T) {
	s := lifecycle.New(lifecycle.Options{}, "serve")
	s.Go("nonesuch", lifecycle.Component{Name: "x", Run: func(ctx context.Context) error { <-ctx.Done(); return nil }})
	if err := s.Wait(context.Background()); err == nil || !strings.Contains(err.Error(), "nonesuch") {
		t.Errorf("Wait = %v, want an error naming the unknown stage", err)
	}
}
