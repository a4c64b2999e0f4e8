package questions_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/keys/keystest"
	"github.com/aperture-gov/aperture/broker/natsembed/natstest"
	"github.com/aperture-gov/aperture/broker/questions"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

func open(t *testing.T) (*questions.Store, jetstream.JetStream) {
	t.Helper()
	js := natstest.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"aperture.events.>"}}); err != nil {
		t.Fatal(err)
	}
	s, err := questions.Open(ctx, js, questions.Options{Sealer: keystest.Sealer(t)})
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

// TestUnauthenticQuestionReadsAsAbsent: the text and the answer are sealed at rest, and a question
// record written or altered by anything but the broker — an answer slipped in, a question moved to
// another agency or citizen — reads as absent for the agency and the citizen, with an error-level log
// line (no pseudonym, no text) and the counter.
func TestUnauthenticQuestionReadsAsAbsent(t *testing.T) {
	const pa, pb = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	const text = "why did you read my sick notes"
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		// tamper writes into the bucket; the tampered question is then read as agency's with pseudonym.
		tamper func(t *testing.T, s *questions.Store, kv jetstream.KeyValue, q *questions.Question) (agency, pseudonym string)
		reason string
	}{
		{"an answer slipped in as plain JSON", func(t *testing.T, _ *questions.Store, kv jetstream.KeyValue, q *questions.Question) (string, string) {
			at := now.Add(time.Hour)
			forged := *q
			forged.Answer, forged.AnsweredBy, forged.AnsweredAt = "nothing to see", "attacker", &at
			b, _ := json.Marshal(&forged)
			put(t, kv, q.Agency+"."+q.Pseudonym+"."+q.ID, b)
			return q.Agency, q.Pseudonym
		}, "is not sealed"},
		{"the question moved to another agency", func(t *testing.T, _ *questions.Store, kv jetstream.KeyValue, q *questions.Question) (string, string) {
			put(t, kv, "tax."+q.Pseudonym+"."+q.ID, value(t, kv, q.Agency+"."+q.Pseudonym+"."+q.ID))
			return "tax", q.Pseudonym
		}, "does not open"},
		{"the question moved to another citizen", func(t *testing.T, _ *questions.Store, kv jetstream.KeyValue, q *questions.Question) (string, string) {
			put(t, kv, q.Agency+"."+pb+"."+q.ID, value(t, kv, q.Agency+"."+q.Pseudonym+"."+q.ID))
			return q.Agency, pb
		}, "does not open"},
		{"the unanswered question written back over its answer", func(t *testing.T, s *questions.Store, kv jetstream.KeyValue, q *questions.Question) (string, string) {
			k := q.Agency + "." + q.Pseudonym + "." + q.ID
			open := value(t, kv, k)
			if _, err := s.Answer(context.Background(), q.Agency, q.ID, "we checked", "cw-2", now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			put(t, kv, k, open)
			return q.Agency, q.Pseudonym
		}, "written back"},
		{"one bit of the sealed question flipped", func(t *testing.T, _ *questions.Store, kv jetstream.KeyValue, q *questions.Question) (string, string) {
			k := q.Agency + "." + q.Pseudonym + "." + q.ID
			v := value(t, kv, k)
			v[0] ^= 0x40
			put(t, kv, k, v)
			return q.Agency, q.Pseudonym
		}, "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := natstest.JetStream(t)
			ctx := context.Background()
			lb := &strings.Builder{}
			var mu sync.Mutex
			log := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				return lb.Write(p)
			}), nil))
			if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"aperture.events.>"}}); err != nil {
				t.Fatal(err)
			}
			s, err := questions.Open(ctx, js, questions.Options{Sealer: keystest.Sealer(t), Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			kv, err := js.KeyValue(ctx, questions.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			q, err := s.Ask(ctx, "municipality", pa, "acc_1", text, now)
			if err != nil {
				t.Fatal(err)
			}
			if v := string(value(t, kv, "municipality."+pa+"."+q.ID)); strings.Contains(v, text) || strings.Contains(v, "acc_1") {
				t.Fatalf("the question is stored readable: %q", v)
			}
			agency, pseudonym := tc.tamper(t, s, kv, q)

			if pseudonym != pa {
				// A copy under another citizen: the agency still finds the citizen's own question.
				if got, err := s.GetForAgency(ctx, agency, q.ID); err != nil || got.Pseudonym != pa || got.Message != text {
					t.Fatalf("GetForAgency beside a copy = %+v, %v; want the original", got, err)
				}
			} else {
				if got, err := s.GetForAgency(ctx, agency, q.ID); !errors.Is(err, questions.ErrNotFound) || !errors.Is(err, sealedkv.ErrUnauthentic) {
					t.Fatalf("GetForAgency = %+v, %v; want absent", got, err)
				}
				if _, err := s.Answer(ctx, agency, q.ID, "an answer", "cw", now); !errors.Is(err, questions.ErrNotFound) {
					t.Fatalf("Answer of a tampered question: %v", err)
				}
			}
			for _, list := range []func() ([]*questions.Question, error){
				func() ([]*questions.Question, error) { return s.ListByCitizen(ctx, pseudonym) },
				func() ([]*questions.Question, error) { return s.ListByAgency(ctx, agency, false) },
			} {
				qs, err := list()
				if err != nil {
					t.Fatal(err)
				}
				for _, got := range qs {
					if got.Agency == agency && got.Pseudonym == pseudonym && got.ID == q.ID {
						t.Fatalf("the tampered question is listed: %+v", got)
					}
				}
			}
			if s.Unauthentic() == 0 {
				t.Fatal("the tampered question was not counted")
			}
			mu.Lock()
			logged := lb.String()
			mu.Unlock()
			if !strings.Contains(logged, `"level":"ERROR"`) || !strings.Contains(logged, `"bucket":"questions"`) ||
				!strings.Contains(logged, agency+"/"+q.ID) || !strings.Contains(logged, tc.reason) {
				t.Fatalf("log does not report the question: %s", logged)
			}
			for _, secret := range []string{pa, pb, text, "nothing to see"} {
				if strings.Contains(logged, secret) {
					t.Fatalf("log carries %q: %s", secret, logged)
				}
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func put(t *testing.T, kv jetstream.KeyValue, k string, v []byte) {
	t.Helper()
	if _, err := kv.Put(context.Background(), k, v); err != nil {
		t.Fatal(err)
	}
}

func value(t *testing.T, kv jetstream.KeyValue, k string) []byte {
	t.Helper()
	e, err := kv.Get(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), e.Value()...)
}

// TestAskWithAnswerLogged: a question the caller filled in keeps its id and the access's case, journey
// and step; an answer's first step runs once the question is found open, and when it fails nothing is
// stored (the broker logs the answer there: no answer without its record).
func TestAskWithAnswerLogged(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	const pa = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	if _, err := s.AskWith(ctx, questions.Question{ID: "not-an-id", Agency: "municipality", Pseudonym: pa, AccessID: "acc_1", Message: "m"}, now); !errors.Is(err, questions.ErrInvalid) {
		t.Fatalf("a malformed id: %v", err)
	}
	id := questions.NewID(now)
	q, err := s.AskWith(ctx, questions.Question{ID: id, Agency: "municipality", Pseudonym: pa, AccessID: "acc_1", Message: "why",
		PseudonymKeyID: "k1", CaseID: "case_1", Journey: "j1", Step: "s1"}, now)
	if err != nil || q.ID != id || !q.AskedAt.Equal(now) {
		t.Fatalf("AskWith = %+v, %v", q, err)
	}
	logFailed := errors.New("log unavailable")
	calls := 0
	if _, err := s.AnswerLogged(ctx, "municipality", id, "because", "cw-1", now.Add(time.Hour), func(q *questions.Question) error {
		calls++
		if q.PseudonymKeyID != "k1" || q.CaseID != "case_1" || q.Journey != "j1" || q.Step != "s1" || q.Answered() {
			t.Errorf("first sees %+v", q)
		}
		return logFailed
	}); !errors.Is(err, logFailed) || calls != 1 {
		t.Fatalf("AnswerLogged with a failing first step: %v (%d calls)", err, calls)
	}
	if got, err := s.GetForAgency(ctx, "municipality", id); err != nil || got.Answered() {
		t.Fatalf("after a failed first step the question is %+v, %v; want it open", got, err)
	}
	if _, err := s.AnswerLogged(ctx, "municipality", id, "because", "cw-1", now.Add(time.Hour), func(*questions.Question) error { calls++; return nil }); err != nil || calls != 2 {
		t.Fatalf("AnswerLogged: %v (%d calls)", err, calls)
	}
	if _, err := s.AnswerLogged(ctx, "municipality", id, "again", "cw-1", now.Add(2*time.Hour), func(*questions.Question) error { calls++; return nil }); !errors.Is(err, questions.ErrAnswered) || calls != 2 {
		t.Fatalf("a second answer: %v (%d calls; the first step must not run for an answered question)", err, calls)
	}
}
