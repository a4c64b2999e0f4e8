package breakglass_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/breakglass"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

func open(t *testing.T) *breakglass.Store {
	t.Helper()
	s, err := breakglass.Open(context.Background(), natstest.JetStream(t), breakglass.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReserveLimitsPerCaseworker: at most limit uses in the window, per caseworker, also when uses race
// (compare-and-set), and uses older than the window no longer count.
func TestReserveLimitsPerCaseworker(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const limit = 3
	var wg sync.WaitGroup
	results := make(chan error, 2*limit)
	for range 2 * limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Reserve(ctx, "health", "doc-1", limit, 24*time.Hour, now)
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	ok, limited := 0, 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, breakglass.ErrRateLimited):
			limited++
		default:
			t.Errorf("reserve: %v", err)
		}
	}
	if ok != limit || limited != limit {
		t.Fatalf("%d reserved, %d limited; want %d and %d", ok, limited, limit, limit)
	}
	if left, err := s.Reserve(ctx, "health", "doc-2", limit, 24*time.Hour, now); err != nil || left != limit-1 {
		t.Errorf("another caseworker: %d left, %v", left, err)
	}
	if left, err := s.Reserve(ctx, "health", "doc-1", limit, 24*time.Hour, now.Add(25*time.Hour)); err != nil || left != limit-1 {
		t.Errorf("after the window: %d left, %v", left, err)
	}
}

// TestReviewClosesOnce: a queued review closes once, after its closure is logged; a failed log
// closes nothing.
func TestReviewClosesOnce(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if rs, err := s.List(ctx, true); err != nil || len(rs) != 0 {
		t.Fatalf("empty queue: %v, %v", rs, err)
	}
	if err := s.Queue(ctx, &breakglass.Review{AccessID: "acc_1", Time: now, Agency: "health", ReasonCode: "urgent", Justification: "j"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Queue(ctx, &breakglass.Review{AccessID: "acc_1"}); err == nil {
		t.Error("a review was queued twice under one access id")
	}
	justified := auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_JUSTIFIED
	_, err := s.Close(ctx, "acc_1", "dpo", justified, "n", now, func(*breakglass.Review) error { return errors.New("log down") })
	if err == nil {
		t.Fatal("closed although the closure could not be logged")
	}
	if open, _ := s.List(ctx, false); len(open) != 1 {
		t.Fatalf("open reviews after a failed close: %d, want 1", len(open))
	}
	logged := 0
	r, err := s.Close(ctx, "acc_1", "dpo", justified, "n", now, func(r *breakglass.Review) error { logged++; r.ClosureAccessID = "acc_2"; return nil })
	if err != nil || !r.Closed() || r.ClosureAccessID != "acc_2" {
		t.Fatalf("close: %+v, %v", r, err)
	}
	if _, err := s.Close(ctx, "acc_1", "dpo", justified, "n", now, func(*breakglass.Review) error { logged++; return nil }); !errors.Is(err, breakglass.ErrClosed) {
		t.Errorf("second close: %v, want ErrClosed", err)
	}
	if logged != 1 {
		t.Errorf("closure logged %d times, want 1", logged)
	}
	if _, err := s.Close(ctx, "acc_9", "dpo", justified, "n", now, func(*breakglass.Review) error { return nil }); !errors.Is(err, breakglass.ErrNotFound) {
		t.Errorf("unknown review: %v", err)
	}
	if open, _ := s.List(ctx, false); len(open) != 0 {
		t.Errorf("closed review listed as open")
	}
	if all, _ := s.List(ctx, true); len(all) != 1 {
		t.Errorf("closed review not listed with include closed")
	}
}

// TestConcurrentCloseLogsOnce: auditors closing one review at the same time: one closes it and logs
// the closure, the others get ErrClosed and log nothing.
func TestConcurrentCloseLogsOnce(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := s.Queue(ctx, &breakglass.Review{AccessID: "acc_1", Time: now}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	logged, closed, refused := 0, 0, 0
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			_, err := s.Close(ctx, "acc_1", "dpo", auditv1.BreakGlassOutcome_BREAK_GLASS_OUTCOME_JUSTIFIED, "n", now, func(r *breakglass.Review) error {
				mu.Lock()
				defer mu.Unlock()
				logged++
				r.ClosureAccessID = "acc_2"
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				closed++
			case errors.Is(err, breakglass.ErrClosed):
				refused++
			default:
				t.Errorf("close: %v", err)
			}
		})
	}
	wg.Wait()
	if logged != 1 || closed != 1 || refused != 5 {
		t.Fatalf("logged %d, closed %d, refused %d; want 1, 1, 5", logged, closed, refused)
	}
	r, err := s.Get(ctx, "acc_1")
	if err != nil || !r.Closed() || r.ClaimedAt != nil || r.ClosureAccessID != "acc_2" {
		t.Fatalf("stored: %+v, %v", r, err)
	}
}
