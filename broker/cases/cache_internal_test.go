package cases

import (
	"testing"
	"time"
)

// TestCacheExpirySpread: an entry is read again after at most cacheTTL and at least ¾ of it, and
// entries cached in the same instant do not all expire in the same instant.
func TestCacheExpirySpread(t *testing.T) {
	now := time.Now()
	first, last := now.Add(cacheTTL), now
	for range 1000 {
		e := cacheExpiry(now)
		if e.After(now.Add(cacheTTL)) || e.Before(now.Add(cacheTTL*3/4)) {
			t.Fatalf("expires %s after caching, want between %s and %s", e.Sub(now), cacheTTL*3/4, cacheTTL)
		}
		if e.Before(first) {
			first = e
		}
		if e.After(last) {
			last = e
		}
	}
	if spread := last.Sub(first); spread < cacheTTL/8 {
		t.Fatalf("1,000 entries cached together expire within %s of each other, want them spread over about %s", spread, cacheTTL/4)
	}
}
