package report

import "slices"

// MinPublic is the smallest count the public page shows: counts from 1 to MinPublic-1 are shown as
// "fewer than MinPublic", as statistics offices (Danmarks Statistik, Eurostat) do for tables about
// people, because a count of one or two in a small journey can point at a person. Zero is shown: that
// nothing happened reveals no one.
const MinPublic = 5

// SuppressGroup decides which counts of one group (cells that add up to a published total, such as
// the refusal reasons of one row) to hide. Primary suppression hides every count in [1, k). A single
// hidden count could be worked out from the total and the shown ones, so complementary suppression
// then also hides the smallest other non-zero count; when there is none, the total itself equals the
// hidden count and hideTotal says to hide it too. hidden[i] is for values[i].
func SuppressGroup(values []int64, k int64) (hidden []bool, hideTotal bool) {
	hidden = make([]bool, len(values))
	n := 0
	for i, v := range values {
		if v > 0 && v < k {
			hidden[i] = true
			n++
		}
	}
	if n != 1 {
		return hidden, false
	}
	best := -1
	for i, v := range values {
		if !hidden[i] && v > 0 && (best < 0 || v < values[best]) {
			best = i
		}
	}
	if best < 0 {
		return hidden, true
	}
	hidden[best] = true
	return hidden, false
}

// Public is a count as the public page shows it.
type Public struct {
	N      int64
	Hidden bool
}

// PublicGroup applies SuppressGroup and returns the counts and their total as shown. A total below
// k is hidden whatever its cells.
func PublicGroup(values []int64, k int64) (cells []Public, total Public) {
	hidden, hideTotal := SuppressGroup(values, k)
	var sum int64
	for i, v := range values {
		cells = append(cells, Public{N: v, Hidden: hidden[i]})
		sum += v
	}
	total = Public{N: sum, Hidden: hideTotal || (sum > 0 && sum < k)}
	if total.Hidden && !slices.Contains(hidden, true) {
		// A hidden total with every cell shown would be no protection; hide the non-zero cells.
		for i := range cells {
			cells[i].Hidden = cells[i].N > 0
		}
	}
	return cells, total
}
