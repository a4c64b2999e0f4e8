package questions_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/questions"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

func open(t *testing.T) (*questions.Store, jetstream.JetStream) {
	t.Helper()
	js := natstest.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"aperture.events.>"}}); err != nil {
		t.Fatal(err)
	}
	s, err := questions.Open(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

func TestAskListAnswer(t *testing.T) {
	s, js := open(t)
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	const pa, pb = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	q1, err := s.Ask(ctx, "municipality", pa, "acc_1", "why 1", now)
	if err != nil {
		t.Fatal(err)
	}
	q2, err := s.Ask(ctx, "tax", pa, "acc_2", "why 2", now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	q3, err := s.Ask(ctx, "municipality", pb, "acc_3", "why 3", now.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ids := func(qs []*questions.Question, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, q := range qs {
			out = append(out, q.ID)
		}
		return out
	}
	eq := func(got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("got %v, want %v", got, want)
			}
		}
	}
	eq(ids(s.ListByCitizen(ctx, pa)), q2.ID, q1.ID)
	eq(ids(s.ListByCitizen(ctx, pb)), q3.ID)
	eq(ids(s.ListByAgency(ctx, "municipality", false)), q3.ID, q1.ID)
	eq(ids(s.ListByAgency(ctx, "tax", true)), q2.ID)
	eq(ids(s.ListByAgency(ctx, "health", false)))

	if _, err := s.Answer(ctx, "tax", q1.ID, "no", "cw", now); !errors.Is(err, questions.ErrNotFound) {
		t.Fatalf("answer another agency's question: %v", err)
	}
	// Two concurrent answers: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Answer(ctx, "municipality", q1.ID, "because", "cw-1", now.Add(time.Minute)) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, questions.ErrAnswered):
			t.Fatal(err)
		}
	}
	if won != 1 {
		t.Fatalf("%d answers won", won)
	}
	eq(ids(s.ListByAgency(ctx, "municipality", true)), q3.ID)
	got, err := s.GetForAgency(ctx, "municipality", q1.ID)
	if err != nil || got.Answer != "because" || got.AnsweredBy != "cw-1" || got.Proto(nil).GetStatus() != citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED {
		t.Fatalf("answered question %+v, %v", got, err)
	}

	// One event per question, on the agency's subject, without the text.
	cons, err := js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"aperture.events.agency.municipality.question_asked"}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	var evs []string
	for m := range batch.Messages() {
		var q citizenv1.Question
		if err := proto.Unmarshal(m.Data(), &q); err != nil || q.GetMessage() != "" {
			t.Fatalf("event %v, %v", &q, err)
		}
		evs = append(evs, q.GetId())
	}
	eq(evs, q1.ID, q3.ID)

	for _, bad := range [][2]string{{"a.b", pa}, {"municipality", "x y"}, {"", pa}} {
		if _, err := s.Ask(ctx, bad[0], bad[1], "acc_1", "m", now); !errors.Is(err, questions.ErrInvalid) {
			t.Errorf("Ask(%q, %q): %v", bad[0], bad[1], err)
		}
	}
	if _, err := s.ListByCitizen(ctx, "*"); !errors.Is(err, questions.ErrInvalid) {
		t.Errorf("ListByCitizen(*): %v", err)
	}
}
