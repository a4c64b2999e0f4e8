package delegation_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T) (*delegation.Store, context.Context) {
	t.Helper()
	ctx := context.Background()
	js := natstest.JetStream(t)
	s, err := delegation.Open(ctx, js, delegation.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

func TestGrantResolveRevoke(t *testing.T) {
	s, ctx := open(t)
	d, err := s.Grant(ctx, "pnMother", "pnSon", []delegation.Scope{delegation.SeeCases}, []string{"j1"}, now.Add(30*24*time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Resolve(ctx, "pnSon", d.ID)
	if err != nil || got.Giver != "pnMother" || !got.ActiveAt(now) {
		t.Fatalf("holder resolves: %+v, %v", got, err)
	}
	if !got.Allows(delegation.SeeCases, "j1") || got.Allows(delegation.SeeCases, "j2") || got.Allows(delegation.SeeAccesses, "j1") {
		t.Errorf("scope: %+v", got)
	}
	if got.ActiveAt(d.ExpiresAt) {
		t.Error("active at its expiry")
	}
	// Nobody but the holder resolves it; the giver resolves nothing as a holder.
	for _, who := range []string{"pnMother", "pnStranger"} {
		if _, err := s.Resolve(ctx, who, d.ID); !errors.Is(err, delegation.ErrNotFound) {
			t.Errorf("%s resolves: %v, want ErrNotFound", who, err)
		}
	}
	// Only the giver revokes.
	if _, err := s.Revoke(ctx, "pnSon", d.ID, now); !errors.Is(err, delegation.ErrNotFound) {
		t.Errorf("holder revokes: %v", err)
	}
	given, _ := s.ListGiven(ctx, "pnMother")
	held, _ := s.ListHeld(ctx, "pnSon")
	if len(given) != 1 || len(held) != 1 || given[0].ID != d.ID || held[0].ID != d.ID {
		t.Errorf("lists: given %v, held %v", given, held)
	}
	if others, _ := s.ListHeld(ctx, "pnMother"); len(others) != 0 {
		t.Errorf("giver holds %d", len(others))
	}
	r, err := s.Revoke(ctx, "pnMother", d.ID, now.Add(time.Hour))
	if err != nil || r.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	got, err = s.Resolve(ctx, "pnSon", d.ID)
	if err != nil || got.ActiveAt(now.Add(2*time.Hour)) {
		t.Errorf("after revocation: %+v, %v", got, err)
	}
}

func TestGrantRefusesInvalid(t *testing.T) {
	s, ctx := open(t)
	all := []delegation.Scope{delegation.SeeAccesses}
	for name, c := range map[string]struct {
		giver, holder string
		scopes        []delegation.Scope
		expires       time.Time
	}{
		"to oneself":    {"pnA", "pnA", all, now.Add(time.Hour)},
		"no scope":      {"pnA", "pnB", nil, now.Add(time.Hour)},
		"past expiry":   {"pnA", "pnB", all, now},
		"too long":      {"pnA", "pnB", all, now.Add(delegation.MaxValidity + time.Hour)},
		"bad pseudonym": {"pn.A", "pnB", all, now.Add(time.Hour)},
	} {
		if _, err := s.Grant(ctx, c.giver, c.holder, c.scopes, nil, c.expires, now); !errors.Is(err, delegation.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// TestRecordsFailClosed: a record not sealed by the broker, one copied to another giver's key, and an
// older record written back over a revocation are each unverified, never active; the giver can still
// revoke.
func TestRecordsFailClosed(t *testing.T) {
	ctx := context.Background()
	js := natstest.JetStream(t)
	s, err := delegation.Open(ctx, js, delegation.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, delegation.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Grant(ctx, "pnA", "pnB", []delegation.Scope{delegation.SeeCases}, nil, now.Add(time.Hour*24), now)
	if err != nil {
		t.Fatal(err)
	}
	active, err := kv.Get(ctx, "g.pnA."+d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, "pnA", d.ID, now); err != nil {
		t.Fatal(err)
	}
	// The active record written back over its revocation.
	if _, err := kv.Put(ctx, "g.pnA."+d.ID, active.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "pnB", d.ID); !errors.Is(err, delegation.ErrUnverified) {
		t.Errorf("replayed grant: %v, want ErrUnverified", err)
	}
	given, err := s.ListGiven(ctx, "pnA")
	if err != nil || len(given) != 1 || !given[0].Unverified {
		t.Errorf("giver's list: %+v, %v", given, err)
	}
	if s.Unauthentic() == 0 {
		t.Error("no unauthentic read counted")
	}
	// The giver revokes it again: it resolves to nothing for the holder.
	if _, err := s.Revoke(ctx, "pnA", d.ID, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "pnB", d.ID); !errors.Is(err, delegation.ErrNotFound) {
		t.Errorf("after revoking the unverified record: %v, want ErrNotFound", err)
	}

	// A plain JSON record, and a pointer forged under another holder's key to someone else's record.
	d2, err := s.Grant(ctx, "pnA", "pnB", []delegation.Scope{delegation.SeeCases}, nil, now.Add(time.Hour*24), now)
	if err != nil {
		t.Fatal(err)
	}
	ptr, err := kv.Get(ctx, "h.pnB."+d2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "h.pnC."+d2.ID, ptr.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "pnC", d2.ID); !errors.Is(err, delegation.ErrUnverified) {
		t.Errorf("copied pointer: %v, want ErrUnverified", err)
	}
	if _, err := kv.Put(ctx, "h.pnD."+d2.ID, []byte(`{"id":"`+d2.ID+`","giver":"pnA","holder":"pnD"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "pnD", d2.ID); !errors.Is(err, delegation.ErrUnverified) {
		t.Errorf("plain JSON pointer: %v, want ErrUnverified", err)
	}
}

// BenchmarkResolve is what every call on someone's behalf adds: two reads with their authentication.
func BenchmarkResolve(b *testing.B) {
	ctx := context.Background()
	js := natstest.JetStream(b)
	s, err := delegation.Open(ctx, js, delegation.Options{Sealer: keystest.Sealer(b)})
	if err != nil {
		b.Fatal(err)
	}
	d, err := s.Grant(ctx, "pnA", "pnB", []delegation.Scope{delegation.SeeCases}, nil, time.Now().Add(time.Hour), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Resolve(ctx, "pnB", d.ID); err != nil {
			b.Fatal(err)
		}
	}
}
