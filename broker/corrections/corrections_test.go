package corrections_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/corrections"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

func TestCorrectionQueue(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	s, err := corrections.Open(ctx, js, corrections.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, corrections.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const secret = "Proposed-Value-Never-Stored-Plain"
	r, err := s.Create(ctx, &corrections.Request{
		Authority: "authA", Pseudonym: "pnA", CitizenID: "0101010101", Dataset: "ds", Field: "f.g",
		Reason: "moved last year", Proposed: secret,
	}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != corrections.StatusOpen {
		t.Fatalf("new request is %q", r.Status)
	}
	// A caller that logs first names the id; the same id again changes nothing.
	id := corrections.NewID(now)
	given := &corrections.Request{ID: id, Authority: "authA", Pseudonym: "pnC", CitizenID: "0202020202", Dataset: "ds", Field: "f", Reason: "r"}
	if got, err := s.Create(ctx, given, nil, now); err != nil || got.ID != id {
		t.Fatalf("create with id %s: %v, %v", id, got, err)
	}
	if _, err := s.Create(ctx, given, nil, now); err == nil {
		t.Fatal("the same id was stored twice")
	}
	e, err := kv.Get(ctx, "authA.pnA."+r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Value(), []byte(secret)) || bytes.Contains(e.Value(), []byte("0101010101")) {
		t.Fatal("the stored record shows the proposed value or citizen id in plain")
	}

	// The authority sees it; another authority does not, and cannot decide it.
	if got, err := s.ListByAuthority(ctx, "authA", true); err != nil || len(got) != 2 || got[0].Proposed != secret && got[1].Proposed != secret {
		t.Fatalf("authA lists %v, %v", got, err)
	}
	if got, err := s.ListByAuthority(ctx, "authB", false); err != nil || len(got) != 0 {
		t.Fatalf("authB lists %v, %v", got, err)
	}
	if _, err := s.Decide(ctx, "authB", r.ID, true, "ok", "staff", nil, now); !errors.Is(err, corrections.ErrNotFound) {
		t.Fatalf("another authority decides: %v", err)
	}
	// Another citizen does not see it.
	if got, err := s.ListByCitizen(ctx, "pnB"); err != nil || len(got) != 0 {
		t.Fatalf("pnB lists %v, %v", got, err)
	}

	d, err := s.Decide(ctx, "authA", r.ID, false, "our record matches the deed", "staff1", nil, now.Add(time.Hour))
	if err != nil || d.Status != corrections.StatusRejected || d.DecisionReason == "" {
		t.Fatalf("decide: %+v, %v", d, err)
	}
	if _, err := s.Decide(ctx, "authA", r.ID, true, "again", "staff1", nil, now); !errors.Is(err, corrections.ErrDecided) {
		t.Fatalf("second decision: %v", err)
	}
	if got, _ := s.ListByAuthority(ctx, "authA", true); len(got) != 1 || got[0].ID != id {
		t.Fatalf("open list after decision: %d", len(got))
	}
	mine, err := s.ListByCitizen(ctx, "pnA")
	if err != nil || len(mine) != 1 || mine[0].Status != corrections.StatusRejected {
		t.Fatalf("citizen list: %v, %v", mine, err)
	}

	// A record copied under another citizen's key, and the open record written back over the
	// decision: both do not verify. The citizen sees them as unverified, the authority not at all.
	if _, err := kv.Put(ctx, "authA.pnB."+r.ID, e.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "authA.pnA."+r.ID, e.Value()); err != nil {
		t.Fatal(err)
	}
	for _, pn := range []string{"pnA", "pnB"} {
		got, err := s.ListByCitizen(ctx, pn)
		if err != nil || len(got) != 1 || !got[0].Unverified {
			t.Errorf("%s after tampering: %+v, %v", pn, got, err)
		}
	}
	if got, err := s.ListByAuthority(ctx, "authA", false); err != nil || len(got) != 1 || got[0].ID != id {
		t.Errorf("authority after tampering: %d, %v", len(got), err)
	}
	if _, err := s.Decide(ctx, "authA", r.ID, true, "ok", "staff", nil, now); !errors.Is(err, corrections.ErrNotFound) {
		t.Errorf("decide a tampered request: %v", err)
	}
	if s.Unauthentic() == 0 {
		t.Error("tampered records were not counted")
	}
}

// TestCorrectionEventsOutbox: the agencies a request or decision tells are part of its write, and the
// relay publishes each event once, even when the outbox is handed out again; a forged record tells
// nobody.
func TestCorrectionEventsOutbox(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"aperture.events.>"}, Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s, err := corrections.Open(ctx, js, corrections.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	uses := []corrections.Use{
		{CaseID: "case_1", Journey: "j", Agency: "agencyA", ReleasedAt: now.Add(-time.Hour)},
		{CaseID: "case_2", Journey: "j", Agency: "agencyB", ReleasedAt: now.Add(-time.Hour)},
		{CaseID: "case_3", Journey: "j", Agency: "not.a token", ReleasedAt: now.Add(-time.Hour)},
	}
	r, err := s.Create(ctx, &corrections.Request{
		Authority: "authA", Pseudonym: "pnA", CitizenID: "0101010101", Dataset: "ds", Field: "f", Reason: "wrong",
	}, uses, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decide(ctx, "authA", r.ID, true, "fixed", "staff", uses[:1], now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A record nobody sealed: reported, never relayed.
	kv, err := js.KeyValue(ctx, corrections.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "authA.pnZ."+corrections.NewID(now), []byte("forged")); err != nil {
		t.Fatal(err)
	}

	relay := func() *sealedkv.Relay {
		rl, err := s.Relay(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- rl.Run(rctx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("relay: %v", err)
			}
		})
		return rl
	}
	want := []string{
		"aperture.events.agency.agencyA.correction_decided case_1 CORRECTION_STATUS_ACCEPTED",
		"aperture.events.agency.agencyA.correction_requested case_1 CORRECTION_STATUS_OPEN",
		"aperture.events.agency.agencyB.correction_requested case_2 CORRECTION_STATUS_OPEN",
	}
	first := relay()
	got := waitEvents(t, js, len(want))
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n%v\nwant\n%v", got, want)
	}
	if first.Skipped() != 1 || s.Unauthentic() == 0 {
		t.Errorf("the forged record: skipped %d, unauthentic %d; want it skipped and reported", first.Skipped(), s.Unauthentic())
	}
	// Every acknowledgement lost: the outbox is handed out again from the start; still each event once.
	if err := js.DeleteConsumer(ctx, "KV_"+corrections.Bucket, corrections.RelayConsumer); err != nil {
		t.Fatal(err)
	}
	again := relay()
	deadline := time.Now().Add(20 * time.Second)
	for again.Published() < uint64(len(want)) {
		if time.Now().After(deadline) {
			t.Fatalf("the second relay published %d of %d", again.Published(), len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := waitEvents(t, js, len(want)); !slices.Equal(got, want) {
		t.Fatalf("after relaying again:\n%v\nwant each once:\n%v", got, want)
	}
}

// waitEvents waits until EVENTS holds n messages and returns them as "subject case status", sorted.
func waitEvents(t *testing.T, js jetstream.JetStream, n int) []string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := js.Stream(ctx, "EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.State.Msgs) >= n {
			var out []string
			for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
				m, err := st.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				var ev brokerv1.CorrectionEvent
				if err := proto.Unmarshal(m.Data, &ev); err != nil {
					t.Fatal(err)
				}
				out = append(out, m.Subject+" "+ev.GetCaseId()+" "+ev.GetStatus().String())
			}
			slices.Sort(out)
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("EVENTS holds %d messages, want %d", info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
