package accesslog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/natsembed"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// env is a real embedded NATS server with a connection that survives restarts of the server.
type env struct {
	t    *testing.T
	dir  string
	port int
	srv  *natsembed.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	// sealer is the broker's sealing key, the same across restarts.
	sealer *keys.AEADRing
}

// newSealer returns a sealing key ring with one random key.
func newSealer(t testing.TB) *keys.AEADRing {
	t.Helper()
	key := make([]byte, keys.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	r := keys.NewAEADRing()
	if err := r.Add(1, key); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCurrent(1); err != nil {
		t.Fatal(err)
	}
	return r
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), port: -1, sealer: newSealer(t)}
	e.start()
	var err error
	e.nc, err = e.srv.Connect(nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.nc.Close()
		if e.srv != nil {
			e.srv.Shutdown()
		}
	})
	return e
}

func (e *env) start() {
	e.t.Helper()
	srv, err := natsembed.Start(natsembed.Options{Dir: e.dir, Port: e.port})
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
	if e.port == -1 {
		u := srv.ClientURL()
		e.port, _ = strconv.Atoi(u[strings.LastIndexByte(u, ':')+1:])
	}
}

func (e *env) stop() {
	e.t.Helper()
	e.srv.Shutdown()
	e.srv = nil
	// The client notices the closed connection asynchronously; until it does, its status still
	// says connected.
	deadline := time.Now().Add(5 * time.Second)
	for e.nc.Status() == nats.CONNECTED {
		if time.Now().After(deadline) {
			e.t.Fatal("client did not notice the server stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// restart starts the server again on the same port and store and waits for the connection.
func (e *env) restart() {
	e.t.Helper()
	e.start()
	deadline := time.Now().Add(10 * time.Second)
	for e.nc.Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			e.t.Fatal("client did not reconnect to the restarted server")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testShards keeps the tests quick: every Open checks each index stream.
const testShards = 4

func (e *env) open(opts accesslog.Options) *accesslog.Log {
	e.t.Helper()
	if opts.IndexShards == 0 {
		opts.IndexShards = testShards
	}
	if opts.Sealer == nil {
		opts.Sealer = e.sealer
	}
	if opts.Logger == nil && testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{e.t}, nil))
	}
	return e.openOn(e.js, opts)
}

// openReplica opens the log on a connection of its own, as another broker replica would.
func (e *env) openReplica(opts accesslog.Options) *accesslog.Log {
	e.t.Helper()
	nc, err := e.srv.Connect()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	if opts.Sealer == nil {
		opts.Sealer = e.sealer
	}
	if opts.Logger == nil && testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{e.t}, nil))
	}
	return e.openOn(js, opts)
}

func (e *env) openOn(js jetstream.JetStream, opts accesslog.Options) *accesslog.Log {
	e.t.Helper()
	l, err := accesslog.Open(ctx(e.t), js, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	return l
}

// indexMsgs counts the entries in all index shards.
func (e *env) indexMsgs(shards int) uint64 {
	e.t.Helper()
	var n uint64
	for i := range shards {
		n += e.streamMsgs(accesslog.IndexStreamName(shards, i))
	}
	return n
}

// waitIndexed waits until the index shards hold n entries, and fails if they hold more or never get
// there: the indexer works in the background.
func (e *env) waitIndexed(shards int, n uint64) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := e.indexMsgs(shards)
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			e.t.Fatalf("the index holds %d entries, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(ctx(e.t), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func pseudonym(i int) string { return fmt.Sprintf("%032x", 0xc0ffee0000+i) }

func record(citizen int, id string) *auditv1.AccessRecord {
	return &auditv1.AccessRecord{
		Id:               id,
		Time:             timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		CitizenPseudonym: pseudonym(citizen),
		PseudonymKeyId:   "local:00000000",
		Kind:             auditv1.AccessKind_ACCESS_KIND_CASEWORKER,
		Agency:           "municipality",
		Caseworker:       "cw-17",
		CaseId:           "case_1",
		Journey:          "moving-house",
		Step:             "register-address",
		Authority:        "population",
		Dataset:          "person",
		Fields:           []string{"name.given", "address.street"},
		Purpose:          "update the address",
		LegalBasis:       "CPR act §10",
		Decision:         auditv1.Decision_DECISION_RELEASED,
		PolicyVersion:    "sha256:abc",
	}
}

func leaf(t *testing.T, r *auditv1.AccessRecord) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listAll pages through a citizen's records and checks every page's size.
func listAll(t *testing.T, l *accesslog.Log, p string, pageSize int) []*auditv1.AccessRecord {
	t.Helper()
	var all []*auditv1.AccessRecord
	token := ""
	for range 10000 {
		recs, next, err := l.List(ctx(t), p, pageSize, token)
		if err != nil {
			t.Fatalf("List(page %q): %v", token, err)
		}
		if len(recs) > pageSize || (next != "" && len(recs) != pageSize) {
			t.Fatalf("page of %d records with next=%q, page size %d", len(recs), next, pageSize)
		}
		all = append(all, recs...)
		if next == "" {
			return all
		}
		token = next
	}
	t.Fatal("List never ended")
	return nil
}

type pos struct {
	seq uint64
	idx int
}

// logOrder reads the whole log with Records, checks each leaf is a deterministic encoding, and
// returns every record id's position.
func logOrder(t *testing.T, l *accesslog.Log) (map[string]pos, []string) {
	t.Helper()
	at := map[string]pos{}
	var ids []string
	last := pos{}
	err := l.Records(ctx(t), 1, func(seq uint64, index int, lf []byte) error {
		if seq < last.seq || (seq == last.seq && index != last.idx+1) || (seq > last.seq && index != 0) {
			return fmt.Errorf("records out of order: (%d,%d) after (%d,%d)", seq, index, last.seq, last.idx)
		}
		last = pos{seq, index}
		var r auditv1.AccessRecord
		if err := proto.Unmarshal(lf, &r); err != nil {
			return err
		}
		if !bytes.Equal(leaf(t, &r), lf) {
			return fmt.Errorf("leaf (%d,%d) is not the deterministic encoding of its record", seq, index)
		}
		if _, dup := at[r.GetId()]; dup {
			return fmt.Errorf("record %s logged twice", r.GetId())
		}
		at[r.GetId()] = last
		ids = append(ids, r.GetId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return at, ids
}

// checkListed checks that List returns exactly the citizen's records from the log, newest first.
func checkListed(t *testing.T, l *accesslog.Log, citizen int, at map[string]pos, pageSize int) int {
	t.Helper()
	recs := listAll(t, l, pseudonym(citizen), pageSize)
	want := 0
	for id := range at {
		if strings.HasPrefix(id, fmt.Sprintf("c%d-", citizen)) {
			want++
		}
	}
	if len(recs) != want {
		t.Fatalf("citizen %d: List returned %d records, the log has %d", citizen, len(recs), want)
	}
	seen := map[string]bool{}
	for i, r := range recs {
		if r.GetCitizenPseudonym() != pseudonym(citizen) {
			t.Fatalf("citizen %d: List returned another citizen's record %s", citizen, r.GetId())
		}
		if seen[r.GetId()] {
			t.Fatalf("citizen %d: record %s listed twice", citizen, r.GetId())
		}
		seen[r.GetId()] = true
		if i > 0 {
			prev, cur := at[recs[i-1].GetId()], at[r.GetId()]
			if cur.seq > prev.seq || (cur.seq == prev.seq && cur.idx > prev.idx) {
				t.Fatalf("citizen %d: not newest first: %v listed after %v", citizen, cur, prev)
			}
		}
	}
	return len(recs)
}

func TestConcurrentAppendsGroupAndList(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	const goroutines, each, citizens = 64, 50, 8
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				c := (g + i) % citizens
				if err := l.Append(ctx(t), record(c, fmt.Sprintf("c%d-g%d-%d", c, g, i))); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}

	st := l.Stats()
	const total = goroutines * each
	if st.Records != total || st.Failed != 0 {
		t.Fatalf("stats %+v, want %d records and no failures", st, total)
	}
	if msgs := e.streamMsgs(accesslog.AccessStream); msgs != st.Batches || msgs >= total {
		t.Fatalf("ACCESS holds %d messages for %d records (%d batches counted): appends did not share writes", msgs, total, st.Batches)
	}
	t.Logf("%d records in %d durable writes (%.1f per write)", total, st.Batches, float64(total)/float64(st.Batches))
	e.waitIndexed(testShards, total)

	at, _ := logOrder(t, l)
	if len(at) != total {
		t.Fatalf("the log holds %d records, want %d", len(at), total)
	}
	sum := 0
	for c := range citizens {
		sum += checkListed(t, l, c, at, []int{1, 7, 100, 1000}[c%4])
	}
	if sum != total {
		t.Fatalf("listed %d records in all, want %d", sum, total)
	}
}

// TestReadYourWrites: once Append returns, List shows the record.
func TestReadYourWrites(t *testing.T) {
	l := newEnv(t).open(accesslog.Options{})
	for i := range 20 {
		r := record(1, fmt.Sprintf("c1-%d", i))
		if err := l.Append(ctx(t), r); err != nil {
			t.Fatal(err)
		}
		recs, _, err := l.List(ctx(t), pseudonym(1), 1, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || !proto.Equal(recs[0], r) {
			t.Fatalf("after Append(%s), List's newest record is %v", r.GetId(), recs)
		}
	}
}

func TestListPaging(t *testing.T) {
	l := newEnv(t).open(accesslog.Options{})
	for i := range 25 {
		if err := l.Append(ctx(t), record(3, fmt.Sprintf("c3-%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Append(ctx(t), record(4, "c4-00")); err != nil {
		t.Fatal(err)
	}
	ids := func(recs []*auditv1.AccessRecord) string {
		var s []string
		for _, r := range recs {
			s = append(s, strings.TrimPrefix(r.GetId(), "c3-"))
		}
		return strings.Join(s, ",")
	}
	_, page1Token, err := l.List(ctx(t), pseudonym(3), 10, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		p        string
		size     int
		token    string
		want     string
		wantNext bool
		wantErr  error
	}{
		{"first page", pseudonym(3), 10, "", "24,23,22,21,20,19,18,17,16,15", true, nil},
		{"second page", pseudonym(3), 10, page1Token, "14,13,12,11,10,09,08,07,06,05", true, nil},
		{"page size 0 means default", pseudonym(3), 0, "", "24,23,22,21,20,19,18,17,16,15,14,13,12,11,10,09,08,07,06,05,04,03,02,01,00", false, nil},
		{"page size above the maximum is capped", pseudonym(3), 5000, "", "24,23,22,21,20,19,18,17,16,15,14,13,12,11,10,09,08,07,06,05,04,03,02,01,00", false, nil},
		{"exact fit has no next page", pseudonym(3), 25, "", "24,23,22,21,20,19,18,17,16,15,14,13,12,11,10,09,08,07,06,05,04,03,02,01,00", false, nil},
		{"unknown citizen", pseudonym(99), 10, "", "", false, nil},
		{"garbage token", pseudonym(3), 10, "not-a-token", "", false, accesslog.ErrInvalidPageToken},
		{"empty token payload", pseudonym(3), 10, "AQ", "", false, accesslog.ErrInvalidPageToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, next, err := l.List(ctx(t), tt.p, tt.size, tt.token)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := ids(recs); got != tt.want || (next != "") != tt.wantNext {
				t.Fatalf("List = %s next=%q, want %s next=%v", got, next, tt.want, tt.wantNext)
			}
		})
	}

	// A page that started before more records arrived stays stable.
	if err := l.Append(ctx(t), record(3, "c3-25")); err != nil {
		t.Fatal(err)
	}
	recs, _, err := l.List(ctx(t), pseudonym(3), 10, page1Token)
	if err != nil || ids(recs) != "14,13,12,11,10,09,08,07,06,05" {
		t.Fatalf("second page after a new record: %s, %v", ids(recs), err)
	}

	for _, bad := range []string{"", "a.b", "*", ">", "a b", strings.Repeat("a", 129)} {
		if _, _, err := l.List(ctx(t), bad, 10, ""); err == nil {
			t.Errorf("List(%q) accepted a pseudonym that is not one subject token", bad)
		}
	}
}

func TestAppendRejectsInvalidRecords(t *testing.T) {
	l := newEnv(t).open(accesslog.Options{MaxBatchBytes: 4096})
	big := record(1, "big")
	big.Fields = []string{strings.Repeat("f", 5000)}
	tests := []struct {
		name string
		rec  *auditv1.AccessRecord
	}{
		{"nil", nil},
		{"no pseudonym", &auditv1.AccessRecord{Id: "x"}},
		{"pseudonym with a dot", &auditv1.AccessRecord{Id: "x", CitizenPseudonym: "ab.cd"}},
		{"pseudonym with a wildcard", &auditv1.AccessRecord{Id: "x", CitizenPseudonym: ">"}},
		{"larger than a batch", big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := l.Append(ctx(t), tt.rec); !errors.Is(err, accesslog.ErrInvalidRecord) {
				t.Fatalf("err = %v, want ErrInvalidRecord", err)
			}
		})
	}
	if st := l.Stats(); st.Batches != 0 {
		t.Fatalf("invalid records were written: %+v", st)
	}
}

func TestOpenValidatesOptions(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		opts accesslog.Options
		want string
	}{
		{"no sealer", accesslog.Options{}, "sealer"},
		{"negative replicas", accesslog.Options{Sealer: e.sealer, Replicas: -1}, "replicas"},
		{"batch larger than max_payload", accesslog.Options{Sealer: e.sealer, MaxBatchBytes: 2 << 20}, "max_payload"},
		{"negative timeout", accesslog.Options{Sealer: e.sealer, PublishTimeout: -time.Second}, "publish timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := accesslog.Open(ctx(t), e.js, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestStreamConfig(t *testing.T) {
	e := newEnv(t)
	e.open(accesslog.Options{IndexShards: 64}) // shard numbers of two hex digits
	s, err := e.js.Stream(ctx(t), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if !c.DenyDelete || !c.DenyPurge || c.MaxAge != 0 || c.MaxMsgs != -1 || c.Storage != jetstream.FileStorage || c.Duplicates != 2*time.Minute || c.PersistMode != jetstream.DefaultPersistMode {
		t.Fatalf("ACCESS config %+v", c)
	}
	if err := s.DeleteMsg(ctx(t), 1); err == nil {
		t.Fatal("a message could be deleted from ACCESS")
	}
	if err := s.Purge(ctx(t)); err == nil {
		t.Fatal("ACCESS could be purged")
	}
	names := e.js.StreamNames(ctx(t), jetstream.WithStreamListSubject(accesslog.IndexSubjectPrefix+">"))
	n := 0
	for range names.Name() {
		n++
	}
	if n != 64 {
		t.Fatalf("%d index streams, want 64", n)
	}
	ix, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(64, 0x3f))
	if err != nil {
		t.Fatal(err)
	}
	if ic := ix.CachedInfo().Config; ic.PersistMode != jetstream.AsyncPersistMode || ic.Storage != jetstream.FileStorage ||
		fmt.Sprint(ic.Subjects) != "[aperture.access.citizen.64.3f.*]" || !ic.AllowDirect {
		t.Fatalf("index shard config %+v", ic)
	}
}

func TestShardCountChangeRebuilds(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{IndexShards: 4})
	for i := range 40 {
		if err := l.Append(ctx(t), record(i%5, fmt.Sprintf("c%d-%d", i%5, i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	l = e.open(accesslog.Options{IndexShards: 8})
	if _, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(8, 7)); err != nil {
		t.Fatalf("shard 7 missing: %v", err)
	}
	e.waitIndexed(8, 40)
	at, _ := logOrder(t, l)
	for c := range 5 {
		if n := checkListed(t, l, c, at, 3); n != 8 {
			t.Fatalf("citizen %d: %d records listed, want 8", c, n)
		}
	}
	l.Close()
	e.open(accesslog.Options{IndexShards: 2}) // reopening with fewer shards is what drops shard 7
	if _, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(8, 7)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("shard 7 of the old layout still there: %v", err)
	}
	e.waitIndexed(2, 40)
}

// TestUnavailable stops the server under load: callers get ErrUnavailable promptly, nothing hangs,
// every record a caller was told is durable survives, and the log works again after a restart.
func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{PublishTimeout: 500 * time.Millisecond})

	var (
		mu     sync.Mutex
		acked  []string
		failed int
		wg     sync.WaitGroup
		stop   = make(chan struct{})
	)
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-g%d-%d", g%4, g, i)
				err := l.Append(context.Background(), record(g%4, id))
				switch {
				case err == nil:
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				case !errors.Is(err, accesslog.ErrUnavailable):
					t.Errorf("Append while the server stops: %v, want ErrUnavailable", err)
					return
				default:
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	e.stop()

	begin := time.Now()
	err := l.Append(context.Background(), record(1, "c1-while-down"))
	if !errors.Is(err, accesslog.ErrUnavailable) {
		t.Fatalf("Append with the server down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Append took %s to fail", d)
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("appends hang with the server down")
	}
	if len(acked) == 0 {
		t.Fatal("no append succeeded before the stop; the test proves nothing")
	}

	e.restart()
	// The breaker opened with the first failed write and refuses appends until a probe write is
	// durable: wait for that rather than for the connection.
	waitWritable(t, l)
	if err := l.Append(ctx(t), record(1, "c1-after")); err != nil {
		t.Fatalf("Append after restart: %v", err)
	}
	at, _ := logOrder(t, l)
	for _, id := range acked {
		if _, ok := at[id]; !ok {
			t.Fatalf("record %s was acknowledged but is not in the log after the restart", id)
		}
	}
	// The index recovers too (failed batches may have landed in the log; List shows what the log has).
	deadline := time.Now().Add(10 * time.Second)
	for c := range 4 {
		for {
			recs := listAll(t, l, pseudonym(c), 1000)
			want := 0
			for id := range at {
				if strings.HasPrefix(id, fmt.Sprintf("c%d-", c)) {
					want++
				}
			}
			if len(recs) == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("citizen %d: List shows %d records, the log has %d", c, len(recs), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("%d appends acknowledged before the stop, %d failed; stats %+v", len(acked), failed, l.Stats())

	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	if err := l.Append(ctx(t), record(1, "c1-closed")); !errors.Is(err, accesslog.ErrClosed) || !errors.Is(err, accesslog.ErrUnavailable) {
		t.Fatalf("Append after Close: %v", err)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	for i := range 30 {
		if err := l.Append(ctx(t), record(i%3, fmt.Sprintf("c%d-%d", i%3, i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	e.stop()
	e.restart()
	l = e.open(accesslog.Options{})
	at, _ := logOrder(t, l)
	if len(at) != 30 {
		t.Fatalf("after restart the log holds %d records, want 30", len(at))
	}
	for c := range 3 {
		if n := checkListed(t, l, c, at, 4); n != 10 {
			t.Fatalf("citizen %d: %d records listed, want 10", c, n)
		}
	}
	e.waitIndexed(testShards, 30)
	caughtUp(t, l)
	if rep, err := l.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Leaves != 30 {
		t.Fatalf("VerifyIndex after restart: %+v, %v", rep, err)
	}
}

// publishBatch writes records to ACCESS behind the log's back, sealed as the broker seals them: what
// a broker that died after its log write leaves for the indexer.
func publishBatch(t *testing.T, e *env, recs ...*auditv1.AccessRecord) uint64 {
	t.Helper()
	var leaves [][]byte
	for _, r := range recs {
		leaves = append(leaves, leaf(t, r))
	}
	data, err := accesslog.SealBatch(e.sealer, leaves)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := e.js.Publish(ctx(t), accesslog.LogSubject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func TestCatchUpOnOpen(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	for i := range 10 {
		if err := l.Append(ctx(t), record(i%2, fmt.Sprintf("c%d-%d", i%2, i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	// What brokers that died between their log write and their indexing leave: batches in the log
	// no indexer saw; and an index entry for one of them written by someone without the broker's
	// key, which must be neither listed nor trusted as a position.
	seq := publishBatch(t, e, record(0, "c0-part-a"), record(1, "c1-part-b"), record(0, "c0-part-c"))
	if _, err := e.js.PublishMsg(ctx(t), &nats.Msg{
		Subject: accesslog.IndexSubject(testShards, pseudonym(1)),
		Data:    leaf(t, record(1, "c1-part-b")),
		Header: nats.Header{
			accesslog.HeaderLogSeq:      {strconv.FormatUint(seq, 10)},
			accesslog.HeaderLogIndex:    {"1"},
			accesslog.HeaderLeafIndex:   {"11"},
			accesslog.HeaderBatchLeaves: {"10+3"},
		},
	}); err != nil {
		t.Fatal(err)
	}
	publishBatch(t, e, record(0, "c0-lost-a"), record(1, "c1-lost-b"))

	l = e.open(accesslog.Options{})
	e.waitIndexed(testShards, 15)
	caughtUp(t, l)
	at, _ := logOrder(t, l)
	if len(at) != 15 {
		t.Fatalf("log holds %d records, want 15", len(at))
	}
	if n := checkListed(t, l, 0, at, 3) + checkListed(t, l, 1, at, 3); n != 15 {
		t.Fatalf("%d records listed, want 15", n)
	}
	if rep, err := l.VerifyIndex(ctx(t)); err != nil || !rep.OK() || rep.Leaves != 15 {
		t.Fatalf("VerifyIndex: %+v, %v", rep, err)
	}
}

// TestRebuildDeletedIndex deletes the index stream, once while the log is closed and once while it
// runs: both times the index is rebuilt from ACCESS, and appends keep succeeding meanwhile.
func TestRebuildDeletedIndex(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{PublishTimeout: time.Second})
	for i := range 20 {
		if err := l.Append(ctx(t), record(i%2, fmt.Sprintf("c%d-%d", i%2, i))); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	if err := e.js.DeleteStream(ctx(t), accesslog.IndexStreamName(testShards, 1)); err != nil {
		t.Fatal(err)
	}
	l = e.open(accesslog.Options{PublishTimeout: time.Second})
	e.waitIndexed(testShards, 20)
	at, _ := logOrder(t, l)
	if n := checkListed(t, l, 0, at, 7) + checkListed(t, l, 1, at, 7); n != 20 {
		t.Fatalf("after reopening, %d records listed, want 20", n)
	}

	// Delete the shard of citizen 0 (the others keep theirs), while the log runs.
	shard := accesslog.ShardOf(testShards, pseudonym(0))
	if err := e.js.DeleteStream(ctx(t), accesslog.IndexStreamName(testShards, shard)); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 30; i++ {
		if err := l.Append(ctx(t), record(i%2, fmt.Sprintf("c%d-%d", i%2, i))); err != nil {
			t.Fatalf("Append with the index gone: %v (the record is durable; only indexing failed)", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n uint64
		for i := range testShards {
			if s, err := e.js.Stream(ctx(t), accesslog.IndexStreamName(testShards, i)); err == nil {
				n += s.CachedInfo().State.Msgs
			}
		}
		if n == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index not rebuilt while running: %d entries, want 30", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	at, _ = logOrder(t, l)
	if n := checkListed(t, l, 0, at, 7) + checkListed(t, l, 1, at, 7); n != 30 {
		t.Fatalf("after rebuilding, %d records listed, want 30", n)
	}
	if st := l.Stats(); st.IndexFailures == 0 {
		t.Fatalf("stats %+v: the index failure was not counted", st)
	}
}

// TestCanceledCallerDoesNotBreakBatch: callers that give up (some before their record is taken into
// a batch, some while the batch is being written) get their context's error or nil, and the callers
// sharing their batches are unaffected.
func TestCanceledCallerDoesNotBreakBatch(t *testing.T) {
	l := newEnv(t).open(accesslog.Options{})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		live []string
	)
	errs := make(chan error, 400)
	for i := range 400 {
		wg.Go(func() {
			id := fmt.Sprintf("c1-%d", i)
			if i%4 == 0 {
				c, cancel := context.WithTimeout(context.Background(), time.Duration(i)*time.Microsecond)
				defer cancel()
				if err := l.Append(c, record(1, id)); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					errs <- fmt.Errorf("caller that gave up: %v", err)
				}
				return
			}
			if err := l.Append(context.Background(), record(1, id)); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			live = append(live, id)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	at, _ := logOrder(t, l)
	for _, id := range live {
		if _, ok := at[id]; !ok {
			t.Fatalf("record %s was acknowledged but is not in the log", id)
		}
	}
	if st := l.Stats(); st.Failed != 0 {
		t.Fatalf("stats %+v: appends failed", st)
	}
}

func TestRecordsFromSeq(t *testing.T) {
	e := newEnv(t)
	l := e.open(accesslog.Options{})
	for i := range 5 {
		if err := l.Append(ctx(t), record(1, fmt.Sprintf("c1-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	if err := l.Records(ctx(t), 3, func(seq uint64, _ int, _ []byte) error { seqs = append(seqs, seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[3 4 5]" {
		t.Fatalf("Records from 3 visited %v", seqs)
	}
	stopErr := errors.New("stop")
	n := 0
	err := l.Records(ctx(t), 1, func(uint64, int, []byte) error { n++; return stopErr })
	if !errors.Is(err, stopErr) || n != 1 {
		t.Fatalf("Records did not stop at the callback's error: %v after %d", err, n)
	}
	if err := l.Records(ctx(t), 99, func(uint64, int, []byte) error { return errors.New("called") }); err != nil {
		t.Fatalf("Records beyond the end: %v", err)
	}
}

// BenchmarkAppendParallel measures audited appends per second through group commit on the
// embedded server with fsync before every ack, for a few numbers of concurrent callers.
func BenchmarkAppendParallel(b *testing.B) {
	srv, err := natsembed.Start(natsembed.Options{Dir: b.TempDir(), Port: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	l, err := accesslog.Open(context.Background(), js, accesslog.Options{Sealer: newSealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	recs := make([]*auditv1.AccessRecord, 1024)
	for i := range recs {
		recs[i] = record(i, fmt.Sprintf("c%d-bench", i))
	}
	for _, perCPU := range []int{8, 64} {
		callers := perCPU * runtime.GOMAXPROCS(0)
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			b.SetParallelism(perCPU)
			var (
				mu  sync.Mutex
				lat []time.Duration
			)
			before := l.Stats()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for i := 0; pb.Next(); i++ {
					t0 := time.Now()
					if err := l.Append(context.Background(), recs[i%len(recs)]); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			st := l.Stats()
			batches := st.Batches - before.Batches
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(batches), "batches")
			if batches > 0 {
				b.ReportMetric(float64(st.Records-before.Records)/float64(batches), "records/batch")
			}
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

// benchLogSize is the log size BenchmarkList builds: APERTURE_BENCH_LOG_RECORDS, default 100,000.
func benchLogSize(b *testing.B) int {
	n := 100_000
	if s := os.Getenv("APERTURE_BENCH_LOG_RECORDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1000 {
			b.Fatalf("APERTURE_BENCH_LOG_RECORDS=%q: want a number ≥ 1000", s)
		}
	}
	return n
}

// benchShards is the index shard count BenchmarkList uses: APERTURE_BENCH_INDEX_SHARDS, default 64.
func benchShards(b *testing.B) int {
	n := 64
	if s := os.Getenv("APERTURE_BENCH_INDEX_SHARDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatalf("APERTURE_BENCH_INDEX_SHARDS=%q: %v", s, err)
		}
	}
	return n
}

// benchLog opens a log with shards index shards on a fresh embedded server, appends total records,
// record i to citizen who(i), and waits for the index to take them all in.
func benchLog(b *testing.B, shards, total int, who func(i int) int) *accesslog.Log {
	srv, err := natsembed.Start(natsembed.Options{Dir: b.TempDir(), Port: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	l, err := accesslog.Open(context.Background(), js, accesslog.Options{IndexShards: shards, Sealer: newSealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	var wg sync.WaitGroup
	for g := range 128 {
		wg.Go(func() {
			for i := g; i < total; i += 128 {
				c := who(i)
				if err := l.Append(context.Background(), record(c, fmt.Sprintf("r%d", i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	built := time.Now()
	for {
		lag, err := l.IndexLag(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if lag.Batches == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var bytes uint64
	for i := range shards {
		s, err := js.Stream(context.Background(), accesslog.IndexStreamName(shards, i))
		if err != nil {
			b.Fatal(err)
		}
		bytes += s.CachedInfo().State.Bytes
	}
	b.Logf("log of %d records built; the index caught up %s after the last append; %d shards of %.1f MB each",
		total, time.Since(built).Round(time.Millisecond), shards, float64(bytes)/float64(shards)/1e6)
	return l
}

// BenchmarkList lists a citizen with 1,000 records spread evenly over a log of benchLogSize records.
func BenchmarkList(b *testing.B) {
	total, mine := benchLogSize(b), 1000
	every := total / mine
	l := benchLog(b, benchShards(b), total, func(i int) int {
		if i%every == 0 {
			return 7
		}
		return 1_000_000 + i // someone else
	})
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("page=%d", size), func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				recs, _, err := l.List(context.Background(), pseudonym(7), size, "")
				if err != nil || len(recs) != size {
					b.Fatalf("List: %d records, %v", len(recs), err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkListCold lists citizens with few records (20, or APERTURE_BENCH_CITIZEN_RECORDS) spread
// over the whole log, one citizen per index shard, first after an idle spell in which the server's
// block caches expired (cold-ms), then again and again while the blocks are cached (ns/op).
//
// The idle spell is 11 s, or APERTURE_BENCH_COLD_WAIT. After 11 s each entry costs the load of the
// block it is in, up to 8 MB, unless an entry before it loaded it. Past 2 minutes nats-server has
// also dropped each block's subject summary, and a listing loads every block between two of the
// citizen's entries to learn whether it holds one: that is a cold listing in a country's log. The
// block files are still in the OS page cache, so cold-ms is the server's side of a cold listing; an
// index larger than memory adds a disk read per block.
func BenchmarkListCold(b *testing.B) {
	perCitizen := 20
	if s := os.Getenv("APERTURE_BENCH_CITIZEN_RECORDS"); s != "" {
		var err error
		if perCitizen, err = strconv.Atoi(s); err != nil || perCitizen < 1 {
			b.Fatalf("APERTURE_BENCH_CITIZEN_RECORDS=%q: want a positive number", s)
		}
	}
	shards, total := benchShards(b), benchLogSize(b)
	sparse := make([]int, shards) // one citizen per shard
	for c, found := 100, 0; found < shards; c++ {
		if s := accesslog.ShardOf(shards, pseudonym(c)); sparse[s] == 0 {
			sparse[s], found = c, found+1
		}
	}
	every := total / (perCitizen * shards)
	l := benchLog(b, shards, total, func(i int) int {
		if i%every == 0 && i/every < perCitizen*shards {
			return sparse[(i/every)%shards]
		}
		return 1_000_000 + i // someone else
	})
	wait := 11 * time.Second // past nats-server's block cache expiry (10 s)
	if s := os.Getenv("APERTURE_BENCH_COLD_WAIT"); s != "" {
		var err error
		if wait, err = time.ParseDuration(s); err != nil {
			b.Fatalf("APERTURE_BENCH_COLD_WAIT=%q: %v", s, err)
		}
	}
	time.Sleep(wait)
	list := func(c int) time.Duration {
		start := time.Now()
		recs, _, err := l.List(context.Background(), pseudonym(c), perCitizen, "")
		if err != nil || len(recs) != perCitizen {
			b.Fatalf("List: %d records, %v", len(recs), err)
		}
		return time.Since(start)
	}
	var cold []time.Duration
	for _, c := range sparse {
		cold = append(cold, list(c))
	}
	i := 0
	for b.Loop() {
		list(sparse[i%shards])
		i++
	}
	var sum time.Duration
	for _, d := range cold {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(cold))/1000, "cold-ms")
	b.ReportMetric(float64(slices.Max(cold).Microseconds())/1000, "cold-max-ms")
}

// TestListTimed: every listing is timed by page and result, so an operator sees listings slow down
// as the index outgrows its design (README, capacity model).
func TestListTimed(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	l := newEnv(t).open(accesslog.Options{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	for i := range 3 {
		if err := l.Append(ctx(t), record(5, fmt.Sprintf("c5-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	_, next, err := l.List(ctx(t), pseudonym(5), 2, "")
	if err != nil || next == "" {
		t.Fatalf("first page: next %q, %v", next, err)
	}
	if _, _, err := l.List(ctx(t), pseudonym(5), 2, next); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.List(ctx(t), pseudonym(5), 2, "not-a-token"); !errors.Is(err, accesslog.ErrInvalidPageToken) {
		t.Fatalf("bad token: %v", err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx(t), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != accesslog.MetricListDuration {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				page, _ := dp.Attributes.Value("page")
				result, _ := dp.Attributes.Value("result")
				got[page.AsString()+"/"+result.AsString()] += dp.Count
			}
		}
	}
	if want := map[string]uint64{"first/ok": 1, "next/ok": 1, "next/failed": 1}; !maps.Equal(got, want) {
		t.Fatalf("listings timed %v, want %v", got, want)
	}
}
