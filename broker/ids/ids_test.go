package ids

import (
	"testing"
	"time"
)

func TestNewIsValidSortedAndUnique(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := New("case", t0.Add(time.Duration(i)*time.Millisecond))
		if !Valid("case", id) {
			t.Fatalf("New produced invalid id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("ids not time-ordered: %q after %q", id, prev)
		}
		prev = id
	}
}

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"case_01jd3x0m6k9w2e5r7t8y4b1c0a", true},
		{"acc_01jd3x0m6k9w2e5r7t8y4b1c0a", false},
		{"case_01jd3x0m6k9w2e5r7t8y4b1c0", false},
		{"case_01JD3X0M6K9W2E5R7T8Y4B1C0A", false},
		{"case_01jd3x0m6k9w2e5r7t8y4b1c0u", false}, // u is not Crockford
		{"", false},
	} {
		if got := Valid("case", tc.id); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestTime(t *testing.T) {
	for _, at := range []time.Time{
		time.UnixMilli(0),
		time.Date(2026, 12, 2, 16, 40, 0, 123e6, time.UTC),
		time.UnixMilli(1<<48 - 1),
	} {
		id := New("acc", at)
		got, ok := Time("acc", id)
		if !ok || !got.Equal(at) {
			t.Errorf("Time(New(%s)) = %s, %v", at, got, ok)
		}
	}
	for _, id := range []string{"case_01jd3x0m6k9w2e5r7t8y4b1c0a", "acc_01jd3x0m6k9w2e5r7t8y4b1c0", "acc_01jd3x0m6k9w2e5r7t8y4b1c0u", ""} {
		if _, ok := Time("acc", id); ok {
			t.Errorf("Time(%q) accepted an id of another form", id)
		}
	}
}
