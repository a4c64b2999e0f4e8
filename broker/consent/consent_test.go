package consent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
)

func open(t *testing.T) *consent.Store {
	t.Helper()
	s, err := consent.Open(context.Background(), natstest.JetStream(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGrantRevokeExpire(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	const p, j, step = "0123456789abcdef0123456789abcdef", "sickness-benefit", "assess-work-capacity"

	if _, err := s.Get(ctx, p, j, step); !errors.Is(err, consent.ErrNotFound) {
		t.Fatalf("no consent yet: %v", err)
	}
	if _, err := s.Revoke(ctx, p, j, step, now); !errors.Is(err, consent.ErrNotFound) {
		t.Fatalf("revoke of nothing: %v", err)
	}
	if _, err := s.Grant(ctx, p, j, step, now, 0); err == nil {
		t.Fatal("grant with no validity succeeded")
	}
	c, err := s.Grant(ctx, p, j, step, now, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{now.Add(-time.Second), false},
		{now, true},
		{now.Add(29 * 24 * time.Hour), true},
		{now.Add(30 * 24 * time.Hour), false},
	} {
		if got := c.ValidAt(tc.at); got != tc.want {
			t.Errorf("ValidAt(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	if _, err := s.Revoke(ctx, p, j, step, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, p, j, step)
	if err != nil {
		t.Fatal(err)
	}
	if got.ValidAt(now.Add(2*time.Hour)) || got.RevokedAt == nil {
		t.Fatalf("revoked consent still valid: %+v", got)
	}
	// Another citizen's consents are not listed.
	if _, err := s.Grant(ctx, "ffffffffffffffffffffffffffffffff", j, step, now, time.Hour); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Pseudonym != p {
		t.Fatalf("list = %+v", list)
	}
	empty, err := s.List(ctx, "00000000000000000000000000000000")
	if err != nil || len(empty) != 0 {
		t.Fatalf("list of a citizen with no consents: %v, %v", empty, err)
	}
}
