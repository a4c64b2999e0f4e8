package sealedkv_test

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/sealedkv"
)

func ring(t *testing.T) *keys.AEADRing {
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

type record struct {
	Step string `json:"step"`
}

func TestOpen(t *testing.T) {
	key := ring(t)
	var logged strings.Builder
	c, err := sealedkv.New("consents", key, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := c.Seal("p.j.s", record{Step: "s"})
	if err != nil {
		t.Fatal(err)
	}
	otherBucket, err := sealedkv.New("cases", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	movedBucket, err := otherBucket.Seal("p.j.s", record{Step: "s"})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := sealedkv.New("consents", ring(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherKey.Seal("p.j.s", record{Step: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, key string
		value     []byte
		ok        bool
		reason    string
	}{
		{"sealed for this key", "p.j.s", sealed, true, ""},
		{"read under another key", "q.j.s", sealed, false, "does not open"},
		{"sealed for another bucket", "p.j.s", movedBucket, false, "does not open"},
		{"sealed with another data key", "p.j.s", foreign, false, "does not open"},
		{"plain JSON", "p.j.s", []byte(`{"step":"s"}`), false, "is not sealed"},
		{"truncated", "p.j.s", sealed[:len(sealed)-1], false, "does not open"},
		{"empty", "p.j.s", nil, false, "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.Unauthentic()
			logged.Reset()
			var got record
			err := c.Open(tc.key, "j/s", tc.value, &got)
			if tc.ok {
				if err != nil || got.Step != "s" || c.Unauthentic() != before {
					t.Fatalf("Open = %v, %+v, counter %d→%d", err, got, before, c.Unauthentic())
				}
				return
			}
			if !errors.Is(err, sealedkv.ErrUnauthentic) || got.Step != "" {
				t.Fatalf("Open = %v, %+v; want ErrUnauthentic and nothing decoded", err, got)
			}
			if c.Unauthentic() != before+1 {
				t.Fatalf("counter %d→%d, want one more", before, c.Unauthentic())
			}
			if l := logged.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "bucket=consents") ||
				!strings.Contains(l, "record=j/s") || !strings.Contains(l, tc.reason) || strings.Contains(l, "p.j.s") {
				t.Fatalf("log line %q", l)
			}
		})
	}
	if _, err := sealedkv.New("consents", nil, nil); err == nil {
		t.Fatal("a codec without a sealing key was made")
	}
}
