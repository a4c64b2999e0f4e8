// Package questions keeps citizens' questions about accesses to their data, and the agencies' answers,
// in the JetStream KV bucket "questions".
//
// A question is stored under the key "<agency>.<pseudonym>.<question id>": the agency that must answer
// lists its questions with the key filter "<agency>.>", the citizen lists theirs with
// "*.<pseudonym>.*", and neither walks anyone else's keys. The value holds the citizen's pseudonym,
// never the citizen id. The question text is the citizen's own words: it is stored and shown to the
// agency and the citizen, and never logged.
//
// Every record is sealed with the broker's sealing key and bound to its key by package sealedkv, like
// a case's citizen id: the text and the answer are not readable from a copy of the bucket, and a record
// written or altered by anything but this store — an answer slipped in, a question moved to another
// agency or citizen, the unanswered question written back over its answer — reads as absent (ErrNotFound), is logged at error level and counted
// ([Store.Unauthentic]).
//
// When a question is asked the store publishes a notification on
// "aperture.events.agency.<agency>.question_asked" (the EVENTS stream of package cases): an
// aperture.citizen.v1.Question carrying only the question id, the access id, the agency and the time —
// not the citizen, not the text.
package questions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/sealedkv"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Bucket is the KV bucket holding questions.
const Bucket = "questions"

// Words of the access records of a question (aperture.audit.v1.ACCESS_KIND_QUESTION_ASKED) and its
// answer (ACCESS_KIND_QUESTION_ANSWERED): purpose, and the law behind a citizen's question about an
// access to their data (the right to be told how it is processed).
const (
	AskPurpose    = "The citizen's question about an access to their data"
	AnswerPurpose = "The agency's answer to the citizen's question about an access"
	RightOfAccess = "GDPR Art. 15"
)

// EventQuestionAsked is the event type published to the agency that must answer.
const EventQuestionAsked = "question_asked"

// IDPrefix prefixes question ids ("qst_…").
const IDPrefix = "qst"

var (
	// ErrNotFound means there is no such question (for that agency).
	ErrNotFound = errors.New("question not found")
	// ErrAnswered means the question has an answer already.
	ErrAnswered = errors.New("question already answered")
	// ErrInvalid means a question or answer cannot be stored as given.
	ErrInvalid = errors.New("invalid question")
)

// Question is one citizen's question about one access, as stored.
type Question struct {
	ID        string    `json:"id"`
	AccessID  string    `json:"access_id"`
	Agency    string    `json:"agency"`
	Pseudonym string    `json:"pseudonym"`
	Message   string    `json:"message"`
	AskedAt   time.Time `json:"asked_at"`
	// The pseudonym's key id, and the case, journey and step of the access questioned, so the answer's
	// access record names them as the question's did (empty for questions stored before they were kept).
	PseudonymKeyID string `json:"pseudonym_key_id,omitempty"`
	CaseID         string `json:"case_id,omitempty"`
	Journey        string `json:"journey,omitempty"`
	Step           string `json:"step,omitempty"`
	// Set once answered.
	Answer     string     `json:"answer,omitempty"`
	AnsweredBy string     `json:"answered_by,omitempty"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`

	// Revision is the KV revision the question was read at.
	Revision uint64 `json:"-"`
}

// Answered reports whether the agency has answered.
func (q *Question) Answered() bool { return q.AnsweredAt != nil }

// Proto returns the API form; agency is the agency as the citizen sees it (nil: id only).
func (q *Question) Proto(agency *citizenv1.Party) *citizenv1.Question {
	if agency == nil {
		agency = &citizenv1.Party{Id: q.Agency}
	}
	out := &citizenv1.Question{
		Id:       q.ID,
		AccessId: q.AccessID,
		Agency:   agency,
		Message:  q.Message,
		AskedAt:  timestamppb.New(q.AskedAt),
		Status:   citizenv1.QuestionStatus_QUESTION_STATUS_OPEN,
	}
	if q.Answered() {
		out.Status = citizenv1.QuestionStatus_QUESTION_STATUS_ANSWERED
		out.Answer, out.AnsweredBy, out.AnsweredAt = q.Answer, q.AnsweredBy, timestamppb.New(*q.AnsweredAt)
	}
	return out
}

// Store keeps questions in JetStream KV.
type Store struct {
	kv    jetstream.KeyValue
	js    jetstream.JetStream
	log   *slog.Logger
	codec *sealedkv.Codec
}

// Options configures a Store.
type Options = sealedkv.Options

// Open creates or binds the questions bucket. The events stream must exist (cases.Open creates it);
// without it notifications fail and are logged, the questions are still stored.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, codec, err := sealedkv.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Aperture citizens' questions about accesses: <agency>.<pseudonym>.<question id>",
		History:     4,
		Replicas:    opts.Replicas,
	}, opts.Sealer, log)
	if err != nil {
		return nil, fmt.Errorf("questions: %w", err)
	}
	return &Store{kv: kv, js: js, log: log, codec: codec}, nil
}

// Unauthentic is how many reads found a stored question that did not authenticate and treated it as
// absent.
func (s *Store) Unauthentic() uint64 { return s.codec.Unauthentic() }

func key(agency, pseudonym, id string) string { return agency + "." + pseudonym + "." + id }

// splitKey is the inverse of key.
func splitKey(k string) (agency, pseudonym, id string, ok bool) {
	parts := strings.Split(k, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// NewID returns a new question id ("qst_…"): the caller chooses it with [Store.AskWith] when the id
// must be known before the question is stored (to log the question first).
func NewID(now time.Time) string { return ids.New(IDPrefix, now) }

// Ask stores a new question from the citizen with pseudonym about accessID, which agency must answer,
// and notifies the agency. The notification is best effort (the question is stored either way and the
// agency lists it); a failed publish is logged without the question's text.
func (s *Store) Ask(ctx context.Context, agency, pseudonym, accessID, message string, now time.Time) (*Question, error) {
	return s.AskWith(ctx, Question{ID: NewID(now), Agency: agency, Pseudonym: pseudonym, AccessID: accessID, Message: message}, now)
}

// AskWith is Ask for a question the caller filled in: ID (from NewID), Agency, Pseudonym, AccessID and
// Message are required, PseudonymKeyID, CaseID, Journey and Step are kept as given. AskedAt is now.
func (s *Store) AskWith(ctx context.Context, q Question, now time.Time) (*Question, error) {
	if !sealedkv.Token(q.Agency) || !sealedkv.Token(q.Pseudonym) || q.AccessID == "" || q.Message == "" {
		return nil, fmt.Errorf("%w: agency, pseudonym, access and message are required", ErrInvalid)
	}
	if !ids.Valid(IDPrefix, q.ID) {
		return nil, fmt.Errorf("%w: question id", ErrInvalid)
	}
	q.AskedAt, q.Answer, q.AnsweredBy, q.AnsweredAt = now.UTC(), "", "", nil
	rev, err := s.codec.Write(ctx, s.kv, key(q.Agency, q.Pseudonym, q.ID), 0, &q) // 0: a new id has no history
	if err != nil {
		return nil, fmt.Errorf("store question %s: %w", q.ID, err)
	}
	q.Revision = rev
	s.publish(ctx, &q)
	return &q, nil
}

func (s *Store) publish(ctx context.Context, q *Question) {
	ev := &citizenv1.Question{
		Id: q.ID, AccessId: q.AccessID, Agency: &citizenv1.Party{Id: q.Agency},
		AskedAt: timestamppb.New(q.AskedAt), Status: citizenv1.QuestionStatus_QUESTION_STATUS_OPEN,
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		s.log.Error("encode question event", "question", q.ID, "err", err)
		return
	}
	subject := "aperture.events.agency." + q.Agency + "." + EventQuestionAsked
	if _, err := s.js.Publish(ctx, subject, b, jetstream.WithMsgID(q.ID+":"+EventQuestionAsked)); err != nil {
		s.log.Warn("publish question event", "question", q.ID, "agency", q.Agency, "err", err)
	}
}

// ListByCitizen returns the citizen's questions, newest first.
func (s *Store) ListByCitizen(ctx context.Context, pseudonym string) ([]*Question, error) {
	if !sealedkv.Token(pseudonym) {
		return nil, fmt.Errorf("%w: pseudonym", ErrInvalid)
	}
	return s.list(ctx, "*."+pseudonym+".*")
}

// ListByAgency returns the questions agency must answer, newest first; with onlyOpen, the unanswered.
func (s *Store) ListByAgency(ctx context.Context, agency string, onlyOpen bool) ([]*Question, error) {
	if !sealedkv.Token(agency) {
		return nil, fmt.Errorf("%w: agency", ErrInvalid)
	}
	qs, err := s.list(ctx, agency+".>")
	if err != nil {
		return nil, err
	}
	if onlyOpen {
		qs = slices.DeleteFunc(qs, (*Question).Answered)
	}
	return qs, nil
}

func (s *Store) list(ctx context.Context, filter string) ([]*Question, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list questions: %w", err)
	}
	defer lister.Stop()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var out []*Question
	for _, k := range keys {
		q, err := s.get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	// Ids sort by creation time.
	slices.SortFunc(out, func(a, b *Question) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}

func (s *Store) get(ctx context.Context, k string) (*Question, error) {
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read question: %w", err)
	}
	agency, pseudonym, id, ok := splitKey(k)
	if !ok {
		return nil, fmt.Errorf("%w: key is not <agency>.<pseudonym>.<id>", ErrNotFound)
	}
	what := agency + "/" + id // the pseudonym stays out of the log line
	var q Question
	if err := s.codec.Open(ctx, e, what, &q); errors.Is(err, sealedkv.ErrUnauthentic) {
		return nil, fmt.Errorf("question %s: %w: %w", id, ErrNotFound, err)
	} else if err != nil {
		return nil, fmt.Errorf("read question %s: %w", id, err)
	}
	if q.Agency != agency || q.Pseudonym != pseudonym || q.ID != id {
		// The associated data binds the record to its key, so only the broker could have written this.
		err := s.codec.Reject(what, "names another agency, citizen or id than its key")
		return nil, fmt.Errorf("question %s: %w: %w", id, ErrNotFound, err)
	}
	q.Revision = e.Revision()
	return &q, nil
}

// GetForAgency returns question id if agency must answer it; to any other agency it does not exist.
func (s *Store) GetForAgency(ctx context.Context, agency, id string) (*Question, error) {
	if !sealedkv.Token(agency) || !ids.Valid(IDPrefix, id) {
		return nil, ErrNotFound
	}
	lister, err := s.kv.ListKeysFiltered(ctx, agency+".*."+id)
	if err != nil {
		return nil, fmt.Errorf("find question %s: %w", id, err)
	}
	defer lister.Stop()
	var found []string
	for k := range lister.Keys() {
		found = append(found, k)
	}
	// One key unless someone copied the record under another citizen's pseudonym: then only the
	// broker's own record authenticates, and the copy is reported by get.
	err = ErrNotFound
	for _, k := range found {
		q, gerr := s.get(ctx, k)
		if gerr == nil {
			return q, nil
		}
		if !errors.Is(gerr, ErrNotFound) {
			return nil, gerr
		}
		err = gerr
	}
	return nil, err
}

// Answer records agency's answer to question id, by caseworker. Only the agency the question is for
// may answer, once: another agency gets ErrNotFound, a second answer ErrAnswered. Two concurrent
// answers cannot both win (compare-and-set on the revision).
func (s *Store) Answer(ctx context.Context, agency, id, answer, caseworker string, now time.Time) (*Question, error) {
	return s.AnswerLogged(ctx, agency, id, answer, caseworker, now, nil)
}

// AnswerLogged is Answer with first called once the question is found open, before the answer is
// stored: an error from it stores nothing and is returned. The broker logs the answer there, so that
// the citizen's access log shows it before the agency's answer counts.
func (s *Store) AnswerLogged(ctx context.Context, agency, id, answer, caseworker string, now time.Time, first func(*Question) error) (*Question, error) {
	if answer == "" {
		return nil, fmt.Errorf("%w: empty answer", ErrInvalid)
	}
	q, err := s.GetForAgency(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	if q.Answered() {
		return nil, ErrAnswered
	}
	if first != nil {
		if err := first(q); err != nil {
			return nil, err
		}
	}
	at := now.UTC()
	q.Answer, q.AnsweredBy, q.AnsweredAt = answer, caseworker, &at
	rev, err := s.codec.Write(ctx, s.kv, key(q.Agency, q.Pseudonym, q.ID), q.Revision, q)
	if err != nil {
		if sealedkv.IsConflict(err) {
			return nil, ErrAnswered
		}
		return nil, fmt.Errorf("answer question %s: %w", id, err)
	}
	q.Revision = rev
	return q, nil
}
