// Package citizen implements aperture.citizen.v1.CitizenService: the citizen's side of the broker. A
// citizen sees every access to their data (in the words of the policies), follows their cases, reads
// the data path of any journey before it starts, grants, previews and revokes consent, sees what an
// authority holds about them (a logged self-access), and questions an access.
//
// Every call acts for exactly one citizen: the one whose OpenID Connect ID token the call carries
// (see Authenticator and NewServer). Requests carry no citizen id, and everything a citizen names —
// a case, an access, a consent — is looked up among that citizen's own (by pseudonym); anything else
// is "not found", whether or not it exists, so one citizen cannot learn about another.
//
// The citizen id is held in memory for the length of a call only (to fetch the citizen's own data
// from an authority). It is never logged, never written anywhere and never part of an error.
package citizen

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/consent"
	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/questions"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Authenticator verifies a citizen's OpenID Connect ID token and returns the citizen id it names. Any
// error means the token is not acceptable (missing claim, bad signature, expired, wrong audience …);
// the API answers UNAUTHENTICATED without the error's text.
type Authenticator interface {
	Authenticate(ctx context.Context, rawToken string) (citizenID string, err error)
}

// AccessLog is the durable access log (accesslog.Log).
type AccessLog interface {
	// Append returns nil only once the record is durable.
	Append(ctx context.Context, rec *auditv1.AccessRecord) error
	List(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]*auditv1.AccessRecord, string, error)
	// ListEntries is List with each record's Merkle leaf and leaf index.
	ListEntries(ctx context.Context, pseudonym string, pageSize int, pageToken string) ([]accesslog.Entry, string, error)
	Watch(ctx context.Context, pseudonym string) (*accesslog.Watcher, error)
}

// Cases reads case state (cases.Store).
type Cases interface {
	Get(ctx context.Context, id string) (*cases.Case, error)
	List(ctx context.Context, keep func(*cases.Case) bool) ([]*cases.Case, error)
}

// Consents keeps consents (consent.Store).
type Consents interface {
	Grant(ctx context.Context, pseudonym, journey, step string, now time.Time, validity time.Duration) (*consent.Consent, error)
	Revoke(ctx context.Context, pseudonym, journey, step string, now time.Time) (*consent.Consent, error)
	Get(ctx context.Context, pseudonym, journey, step string) (*consent.Consent, error)
	List(ctx context.Context, pseudonym string) ([]*consent.Consent, error)
}

// Authorities fetches records and knows the dataset schemas (authorities.Pool).
type Authorities interface {
	Fetch(ctx context.Context, authority string, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, error)
	Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error)
}

// Questions keeps questions about accesses (questions.Store).
type Questions interface {
	AskWith(ctx context.Context, q questions.Question, now time.Time) (*questions.Question, error)
	ListByCitizen(ctx context.Context, pseudonym string) ([]*questions.Question, error)
}

// Config holds a Service's dependencies. All are required except Now, Logger and FetchTimeout.
type Config struct {
	Policies    func() *policy.Bundle
	Log         AccessLog
	Cases       Cases
	Consents    Consents
	Authorities Authorities
	Questions   Questions
	Pseudonyms  keys.Pseudonymizer
	Now         func() time.Time
	Logger      *slog.Logger
	// FetchTimeout bounds a self-access fetch from an authority. Default 5s.
	FetchTimeout time.Duration
	// Tree and Witnessed prove a citizen's access is in the public log (GetAccessProof); without
	// them that call is Unavailable.
	Tree      LogTree
	Witnessed Witnessed
	// Switches keeps the citizens' switch-offs; without it ListSwitches and SetSwitch are Unavailable.
	Switches Switches
	// Answers reads the answers of released facts kept for the citizen; without it the citizen reads
	// each fact as a check without its answer.
	Answers Answers
	// Delegations keeps powers of attorney; without it a call on someone's behalf is Unavailable.
	// DelegationCount counts their use (nil: not counted).
	Delegations     Delegations
	DelegationCount *delegation.Counter
	// ConsentCount and QuestionCount count consents given and withdrawn and questions asked (nil:
	// not counted).
	ConsentCount  *consent.Counter
	QuestionCount *questions.Counter
}

// Service implements citizenv1.CitizenServiceServer. Its methods expect the citizen in the context
// (NewServer's interceptors put it there) and return domain errors (refusals); the interceptors turn
// them into gRPC status codes.
type Service struct {
	citizenv1.UnimplementedCitizenServiceServer
	cfg Config
	log *slog.Logger
	// custody keeps each parent's children, read from the register, for a short while.
	custody custodyCache

	// stopping ends the open WatchAccesses streams when the broker stops.
	stopping context.Context
	stop     context.CancelFunc
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Policies == nil || cfg.Log == nil || cfg.Cases == nil || cfg.Consents == nil || cfg.Authorities == nil ||
		cfg.Questions == nil || cfg.Pseudonyms == nil {
		return nil, errors.New("citizen service: missing dependency")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 5 * time.Second
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	s.stopping, s.stop = context.WithCancel(context.Background())
	return s, nil
}

// Stop ends every open WatchAccesses stream (with UNAVAILABLE, so clients reconnect elsewhere). Call it
// before stopping the gRPC server gracefully, which would otherwise wait for the streams forever.
func (s *Service) Stop() { s.stop() }

// Citizen is the authenticated citizen of a call.
type Citizen struct {
	// id is the citizen id from the token: used only to fetch the citizen's own records.
	id        string
	Pseudonym keys.Pseudonym
}

// LogValue keeps the citizen id out of logs even if a Citizen is logged by mistake.
func (c Citizen) LogValue() slog.Value { return slog.StringValue(c.Pseudonym.Value) }

// String is the pseudonym, never the id.
func (c Citizen) String() string { return c.Pseudonym.Value }

type citizenKey struct{}

// WithCitizen returns ctx carrying the citizen with citizenID, pseudonymised with p. The interceptors
// call it after authentication; tests of the domain layer may call it directly.
func WithCitizen(ctx context.Context, p keys.Pseudonymizer, citizenID string) context.Context {
	return context.WithValue(ctx, citizenKey{}, Citizen{id: citizenID, Pseudonym: p.Pseudonym(citizenID)})
}

// CitizenFrom returns the citizen the call acts for.
func CitizenFrom(ctx context.Context) (Citizen, bool) {
	c, ok := ctx.Value(citizenKey{}).(Citizen)
	return c, ok && c.id != "" && c.Pseudonym.Value != ""
}

func citizenOf(ctx context.Context) (Citizen, error) {
	c, ok := CitizenFrom(ctx)
	if !ok {
		return Citizen{}, refusal.New(refusal.Unauthenticated, "no authenticated citizen")
	}
	return c, nil
}

// unavailable wraps a store failure for the caller.
func unavailable(err error, what string) error {
	return refusal.Wrap(refusal.Unavailable, err, "%s is unavailable; please try again", what)
}

// names resolves registry ids and policy ids to what citizens read, from one bundle snapshot.
type names struct{ b *policy.Bundle }

func text(t policy.Text) *citizenv1.Text { return &citizenv1.Text{En: t.EN, Da: t.DA} }

func (n names) agency(id string) *citizenv1.Party {
	if id == "" {
		return nil
	}
	if a, ok := n.b.Registry.Agency(id); ok {
		return &citizenv1.Party{Id: id, Name: text(a.Name)}
	}
	return &citizenv1.Party{Id: id, Name: &citizenv1.Text{En: id}}
}

func (n names) authority(id string) *citizenv1.Party {
	if id == "" {
		return nil
	}
	if a, ok := n.b.Registry.Authority(id); ok {
		return &citizenv1.Party{Id: id, Name: text(a.Name)}
	}
	return &citizenv1.Party{Id: id, Name: &citizenv1.Text{En: id}}
}

// event is a life event type as the citizen reads it (policies/events.yaml).
func (n names) event(typ string) *citizenv1.Text {
	if e, ok := n.b.Event(typ); ok {
		return text(e.Label)
	}
	return &citizenv1.Text{En: "A registration by a public authority", Da: "En registrering hos en offentlig myndighed"}
}

func (n names) journey(id string) (*citizenv1.JourneyRef, *policy.Journey) {
	if id == "" {
		return nil, nil
	}
	if j, ok := n.b.Journey(id); ok {
		return &citizenv1.JourneyRef{Id: id, Title: text(j.Title)}, j
	}
	return &citizenv1.JourneyRef{Id: id, Title: &citizenv1.Text{En: id}}, nil
}

func stepRef(j *policy.Journey, id string) (*citizenv1.StepRef, *policy.Step) {
	if id == "" {
		return nil, nil
	}
	if j != nil {
		if st, i, ok := j.Step(id); ok {
			return &citizenv1.StepRef{Id: id, Title: text(st.Title), Number: int32(i + 1)}, st
		}
	}
	return &citizenv1.StepRef{Id: id, Title: &citizenv1.Text{En: id}}, nil
}

// policyStep finds a journey step or refuses with NotFound.
func policyStep(b *policy.Bundle, journey, step string) (*policy.Journey, *policy.Step, int, error) {
	j, ok := b.Journey(journey)
	if !ok {
		return nil, nil, 0, refusal.New(refusal.NotFound, "there is no journey %q", journey)
	}
	st, i, ok := j.Step(step)
	if !ok {
		return nil, nil, 0, refusal.New(refusal.NotFound, "journey %q has no step %q", journey, step)
	}
	return j, st, i, nil
}
