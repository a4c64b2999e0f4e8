package corrections_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/corrections"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// pages is an access log in memory, served in pages like accesslog.Log.List.
type pages []*auditv1.AccessRecord

func (p pages) List(_ context.Context, _ string, size int, token string) ([]*auditv1.AccessRecord, string, error) {
	from := 0
	if token != "" {
		from, _ = strconv.Atoi(token)
	}
	to := min(from+size, len(p))
	next := ""
	if to < len(p) {
		next = strconv.Itoa(to)
	}
	return p[from:to], next, nil
}

func rec(kind auditv1.AccessKind, decision auditv1.Decision, caseID, agency, authority, dataset string, at time.Time, fields ...string) *auditv1.AccessRecord {
	return &auditv1.AccessRecord{Kind: kind, Decision: decision, CaseId: caseID, Agency: agency, Journey: "j",
		Authority: authority, Dataset: dataset, Fields: fields, Time: timestamppb.New(at)}
}

func TestFindUses(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	cw, rel, ref := auditv1.AccessKind_ACCESS_KIND_CASEWORKER, auditv1.Decision_DECISION_RELEASED, auditv1.Decision_DECISION_REFUSED
	log := pages{
		rec(cw, rel, "c1", "ag1", "a", "d", t0, "address"),                     // a record containing the field
		rec(cw, rel, "c1", "ag1", "a", "d", t0.Add(time.Hour), "address.town"), // later, in the same case
		rec(cw, rel, "c2", "ag2", "a", "d", t0, "address.town.code"),           // a field inside it
		rec(cw, ref, "c3", "ag3", "a", "d", t0, "address.town"),                // refused: not used
		rec(cw, rel, "c4", "ag4", "a", "other", t0, "address.town"),            // another dataset
		rec(cw, rel, "c5", "ag5", "b", "d", t0, "address.town"),                // another authority
		rec(cw, rel, "c6", "ag6", "a", "d", t0, "address.townhall"),            // a different field
		rec(auditv1.AccessKind_ACCESS_KIND_CITIZEN_SELF, rel, "c7", "", "a", "d", t0, "address.town"),
	}
	uses, err := corrections.FindUses(context.Background(), log, "pn", "a", "d", "address.town")
	if err != nil {
		t.Fatal(err)
	}
	want := []corrections.Use{
		{CaseID: "c1", Journey: "j", Agency: "ag1", ReleasedAt: t0.Add(time.Hour)},
		{CaseID: "c2", Journey: "j", Agency: "ag2", ReleasedAt: t0},
	}
	if fmt.Sprint(uses) != fmt.Sprint(want) {
		t.Fatalf("uses %v, want %v", uses, want)
	}
}

// BenchmarkFindUses walks a citizen's log of 5,000 releases (10 pages) for one field.
func BenchmarkFindUses(b *testing.B) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var log pages
	for i := range 5000 {
		log = append(log, rec(auditv1.AccessKind_ACCESS_KIND_CASEWORKER, auditv1.Decision_DECISION_RELEASED,
			fmt.Sprintf("c%d", i%50), "ag", "a", "d", t0.Add(time.Duration(i)*time.Minute), "name", "address.town", "income.total"))
	}
	for b.Loop() {
		if _, err := corrections.FindUses(context.Background(), log, "pn", "a", "d", "address.town"); err != nil {
			b.Fatal(err)
		}
	}
}
