package answers_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aperture-gov/aperture/broker/answers"
	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/sealedkv"
)

const pa, pb = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

func open(t *testing.T) (*answers.Store, jetstream.KeyValue) {
	t.Helper()
	js := natstest.JetStream(t)
	ctx := context.Background()
	s, err := answers.Open(ctx, js, answers.Options{Sealer: keystest.Sealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, answers.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return s, kv
}

func value(t *testing.T, kv jetstream.KeyValue, k string) []byte {
	t.Helper()
	e, err := kv.Get(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return e.Value()
}

// TestPutGet: an answer is kept sealed for its citizen and access, read back only for them, and
// written once.
func TestPutGet(t *testing.T) {
	s, kv := open(t)
	ctx := context.Background()
	if err := s.Put(ctx, pa, "acc_1", map[string]bool{"earned_enough": false, "employed": true}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, pa, "acc_1")
	if err != nil || len(got) != 2 || got["earned_enough"] || !got["employed"] {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if v := string(value(t, kv, pa+".acc_1")); strings.Contains(v, "earned_enough") || strings.Contains(v, "false") {
		t.Fatalf("the answer is stored readable: %q", v)
	}
	for _, tc := range []struct{ pseudonym, access string }{{pb, "acc_1"}, {pa, "acc_2"}, {"a.b", "acc_1"}, {pa, "*"}} {
		if got, err := s.Get(ctx, tc.pseudonym, tc.access); !errors.Is(err, answers.ErrNotFound) {
			t.Errorf("Get(%s, %s) = %v, %v; want not found", tc.pseudonym, tc.access, got, err)
		}
	}
	if err := s.Put(ctx, pa, "acc_1", map[string]bool{"earned_enough": true}); err == nil {
		t.Fatal("a second Put for the same access changed the answer")
	}
	if got, _ := s.Get(ctx, pa, "acc_1"); got["earned_enough"] {
		t.Fatal("the answer changed")
	}
}

// TestMovedAnswerReadsAsAbsent: an answer copied to another citizen's key, or written in plain JSON,
// does not authenticate and reads as absent.
func TestMovedAnswerReadsAsAbsent(t *testing.T) {
	s, kv := open(t)
	ctx := context.Background()
	if err := s.Put(ctx, pa, "acc_1", map[string]bool{"f": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, pb+".acc_1", value(t, kv, pa+".acc_1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, pb+".acc_2", []byte(`{"prev":0,"record":{"pseudonym":"`+pb+`","access_id":"acc_2","answers":{"f":true}}}`)); err != nil {
		t.Fatal(err)
	}
	for _, acc := range []string{"acc_1", "acc_2"} {
		if got, err := s.Get(ctx, pb, acc); !errors.Is(err, answers.ErrNotFound) || !errors.Is(err, sealedkv.ErrUnauthentic) {
			t.Errorf("Get(%s) of a forged answer = %v, %v; want absent", acc, got, err)
		}
	}
	if s.Unauthentic() != 2 {
		t.Errorf("Unauthentic = %d, want 2", s.Unauthentic())
	}
}
