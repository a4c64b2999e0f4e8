package accesslog_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aperture-gov/aperture/broker/accesslog"
)

// searches is how many listings searched a shard instead of following links.
func searches(t *testing.T, reader *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx(t), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == accesslog.MetricListSearches {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// ids lists a citizen's records page by page (pages of 3) and returns their ids in listing order.
func ids(t *testing.T, l *accesslog.Log, citizen int) []string {
	t.Helper()
	var out []string
	for _, r := range listAll(t, l, pseudonym(citizen), 3) {
		out = append(out, r.GetId())
	}
	return out
}

// checkLinks reads every entry of every shard and checks each linked entry names its own sequence
// and the previous entry on its subject (0 for the first), or a deleted entry after that one. It
// returns how many entries are linked.
func checkLinks(t *testing.T, e *env) (linked, all int) {
	t.Helper()
	for shard := range testShards {
		s, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(testShards, shard))
		if err != nil {
			t.Fatal(err)
		}
		last := map[string]uint64{}
		present := map[uint64]bool{}
		for seq := s.CachedInfo().State.FirstSeq; seq > 0 && seq <= s.CachedInfo().State.LastSeq; seq++ {
			m, err := s.GetMsg(ctx(t), seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			all++
			if v := m.Header.Get(accesslog.HeaderIndexPrev); v != "" {
				linked++
				prev, _ := strconv.ParseUint(v, 10, 64)
				self := m.Header.Get(accesslog.HeaderIndexSeq)
				if prev < last[m.Subject] || prev > last[m.Subject] && present[prev] || self != strconv.FormatUint(seq, 10) {
					t.Errorf("shard %d entry %d links to %d as %s; the previous entry on its subject is %d", shard, seq, prev, self, last[m.Subject])
				}
			}
			last[m.Subject], present[seq] = seq, true
		}
	}
	return linked, all
}

// TestListFollowsLinks: every entry the indexer writes links to its citizen's previous entry, and
// a listing follows the links without searching the shard. Where a link cannot be followed (an
// entry deleted, a genuine entry copied on top of the citizen's entries, entries repair wrote again
// without links) the listing searches below it and still lists every record once.
func TestListFollowsLinks(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	e := newEnv(t)
	l := e.open(accesslog.Options{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	const n = 24 // two citizens, interleaved
	for i := range n {
		c := 4 + i%2
		if err := l.Append(ctx(t), record(c, fmt.Sprintf("c%d-%02d", c, i))); err != nil {
			t.Fatal(err)
		}
	}
	e.waitIndexed(testShards, n)
	caughtUp(t, l)
	if linked, all := checkLinks(t, e); linked != n || all != n {
		t.Fatalf("%d of %d entries linked, want all %d", linked, all, n)
	}
	want := ids(t, l, 4)
	if len(want) != n/2 || !slices.IsSortedFunc(want, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Fatalf("citizen 4 sees %v, want their %d records newest first", want, n/2)
	}
	if s := searches(t, reader); s != 0 {
		t.Fatalf("%d listings searched the shard, want none: every entry is linked", s)
	}

	// Delete one in the middle, and store a copy of the oldest on top (someone with write access
	// to NATS but not the broker's keys): its link would skip every entry after the original.
	ents := listEntries(t, l, pseudonym(4))
	s, m := indexMsg(t, e, ents[5])
	if err := s.DeleteMsg(ctx(t), m.Sequence); err != nil {
		t.Fatal(err)
	}
	_, m = indexMsg(t, e, ents[len(ents)-1])
	h := nats.Header{}
	for k, v := range m.Header {
		if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Nats-Expected-") {
			h[k] = v
		}
	}
	if _, err := rawConn(t, e).PublishMsg(ctx(t), &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}); err != nil {
		t.Fatal(err)
	}
	got := ids(t, l, 4)
	if wantNow := slices.Delete(slices.Clone(want), 5, 6); !slices.Equal(got, wantNow) {
		t.Fatalf("after a deletion and a copy on top citizen 4 sees\n%v, want\n%v", got, wantNow)
	}
	if searches(t, reader) == 0 {
		t.Fatal("the listing followed links past a copy and a deleted entry without searching")
	}
	if other := ids(t, l, 5); len(other) != n/2 {
		t.Fatalf("citizen 5 sees %d records, want %d", len(other), n/2)
	}

	// Repair removes the copy and writes the deleted entry again, unlinked; new entries link again.
	if _, err := l.Repair(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx(t), record(4, "c4-99")); err != nil {
		t.Fatal(err)
	}
	e.waitIndexed(testShards, n+1)
	caughtUp(t, l)
	if rep, err := l.VerifyIndex(ctx(t)); err != nil || !rep.OK() {
		t.Fatalf("VerifyIndex after Repair: %+v, %v", rep, err)
	}
	if linked, all := checkLinks(t, e); linked != n || all != n+1 {
		t.Fatalf("after Repair and one more record %d of %d entries linked, want %d of %d", linked, all, n, n+1)
	}
	got = ids(t, l, 4)
	slices.Sort(got)
	wantNow := append(slices.Clone(want), "c4-99")
	slices.Sort(wantNow)
	if !slices.Equal(got, wantNow) {
		t.Fatalf("after Repair citizen 4 sees %v, want %v", got, wantNow)
	}
}

// TestVerifyIndexNamesWrongLink: an authentic entry whose link skips one of its citizen's entries
// (only a broker bug could write one: JetStream checks every link the indexer writes) is named by
// VerifyIndex, and Repair replaces it with an unlinked entry, after which the listing is complete.
func TestVerifyIndexNamesWrongLink(t *testing.T) {
	e := newEnv(t)
	opts := accesslog.Options{}
	l := e.open(opts)
	for i := range 4 {
		if err := l.Append(ctx(t), record(4, fmt.Sprintf("c4-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.waitIndexed(testShards, 4)
	caughtUp(t, l)
	ents := listEntries(t, l, pseudonym(4)) // newest first
	s, newest := indexMsg(t, e, ents[0])
	_, skipTo := indexMsg(t, e, ents[2])
	if err := s.DeleteMsg(ctx(t), newest.Sequence); err != nil {
		t.Fatal(err)
	}
	opts.Sealer = e.sealer
	opts.IndexShards = testShards
	if err := accesslog.PublishRelinked(ctx(t), e.js, opts, newest.Subject, newest.Header, newest.Data, skipTo.Sequence); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, l, 4); len(got) != 3 {
		t.Fatalf("the wrong link hides nothing? citizen 4 sees %v", got) // the test's premise
	}
	rep, err := l.VerifyIndex(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var named bool
	for _, d := range rep.Differences {
		t.Log(d)
		named = named || d.Kind == accesslog.DiffLink && d.LeafIndex == ents[0].LeafIndex && d.AccessID == ents[0].Record.GetId()
	}
	if !named || len(rep.Differences) != 2 { // the link, and the leaf without a right entry
		t.Fatalf("VerifyIndex found %v, want the wrong link named", rep.Differences)
	}
	if _, err := l.Repair(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if rep, err := l.VerifyIndex(ctx(t)); err != nil || !rep.OK() {
		t.Fatalf("VerifyIndex after Repair: %+v, %v", rep, err)
	}
	if got := ids(t, l, 4); len(got) != 4 {
		t.Fatalf("after Repair citizen 4 sees %v, want all 4", got)
	}
}

// TestHeadsSurviveRestart: the indexer saves each citizen's newest entry (periodically, and when it
// stops), and an indexer that starts later reads them back, then the entries the shards hold after them (written by an indexer that
// did not save), so it links every citizen's next entry without looking anyone up. Saved heads that
// do not verify are not used: the indexer looks each citizen up once, and the links are right
// either way.
func TestHeadsSurviveRestart(t *testing.T) {
	e := newEnv(t)
	const citizens = 10
	round := func(l *accesslog.Log, r int) {
		t.Helper()
		for c := range citizens {
			if err := l.Append(ctx(t), record(10+c, fmt.Sprintf("c%d-%d", 10+c, r))); err != nil {
				t.Fatal(err)
			}
		}
		e.waitIndexed(testShards, uint64(citizens*(r+1)))
		caughtUp(t, l)
	}
	saved := func() *jetstream.ObjectInfo {
		obs, err := e.js.ObjectStore(ctx(t), accesslog.HeadsBucket)
		if err != nil {
			return nil
		}
		info, err := obs.GetInfo(ctx(t), fmt.Sprintf("heads-%d", testShards))
		if err != nil {
			return nil
		}
		return info
	}

	l := e.open(accesslog.Options{}) // saves when it stops, at the latest
	round(l, 0)
	l.Close()
	if saved() == nil {
		t.Fatal("the indexer did not save its heads when it stopped")
	}

	// Two more indexers that do not save: the second reads the first one's entries after the save.
	for r := 1; r <= 2; r++ {
		l = e.open(accesslog.Options{IndexHeadsEvery: -1})
		round(l, r)
		if n := l.Stats().IndexLookups; n != 0 {
			t.Fatalf("round %d: the indexer looked up %d citizens, want none: it has their saved heads", r, n)
		}
		l.Close()
	}

	// Saved heads someone else wrote (no valid MAC) are not used.
	obs, err := e.js.ObjectStore(ctx(t), accesslog.HeadsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info := saved()
	data, err := obs.GetBytes(ctx(t), info.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Put(ctx(t), jetstream.ObjectMeta{Name: info.Name, Headers: info.Headers}, strings.NewReader(string(data)+"x")); err != nil {
		t.Fatal(err)
	}
	l = e.open(accesslog.Options{IndexHeadsEvery: -1})
	round(l, 3)
	if n := l.Stats().IndexLookups; n != citizens {
		t.Fatalf("with forged saved heads the indexer looked up %d citizens, want each of the %d once", n, citizens)
	}
	if l.Stats().UnauthenticEntries == 0 {
		t.Fatal("the forged saved heads were not reported")
	}
	if linked, all := checkLinks(t, e); linked != 4*citizens || all != 4*citizens {
		t.Fatalf("%d of %d entries linked, want all %d", linked, all, 4*citizens)
	}
	for c := range citizens {
		if got := ids(t, l, 10+c); len(got) != 4 {
			t.Fatalf("citizen %d sees %v, want 4 records", 10+c, got)
		}
	}
	l.Close()

	// An indexer that restored saved heads does not save them again at its first group (at a
	// country's scale that is ~120 MB written for nothing), only IndexHeadsEvery later or when it
	// stops. One that had none to restore saves them at its first group.
	l = e.open(accesslog.Options{})
	round(l, 4)
	l.Close()
	before := saved()
	l = e.open(accesslog.Options{})
	round(l, 5)
	if n := l.Stats().IndexLookups; n != 0 {
		t.Fatalf("the indexer looked up %d citizens, want none: it has their saved heads", n)
	}
	if now := saved(); now == nil || now.NUID != before.NUID {
		t.Fatal("an indexer that restored the heads saved them again at its first group")
	}
	l.Close()
	if now := saved(); now == nil || now.NUID == before.NUID {
		t.Fatal("the indexer did not save its heads when it stopped")
	}
}
