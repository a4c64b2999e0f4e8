package corrections

import (
	"context"
	"fmt"
	"slices"
	"strings"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Lister reads one citizen's access records (accesslog.Log).
type Lister interface {
	List(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]*auditv1.AccessRecord, string, error)
}

// maxPages bounds the walk of one citizen's access log.
const maxPages = 100

// FindUses walks the citizen's access log and returns the cases in which field of authority.dataset
// (the field itself, a field inside it, or a record containing it) was released to an agency, one Use
// per case with the latest release, in case order.
func FindUses(ctx context.Context, log Lister, pseudonym, authority, dataset, field string) ([]Use, error) {
	byCase := map[string]*Use{}
	token := ""
	for range maxPages {
		recs, next, err := log.List(ctx, pseudonym, 500, token)
		if err != nil {
			return nil, fmt.Errorf("read access log: %w", err)
		}
		for _, r := range recs {
			if r.GetKind() != auditv1.AccessKind_ACCESS_KIND_CASEWORKER || r.GetDecision() != auditv1.Decision_DECISION_RELEASED ||
				r.GetAuthority() != authority || r.GetDataset() != dataset || r.GetCaseId() == "" ||
				!slices.ContainsFunc(r.GetFields(), func(f string) bool { return overlaps(f, field) }) {
				continue
			}
			at := r.GetTime().AsTime()
			if u, ok := byCase[r.GetCaseId()]; ok && !at.After(u.ReleasedAt) {
				continue
			}
			byCase[r.GetCaseId()] = &Use{CaseID: r.GetCaseId(), Journey: r.GetJourney(), Agency: r.GetAgency(), ReleasedAt: at}
		}
		if next == "" {
			break
		}
		token = next
	}
	out := make([]Use, 0, len(byCase))
	for _, u := range byCase {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b Use) int { return strings.Compare(a.CaseID, b.CaseID) })
	return out, nil
}

// overlaps reports whether field paths a and b name the same field or one lies inside the other.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}
