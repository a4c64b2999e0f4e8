package citizen_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// appendRecord writes an access record for citizen straight to the broker's access log (the real
// Append path), as the release path would: by the registry's first agency, of an opaque dataset.
func (e *env) appendRecord(citizen string, at time.Time, authority, journey string, hiddenUntil *time.Time) *auditv1.AccessRecord {
	e.t.Helper()
	pn := e.pn.Pseudonym(citizen)
	r := &auditv1.AccessRecord{
		Id: ids.New("acc", at), Time: timestamppb.New(at), CitizenPseudonym: pn.Value, PseudonymKeyId: pn.KeyID,
		Kind: auditv1.AccessKind_ACCESS_KIND_CASEWORKER, Agency: anyAgency(e.t, e.b.Bundle()), Caseworker: "cw-1",
		CaseId: "case_00000000000000000000000000", Journey: journey, Authority: authority, Dataset: "x",
		Fields: []string{"a.b"}, Decision: auditv1.Decision_DECISION_RELEASED, PolicyVersion: "test",
	}
	if hiddenUntil != nil {
		r.HiddenUntil, r.HiddenReason = timestamppb.New(*hiddenUntil), "test reason"
	}
	if err := e.b.AccessLog().Append(context.Background(), r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// waitIndexCaughtUp waits until the per-citizen index holds every record in the log.
func (e *env) waitIndexCaughtUp() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		lag, err := e.b.AccessLog().IndexLag(ctx)
		if err != nil {
			e.t.Fatalf("index lag: %v", err)
		}
		if lag.Batches == 0 {
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("index still %d batches behind the log", lag.Batches)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// truth is every record of citizen straight from the access log, newest first.
func (e *env) truth(citizen string) []*auditv1.AccessRecord {
	e.t.Helper()
	var out []*auditv1.AccessRecord
	tok := ""
	for {
		recs, next, err := e.b.AccessLog().List(context.Background(), e.pn.Pseudonym(citizen).Value, 1000, tok)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, recs...)
		if tok = next; tok == "" {
			return out
		}
	}
}

// TestListAccessesFiltersAndPaging compares paged, filtered listings with the log itself, for page
// sizes that do and do not divide the result and filters that cut across log pages.
func TestListAccessesFiltersAndPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := time.Now().Add(-10 * 24 * time.Hour).Truncate(time.Second)
	b := e.b.Bundle()
	// Records of all the registry's authorities but the last (which has none), the first twice as
	// often as the others; of two journeys and of none.
	ids := authorityIDs(t, b, 3)
	auths := append(slices.Clone(ids[:len(ids)-1]), ids[0])
	none := ids[len(ids)-1]
	one, two := auths[0], auths[1]
	js := b.Journeys()
	if len(js) < 2 {
		t.Fatalf("the policies have %d journeys; the test needs 2", len(js))
	}
	journeys := []string{js[0].ID, js[1].ID, ""}
	future := time.Now().Add(30 * day)
	for i := range 230 {
		var hide *time.Time
		if i%37 == 5 {
			hide = &future // still hidden: never listed
		}
		e.appendRecord(anna, base.Add(time.Duration(i)*time.Hour), auths[i%len(auths)], journeys[i%len(journeys)], hide)
		if i%10 == 0 {
			e.appendRecord(bo, base.Add(time.Duration(i)*time.Hour), two, journeys[1], nil)
		}
	}
	truth := e.truth(anna)
	if len(truth) != 230 {
		t.Fatalf("log holds %d records of Anna, want 230", len(truth))
	}
	at := func(h int) *timestamppb.Timestamp { return timestamppb.New(base.Add(time.Duration(h) * time.Hour)) }

	tests := []struct {
		name string
		req  *citizenv1.ListAccessesRequest
		keep func(*auditv1.AccessRecord) bool
	}{
		{"all", &citizenv1.ListAccessesRequest{}, func(*auditv1.AccessRecord) bool { return true }},
		{"authority", &citizenv1.ListAccessesRequest{Authority: two}, func(r *auditv1.AccessRecord) bool { return r.GetAuthority() == two }},
		{"journey", &citizenv1.ListAccessesRequest{Journey: journeys[1]}, func(r *auditv1.AccessRecord) bool { return r.GetJourney() == journeys[1] }},
		{"since", &citizenv1.ListAccessesRequest{Since: at(200)}, func(r *auditv1.AccessRecord) bool { return !r.GetTime().AsTime().Before(base.Add(200 * time.Hour)) }},
		{"until", &citizenv1.ListAccessesRequest{Until: at(17)}, func(r *auditv1.AccessRecord) bool { return r.GetTime().AsTime().Before(base.Add(17 * time.Hour)) }},
		{"everything", &citizenv1.ListAccessesRequest{Authority: one, Journey: journeys[0], Since: at(20), Until: at(190)},
			func(r *auditv1.AccessRecord) bool {
				t := r.GetTime().AsTime()
				return r.GetAuthority() == one && r.GetJourney() == journeys[0] &&
					!t.Before(base.Add(20*time.Hour)) && t.Before(base.Add(190*time.Hour))
			}},
		{"nothing matches", &citizenv1.ListAccessesRequest{Authority: none}, func(r *auditv1.AccessRecord) bool { return false }},
	}
	for _, tc := range tests {
		var want []string
		for _, r := range truth {
			if tc.keep(r) && r.GetHiddenUntil() == nil {
				want = append(want, r.GetId())
			}
		}
		for _, size := range []int32{0, 1, 7, 50, 500} {
			t.Run(fmt.Sprintf("%s/page=%d", tc.name, size), func(t *testing.T) {
				req := &citizenv1.ListAccessesRequest{Authority: tc.req.Authority, Journey: tc.req.Journey, Since: tc.req.Since, Until: tc.req.Until, PageSize: size}
				if size == 1 && len(want) > 60 {
					t.Skip("too many round trips")
				}
				got := accessIDs(e.accesses(tokAnna, req))
				if !slices.Equal(got, want) {
					t.Fatalf("got %d accesses, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
				}
			})
		}
	}

	// Pages hold page_size accesses, except the last.
	resp, err := e.citizen().ListAccesses(as(tokAnna), &citizenv1.ListAccessesRequest{PageSize: 7, Authority: two})
	if err != nil || len(resp.GetAccesses()) != 7 || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %d accesses, token %q, %v", len(resp.GetAccesses()), resp.GetNextPageToken(), err)
	}
	// Records appended while paging do not disturb the pages in progress.
	e.appendRecord(anna, time.Now(), two, journeys[1], nil)
	rest := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{PageSize: 7, Authority: two, PageToken: resp.GetNextPageToken()})
	var wantTwo []string
	for _, r := range truth {
		if r.GetAuthority() == two && r.GetHiddenUntil() == nil {
			wantTwo = append(wantTwo, r.GetId())
		}
	}
	if all := append(accessIDs(resp.GetAccesses()), accessIDs(rest)...); !slices.Equal(all, wantTwo) {
		t.Fatalf("paging while records arrive: %d accesses, want the %d there were when paging began", len(all), len(wantTwo))
	}

	bad := []*citizenv1.ListAccessesRequest{
		{PageSize: 501},
		{PageSize: -1},
		{PageToken: "garbage"},
		{PageToken: "YzEuNTAuMC4"}, // "c1.50.0." without a log token
		{Authority: capitalised(two)},
		{Journey: "-x"},
		{Since: at(10), Until: at(5)},
	}
	for _, req := range bad {
		_, err := e.citizen().ListAccesses(as(tokAnna), req)
		wantCode(t, err, codes.InvalidArgument)
	}
}

// TestListAccessesScanBound: a filter that matches little in a long history answers within a bound,
// with a token to go on, and finds what is further back on the next call.
func TestListAccessesScanBound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := time.Now().Add(-30 * day)
	ids := authorityIDs(t, e.b.Bundle(), 2)
	rare, common := ids[0], ids[1]
	var old []string
	for i := range 3 {
		old = append([]string{e.appendRecord(cai, base.Add(time.Duration(i)*time.Minute), rare, "", nil).GetId()}, old...)
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := g; i < 10_050; i += 32 {
				e.appendRecord(cai, base.Add(time.Hour+time.Duration(i)*time.Second), common, "", nil)
			}
		})
	}
	wg.Wait()
	// The listing waits for its own indexer only boundedly (2 s); under the race detector indexing
	// 10,050 records takes longer, and a partial index would be scanned to its end within the bound.
	e.waitIndexCaughtUp()
	c := e.citizen()
	// Each call scans up to the bound (10,000 index entries, each read and authenticated): under the race
	// detector on a busy machine that can take longer than as()'s 20 s. The test is about the bound,
	// not the latency.
	slow := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokCai)
	}
	first, err := c.ListAccesses(slow(), &citizenv1.ListAccessesRequest{Authority: rare})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetAccesses()) != 0 || first.GetNextPageToken() == "" {
		t.Fatalf("first call: %d accesses, token %q; want none and a token (scan bound)", len(first.GetAccesses()), first.GetNextPageToken())
	}
	second, err := c.ListAccesses(slow(), &citizenv1.ListAccessesRequest{Authority: rare, PageToken: first.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if got := accessIDs(second.GetAccesses()); !slices.Equal(got, old) || second.GetNextPageToken() != "" {
		t.Fatalf("second call: %v (token %q), want %v", got, second.GetNextPageToken(), old)
	}
}

// TestHiddenUntil drives a journey whose first step is covert: its accesses are invisible (list, watch,
// question, case) until their time has passed on the broker's clock, then shown with the reason.
func TestHiddenUntil(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	b := e.b.Bundle()
	j := covertJourney(t, b)
	st, next := j.Steps[0], j.Steps[1]
	cs := e.open(st.Agency, j.ID, anna)
	covert := e.release(st.Agency, cs.GetId(), st.Rules[0].Authority, st.Rules[0].Dataset)
	visibleBefore := e.appendRecord(anna, e.clock.Now(), authorityIDs(t, b, 1)[0], "", nil) // something visible, for contrast

	got := e.accesses(tokAnna, &citizenv1.ListAccessesRequest{})
	if len(got) != 1 || got[0].GetId() != visibleBefore.GetId() {
		t.Fatalf("while hidden: %v, want only %s", accessIDs(got), visibleBefore.GetId())
	}
	_, err := c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: covert.GetAccessId(), Message: "What is this?"})
	wantCode(t, err, codes.NotFound)
	// The case exists only through its covert step: not shown at all.
	lc, err := c.ListCases(as(tokAnna), &citizenv1.ListCasesRequest{})
	if err != nil || len(lc.GetCases()) != 0 {
		t.Fatalf("case of a running covert step is shown: %v, %v", lc.GetCases(), err)
	}
	_, err = c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	wantCode(t, err, codes.NotFound)

	// The next step is open: the case shows. The covert step shows as done, with its accesses, if the
	// policy reveals it when the next step begins; otherwise as if not reached.
	e.complete(st.Agency, cs.GetId(), st.ID)
	gc, err := c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	steps := gc.GetCase().GetSteps()
	if steps[1].GetStatus() != citizenv1.StepStatus_STEP_STATUS_CURRENT || gc.GetCase().GetCurrentStep().GetId() != next.ID {
		t.Fatalf("case after its covert step: %v", gc.GetCase())
	}
	if st.Covert.Reveal == policy.RevealNextStep {
		if steps[0].GetStatus() != citizenv1.StepStatus_STEP_STATUS_COMPLETED || steps[0].GetStartedAt() == nil {
			t.Fatalf("covert step revealed by the next step: %v", steps[0])
		}
		got, checks := e.splitChecks(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
		got, reveals := splitReveals(got)
		if len(got) != 2 {
			t.Fatalf("after the next step began: %v, want the covert access too", accessIDs(got))
		}
		// The reveal itself is logged and shown, with why.
		if len(reveals) != 1 || reveals[0].GetCaseId() != cs.GetId() || !strings.Contains(reveals[0].GetPurpose().GetEn(), "because your case moved on to a later step") ||
			!strings.Contains(reveals[0].GetPurpose().GetDa(), "fordi din sag gik videre til et senere trin") {
			t.Fatalf("the early reveal as the citizen reads it: %v", reveals)
		}
		e.wantChecks(checks, cs.GetId()) // hidden with the covert step, revealed with it
	} else if steps[0].GetStatus() != citizenv1.StepStatus_STEP_STATUS_PENDING || steps[0].GetStartedAt() != nil || steps[0].GetCompletedAt() != nil ||
		!gc.GetCase().GetOpenedAt().AsTime().Equal(steps[1].GetStartedAt().AsTime()) {
		t.Fatalf("case with a masked covert step: %v", gc.GetCase())
	}

	// A day after the longest the step may hide its accesses, everything is visible, with the reason.
	e.clock.advance(st.Covert.MaxDelay() + day)
	got, checks := e.splitChecks(e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}))
	got, _ = splitReveals(got) // when the policy revealed the step early (above)
	if len(got) != 2 || got[1].GetId() != covert.GetAccessId() {
		t.Fatalf("after the hidden-until time: %v, want the covert access too", accessIDs(got))
	}
	e.wantChecks(checks, cs.GetId())
	a := got[1]
	if a.GetHiddenUntil() == nil || a.GetHiddenReason().GetEn() == "" || a.GetHiddenReason().GetDa() == "" || a.GetStep().GetId() != st.ID {
		t.Fatalf("revealed access %v", a)
	}
	gc, err = c.GetCase(as(tokAnna), &citizenv1.GetCaseRequest{CaseId: cs.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if s := gc.GetCase().GetSteps()[0]; s.GetStatus() != citizenv1.StepStatus_STEP_STATUS_COMPLETED || s.GetStartedAt() == nil {
		t.Fatalf("covert step after its delay: %v", s)
	}
	if _, err := c.QuestionAccess(as(tokAnna), &citizenv1.QuestionAccessRequest{AccessId: covert.GetAccessId(), Message: "Why?"}); err != nil {
		t.Fatalf("question a revealed access: %v", err)
	}
}

// TestWatchAccesses: a citizen's stream gets their new accesses once durable — not another
// citizen's, not covert ones — and ends when the citizen cancels or the broker stops.
func TestWatchAccesses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.citizen()
	type got struct {
		a   *citizenv1.Access
		err error
	}
	watch := func(token string) (chan got, context.CancelFunc) {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token))
		s, err := c.WatchAccesses(ctx, &citizenv1.WatchAccessesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Header(); err != nil { // the subscription is in place
			t.Fatal(err)
		}
		ch := make(chan got, 16)
		go func() {
			for {
				r, err := s.Recv()
				ch <- got{r.GetAccess(), err}
				if err != nil {
					return
				}
			}
		}()
		return ch, cancel
	}
	next := func(ch chan got) got {
		t.Helper()
		select {
		case g := <-ch:
			return g
		case <-time.After(5 * time.Second):
			t.Fatal("no access streamed")
			return got{}
		}
	}
	annaCh, cancelAnna := watch(tokAnna)
	boCh, cancelBo := watch(tokBo)
	defer cancelBo()

	b := e.b.Bundle()
	cj, oj := covertJourney(t, b), openJourney(t, b)
	cst, ost := cj.Steps[0], oj.Steps[0]
	covertCase := e.open(cst.Agency, cj.ID, anna)
	e.release(cst.Agency, covertCase.GetId(), cst.Rules[0].Authority, cst.Rules[0].Dataset) // covert: not streamed
	cs := e.open(ost.Agency, oj.ID, anna)
	r := e.release(ost.Agency, cs.GetId(), ost.Rules[0].Authority, ost.Rules[0].Dataset)
	// First the register check of opening the open case (the covert case's is not streamed either).
	var checks []*citizenv1.Access
	g := next(annaCh)
	for ; g.err == nil && e.isRegisterCheck(g.a); g = next(annaCh) {
		checks = append(checks, g.a)
	}
	e.wantChecks(checks, cs.GetId())
	if g.err != nil || g.a.GetId() != r.GetAccessId() || g.a.GetJourney().GetTitle().GetEn() == "" {
		t.Fatalf("Anna's stream: %v, %v; want %s", g.a, g.err, r.GetAccessId())
	}
	authority, dataset := someDataset(t, b)
	md, err := c.GetMyData(as(tokBo), &citizenv1.GetMyDataRequest{Authority: authority, Dataset: dataset})
	if err != nil {
		t.Fatal(err)
	}
	if g := next(boCh); g.err != nil || g.a.GetId() != md.GetAccessId() {
		t.Fatalf("Bo's stream: %v, %v; want his own access %s", g.a, g.err, md.GetAccessId())
	}
	select {
	case g := <-annaCh:
		t.Fatalf("Anna's stream got %v, %v", g.a, g.err)
	case g := <-boCh:
		t.Fatalf("Bo's stream got %v, %v", g.a, g.err)
	case <-time.After(200 * time.Millisecond):
	}

	cancelAnna()
	if g := next(annaCh); status.Code(g.err) != codes.Canceled {
		t.Fatalf("after cancel: %v", g.err)
	}
	// Stopping the broker ends the open stream promptly.
	begin := time.Now()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if g := next(boCh); g.err == nil {
		t.Fatalf("stream still open after the broker stopped: %v", g.a)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("the broker took %s to stop with a stream open", d)
	}
}
