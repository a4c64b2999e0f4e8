package cases_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/cases"
)

// pageAll lists every page of agency's cases, limit at a time; between pages it calls between.
func pageAll(t *testing.T, s *cases.Store, agency string, limit int, keep func(*cases.Case) bool, between func()) []string {
	t.Helper()
	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		page, more, err := s.Page(context.Background(), agency, after, limit, keep)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > limit {
			t.Fatalf("page of %d, limit %d", len(page), limit)
		}
		for _, c := range page {
			ids = append(ids, c.ID)
		}
		if !more {
			return ids
		}
		after = page[len(page)-1].ID
		between()
	}
}

func all(*cases.Case) bool { return true }

// Paging while cases are opened and moved on concurrently shows no case twice and skips none of those
// that existed when paging began; each agency sees only the cases it has reached.
func TestPagingWhileCasesAreAdded(t *testing.T) {
	s, js := newStore(t)
	ctx := context.Background()
	j := journey()
	opener, later := j.Steps[0].Agency, j.Steps[2].Agency
	if opener == later {
		t.Fatal("the test journey needs a later step of another agency")
	}
	create := func() *cases.Case {
		c := cases.New(j, "0101901234", "p", opener, "v1", time.Now())
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	var existing []string
	atLater := map[string]bool{}
	for i := range 40 {
		c := create()
		existing = append(existing, c.ID)
		if i%8 == 0 { // moved on to the later agency's step
			for _, st := range c.Steps[:2] {
				if err := c.Complete(st.ID, "cw", time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Update(ctx, c); err != nil {
				t.Fatal(err)
			}
			atLater[c.ID] = true
		}
	}

	// Opened meanwhile, by another replica.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := cases.New(j, "0101901234", "p", opener, "v1", time.Now())
			if err := s.Create(ctx, c); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	listed := pageAll(t, s, opener, 7, all, func() { time.Sleep(5 * time.Millisecond) })
	close(stop)
	wg.Wait()

	seen := map[string]bool{}
	for i, id := range listed {
		if seen[id] {
			t.Fatalf("case %s listed twice", id)
		}
		seen[id] = true
		if i > 0 && listed[i-1] <= id {
			t.Fatalf("not newest first: %s before %s", listed[i-1], id)
		}
	}
	for _, id := range existing {
		if !seen[id] {
			t.Errorf("pre-existing case %s skipped", id)
		}
	}

	// The later agency sees only the cases that reached its step.
	got := pageAll(t, s, later, 2, all, func() {})
	if len(got) != len(atLater) {
		t.Fatalf("%s lists %d cases, want %d", later, len(got), len(atLater))
	}
	for _, id := range got {
		if !atLater[id] {
			t.Errorf("%s lists case %s, which has not reached its step", later, id)
		}
	}
	current := pageAll(t, s, opener, 3, func(c *cases.Case) bool {
		cur, ok := c.CurrentStep()
		return ok && cur.Agency == opener
	}, func() {})
	for _, id := range current {
		if atLater[id] {
			t.Errorf("only-current lists case %s, which waits for %s", id, later)
		}
	}

	// The index is a hint: an entry someone wrote for a case the agency has not reached, or for no
	// case at all, lists nothing. A page reads only the cases it considers: a forged case outside the
	// agency's index is never read (a fresh replica, without a cache, counts no unauthentic read).
	idx, err := js.KeyValue(ctx, cases.IndexBucket)
	if err != nil {
		t.Fatal(err)
	}
	notReached := existing[1]
	for _, key := range []string{later + "." + notReached, later + ".case_00000000000000000000000000"} {
		if _, err := idx.Put(ctx, key, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, cases.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "case_zzzzzzzzzzzzzzzzzzzzzzzzzz", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	replica, err := cases.Open(ctx, js, cases.Options{Sealer: sharedSealer(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Close)
	if got := pageAll(t, replica, later, 100, all, func() {}); len(got) != len(atLater) {
		t.Errorf("with forged index entries %s lists %d cases, want %d", later, len(got), len(atLater))
	}
	pageAll(t, replica, opener, 10, all, func() {})
	if n := replica.Unauthentic(); n != 0 {
		t.Errorf("paging read %d cases outside the agency's index", n)
	}
}

// A store written before the index existed is indexed when opened.
func TestIndexBackfill(t *testing.T) {
	s, js := newStore(t)
	ctx := context.Background()
	j := journey()
	var want []string
	for range 5 {
		c := cases.New(j, "0101901234", "p", j.Steps[0].Agency, "v1", time.Now())
		if err := s.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		want = append(want, c.ID)
	}
	slices.Sort(want)
	slices.Reverse(want) // newest first: ids sort by creation time (and at random within a millisecond)
	if err := js.DeleteKeyValue(ctx, cases.IndexBucket); err != nil {
		t.Fatal(err)
	}
	upgraded, err := cases.Open(ctx, js, cases.Options{Sealer: sharedSealer(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(upgraded.Close)
	got := pageAll(t, upgraded, j.Steps[0].Agency, 2, all, func() {})
	if len(got) != len(want) {
		t.Fatalf("after backfill %d cases listed, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after backfill listed %v, want %v", got, want)
		}
	}
}
