package cases

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// IndexBucket is the per-agency index of cases: one key "<agency>.<case id>" for every case an agency
// has reached (one of its steps started: from then on it may see the case, for good). A listing reads
// the agency's key names and then only the cases of its page.
//
// The index is a hint, not an input to a decision: every case it names is read from the sealed cases
// bucket and checked (Reached) again, so an entry someone forged shows nothing, and one missing only
// hides a case from a listing (GetCase still finds it). It holds no citizen data: case ids and agency
// ids only. An entry is written before the transition that makes the agency reach the case, so a case
// an agency has reached is always indexed; one whose transition then failed is dropped when read.
const IndexBucket = "case_agencies"

// index is the per-agency index and a memory of the entries this store has written.
type index struct {
	kv jetstream.KeyValue

	mu      sync.Mutex
	written map[string]bool
}

const indexMemory = 100_000

func openIndex(ctx context.Context, js jetstream.JetStream, replicas int) (*index, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      IndexBucket,
		Description: "Aperture: the cases each agency has reached, for listings (ids only)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %q: %w", IndexBucket, err)
	}
	return &index{kv: kv, written: map[string]bool{}}, nil
}

func indexKey(agency, caseID string) string { return agency + "." + caseID }

// add indexes c for every agency that has reached it.
func (x *index) add(ctx context.Context, c *Case) error {
	seen := map[string]bool{}
	for _, st := range c.Steps {
		if st.StartedAt == nil || seen[st.Agency] {
			continue
		}
		seen[st.Agency] = true
		key := indexKey(st.Agency, c.ID)
		x.mu.Lock()
		done := x.written[key]
		x.mu.Unlock()
		if done {
			continue
		}
		if _, err := x.kv.Create(ctx, key, []byte{1}); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("index case %s for agency %s: %w", c.ID, st.Agency, err)
		}
		x.mu.Lock()
		if len(x.written) >= indexMemory {
			clear(x.written)
		}
		x.written[key] = true
		x.mu.Unlock()
	}
	return nil
}

// ids returns the ids of the cases agency has reached, newest first.
func (x *index) ids(ctx context.Context, agency string) ([]string, error) {
	lister, err := x.kv.ListKeysFiltered(ctx, agency+".>")
	if err != nil {
		return nil, fmt.Errorf("list the cases of agency %s: %w", agency, err)
	}
	defer lister.Stop()
	var ids []string
	prefix := agency + "."
	for key := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(key, prefix))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list the cases of agency %s: %w", agency, err) // cut short: not the whole list
	}
	slices.Sort(ids)
	ids = slices.Compact(ids) // a listing may name a key twice
	slices.Reverse(ids)       // ids sort by creation time
	return ids, nil
}

// Page returns up to limit of the cases agency has reached, newest first, starting after the case
// with id after ("" for the first page) and keeping those for which keep is true, and whether more may
// follow. The page is a keyset: the cases opened meanwhile sort before after and are not on later
// pages, and no case that existed when paging began is skipped or shown twice. Only the agency's
// index and the cases the page considers are read.
func (s *Store) Page(ctx context.Context, agency, after string, limit int, keep func(*Case) bool) ([]*Case, bool, error) {
	if limit < 1 {
		return nil, false, errors.New("page: limit must be positive")
	}
	ids, err := s.index.ids(ctx, agency)
	if err != nil {
		return nil, false, err
	}
	start := 0
	if after != "" {
		// ids is descending: the first id below after.
		start, _ = slices.BinarySearchFunc(ids, after, func(id, target string) int { return strings.Compare(target, id) })
		if start < len(ids) && ids[start] == after {
			start++
		}
	}
	var page []*Case
	for i := start; i < len(ids); i++ {
		if len(page) == limit {
			return page, true, nil
		}
		c, err := s.Get(ctx, ids[i])
		if errors.Is(err, ErrNotFound) {
			continue // its transition failed after the index entry, or it is not authentic (reported)
		}
		if err != nil {
			return nil, false, err
		}
		if Reached(c, agency) && keep(c) {
			page = append(page, c)
		}
	}
	return page, false, nil
}

// backfill indexes every stored case, for a store written before there was an index.
func (s *Store) backfill(ctx context.Context) error {
	st, err := s.index.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("index status: %w", err)
	}
	if st.Values() > 0 {
		return nil
	}
	all, err := s.List(ctx, func(*Case) bool { return true })
	if err != nil {
		return fmt.Errorf("index the stored cases: %w", err)
	}
	for _, c := range all {
		if err := s.index.add(ctx, c); err != nil {
			return err
		}
	}
	if len(all) > 0 {
		s.log.Info("indexed the stored cases by agency", "cases", len(all))
	}
	return nil
}
