package citizen_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// BenchmarkListAccesses fills the access log through the real Append path (group commit, fsync, the
// sharded citizen index) with a national-scale shape — by default 1,000,000 records across 100,000
// citizens, one of whom (Anna) has 1,000 — and then measures the citizen API's ListAccesses for Anna
// over gRPC and TLS, reporting p50 and p99 latency. APERTURE_BENCH_RECORDS scales the fill down for
// a quick look. It runs only under -bench.
func BenchmarkListAccesses(b *testing.B) {
	total := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("APERTURE_BENCH_RECORDS")); err == nil && v > 1000 {
		total = v
	}
	const citizens, mine = 100_000, 1000
	e := newEnv(b)
	annaPN := e.pn.Pseudonym(anna)
	base := time.Now().Add(-365 * day)
	// Anna's records are spread evenly through the log, the others' round robin over 99,999 citizens.
	every := total / mine
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 512 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				pn, key := annaPN.Value, annaPN.KeyID
				if i%every != 0 {
					pn = fmt.Sprintf("%032x", 0xbe0000000+i%(citizens-1))
				}
				at := base.Add(time.Duration(i) * 30 * time.Second)
				r := &auditv1.AccessRecord{
					Id: ids.New("acc", at), Time: timestamppb.New(at), CitizenPseudonym: pn, PseudonymKeyId: key,
					Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER, Agency: "municipality", Caseworker: "cw-17",
					CaseId: "case_01jd3x0m6k9w2e5r7t8y4b1c0a", Journey: "sickness-benefit", Step: "register-absence",
					Authority: "employment", Dataset: "history",
					Fields:  []string{"employments.employer_id", "employments.start_date", "sick_leave_reports.first_sick_day"},
					Derived: []string{"currently_employed"}, Purpose: "To open your sickness benefit case.",
					LegalBasis: "Sygedagpengeloven § 7", Decision: auditv1.Decision_DECISION_RELEASED, PolicyVersion: "sha256:0123456789abcdef",
				}
				if err := e.b.AccessLog().Append(context.Background(), r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	fill := time.Since(start)
	b.Logf("appended %d records across %d citizens in %s (%.0f/s); stats %+v", total, citizens, fill.Round(time.Millisecond),
		float64(total)/fill.Seconds(), e.b.AccessLog().Stats())
	if n := len(e.truth(anna)); n != mine {
		b.Fatalf("Anna has %d records, want %d", n, mine)
	}
	c := e.citizen()
	for _, size := range []int32{50, 500} {
		b.Run(fmt.Sprintf("page=%d", size), func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			tok := ""
			for b.Loop() {
				t0 := time.Now()
				resp, err := c.ListAccesses(as(tokAnna), &citizenv1.ListAccessesRequest{PageSize: size, PageToken: tok})
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetAccesses()) == 0 {
					b.Fatal("empty page")
				}
				// Walk the whole history, page after page, then start again at the newest.
				tok = resp.GetNextPageToken()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
		})
	}
}
