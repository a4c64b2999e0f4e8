package corrections_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/corrections"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
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
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != corrections.StatusOpen {
		t.Fatalf("new request is %q", r.Status)
	}
	// A caller that logs first names the id; the same id again changes nothing.
	id := corrections.NewID(now)
	given := &corrections.Request{ID: id, Authority: "authA", Pseudonym: "pnC", CitizenID: "0202020202", Dataset: "ds", Field: "f", Reason: "r"}
	if got, err := s.Create(ctx, given, now); err != nil || got.ID != id {
		t.Fatalf("create with id %s: %v, %v", id, got, err)
	}
	if _, err := s.Create(ctx, given, now); err == nil {
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
	if _, err := s.Decide(ctx, "authB", r.ID, true, "ok", "staff", now); !errors.Is(err, corrections.ErrNotFound) {
		t.Fatalf("another authority decides: %v", err)
	}
	// Another citizen does not see it.
	if got, err := s.ListByCitizen(ctx, "pnB"); err != nil || len(got) != 0 {
		t.Fatalf("pnB lists %v, %v", got, err)
	}

	d, err := s.Decide(ctx, "authA", r.ID, false, "our record matches the deed", "staff1", now.Add(time.Hour))
	if err != nil || d.Status != corrections.StatusRejected || d.DecisionReason == "" {
		t.Fatalf("decide: %+v, %v", d, err)
	}
	if _, err := s.Decide(ctx, "authA", r.ID, true, "again", "staff1", now); !errors.Is(err, corrections.ErrDecided) {
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
	if _, err := s.Decide(ctx, "authA", r.ID, true, "ok", "staff", now); !errors.Is(err, corrections.ErrNotFound) {
		t.Errorf("decide a tampered request: %v", err)
	}
	if s.Unauthentic() == 0 {
		t.Error("tampered records were not counted")
	}
}
