package accesslog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/accesslog"
)

// TestWatch: a watcher gets its citizen's records once durable, in order, and no one else's; Next
// returns the context's error when it ends, and an error once stopped.
func TestWatch(t *testing.T) {
	l := newEnv(t).open(accesslog.Options{})
	w, err := l.Watch(ctx(t), pseudonym(1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := l.Append(ctx(t), record(i%2, fmt.Sprintf("c%d-%d", i%2, i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"c1-1", "c1-3", "c1-5"} {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := w.Next(c)
		cancel()
		if err != nil || r.GetId() != want || r.GetCitizenPseudonym() != pseudonym(1) {
			t.Fatalf("Next = %v, %v; want %s", r, err, want)
		}
	}
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if r, err := w.Next(c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing new = %v, %v; want the deadline", r, err)
	}
	w.Stop()
	w.Stop()
	if _, err := w.Next(ctx(t)); !errors.Is(err, accesslog.ErrUnavailable) {
		t.Fatalf("Next after Stop: %v", err)
	}
	if _, err := l.Watch(ctx(t), "a.b"); err == nil {
		t.Fatal("Watch accepted a pseudonym that is not one subject token")
	}
}
