// Package policy loads and checks the broker's policies: the registry of authorities, agencies and
// auditors (policies/registry.yaml) and the journeys (policies/journeys/*.yaml), and decides what one
// request at one step of a journey may receive.
//
// Policies are data that people write, so loading is strict and helpful: the YAML is decoded into the
// aperture.policy.v1 messages with their validation rules, then checked against the registry and against
// the schemas the authorities describe (field paths exist, derived-fact expressions type-check). Every
// finding names file, line and column, and all findings of a file are reported at once. A policy that
// loads is internally consistent; a request is then decided by [Step.Check] alone.
package policy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Text is a short text shown to citizens and caseworkers, in English and Danish.
type Text struct{ EN, DA string }

// In returns the text in lang ("en" or "da"); Danish falls back to English when it is missing.
func (t Text) In(lang string) string {
	if lang == "da" && t.DA != "" {
		return t.DA
	}
	return t.EN
}

// Registry lists the authorities, agencies and auditors the broker knows.
type Registry struct {
	Authorities []*Authority
	Agencies    []*Agency
	Auditors    []*Agency
	// CitizenRegister is the dataset that holds a record of every citizen (the population register):
	// the broker asks it whether a citizen exists before opening a case. nil: no check.
	CitizenRegister *DatasetRef
	// ParentalCustody is where a parent's record lists the children in their custody, so a parent can
	// act for a child under AgeOfMajority. nil: nobody acts for a child.
	ParentalCustody *ParentalCustody

	// source is the registry file as loaded, so that the policy version covers it.
	source file
}

// DatasetRef names one dataset of one authority.
type DatasetRef struct {
	Authority, Dataset string
}

// file is one policy file: its name within the policy tree and its bytes.
type file struct {
	name string
	data []byte
}

// Authority returns the authority with the given id.
func (r *Registry) Authority(id string) (*Authority, bool) {
	for _, a := range r.Authorities {
		if a.ID == id {
			return a, true
		}
	}
	return nil, false
}

// Agency returns the agency with the given id.
func (r *Registry) Agency(id string) (*Agency, bool) {
	return find(r.Agencies, func(a *Agency) bool { return a.ID == id })
}

// AgencyByIdentity returns the agency whose client certificate carries spiffeID.
func (r *Registry) AgencyByIdentity(spiffeID string) (*Agency, bool) {
	if spiffeID == "" {
		return nil, false
	}
	return find(r.Agencies, func(a *Agency) bool { return a.Identity == spiffeID })
}

// AuthorityByIdentity returns the authority whose certificate carries spiffeID.
func (r *Registry) AuthorityByIdentity(spiffeID string) (*Authority, bool) {
	if spiffeID == "" {
		return nil, false
	}
	i := slices.IndexFunc(r.Authorities, func(a *Authority) bool { return a.Identity == spiffeID })
	if i < 0 {
		return nil, false
	}
	return r.Authorities[i], true
}

// AuditorByIdentity returns the auditor whose client certificate carries spiffeID.
func (r *Registry) AuditorByIdentity(spiffeID string) (*Agency, bool) {
	if spiffeID == "" {
		return nil, false
	}
	return find(r.Auditors, func(a *Agency) bool { return a.Identity == spiffeID })
}

func find(as []*Agency, match func(*Agency) bool) (*Agency, bool) {
	if i := slices.IndexFunc(as, match); i >= 0 {
		return as[i], true
	}
	return nil, false
}

// Authority is one data holder.
type Authority struct {
	// ID is the slug used in policies, e.g. "population".
	ID   string
	Name Text
	// Address is host:port of its AuthorityService.
	Address string
	// Identity is the SPIFFE id its server certificate must carry.
	Identity string
	// Datasets are the dataset names it serves, within the authority ("person").
	Datasets []string
}

// Agency is an organisation whose case system calls the broker, or an auditor.
type Agency struct {
	ID   string
	Name Text
	// Identity is the SPIFFE id its client certificate carries.
	Identity string
}

// Descriptors resolves an authority dataset to its message. The broker builds it from the
// authorities' Describe answers; tests may build it from generated types.
type Descriptors interface {
	Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error)
}

// Bundle is one consistent, checked set of policies: the registry and every journey.
type Bundle struct {
	// Version identifies the policy files the bundle was loaded from ("sha256:" + 16 hex digits); it
	// is recorded with every case and access so that a decision can be traced to the policy text.
	Version  string
	Registry *Registry

	journeys []*Journey   // sorted by id
	events   []*LifeEvent // policy order (events.yaml)
}

// Journey returns the journey with the given id.
func (b *Bundle) Journey(id string) (*Journey, bool) {
	i, ok := slices.BinarySearchFunc(b.journeys, id, func(j *Journey, id string) int { return cmp.Compare(j.ID, id) })
	if !ok {
		return nil, false
	}
	return b.journeys[i], true
}

// Journeys returns every journey, sorted by id. The slice is the caller's.
func (b *Bundle) Journeys() []*Journey {
	return slices.Clone(b.journeys)
}

// Journey is an ordered list of steps for one life event.
type Journey struct {
	ID                 string
	Title, Description Text
	Steps              []*Step
	// File is the policy file the journey was loaded from, e.g. "journeys/sickness-benefit.yaml".
	File string
	// Optional is set when the whole journey is optional: the citizen may switch it off.
	Optional *Optional
	// BreakGlass are the emergency releases the journey allows, at most one rule per agency.
	BreakGlass []*BreakGlass
}

// OptionalAt is why step s of the journey may be switched off by the citizen (the step's own reason,
// else the journey's), or nil when the step is mandatory.
func (j *Journey) OptionalAt(s *Step) *Optional {
	if s != nil && s.Optional != nil {
		return s.Optional
	}
	return j.Optional
}

// HasOptional reports whether the citizen can switch anything off in the journey.
func (j *Journey) HasOptional() bool {
	return j.Optional != nil || slices.ContainsFunc(j.Steps, func(s *Step) bool { return s.Optional != nil })
}

// BreakGlassFor returns the journey's break-glass rule for agency.
func (j *Journey) BreakGlassFor(agency string) (*BreakGlass, bool) {
	i := slices.IndexFunc(j.BreakGlass, func(bg *BreakGlass) bool { return bg.Agency == agency })
	if i < 0 {
		return nil, false
	}
	return j.BreakGlass[i], true
}

// Optional says a journey or step may be switched off by the citizen, and what that means.
type Optional struct {
	// Why is what the citizen loses by switching it off.
	Why Text
}

// BreakGlass lets one agency release what its rules name from a case of the journey in an emergency,
// whatever the case's current step.
type BreakGlass struct {
	Agency     string
	Purpose    Text
	LegalBasis string
	Reasons    []*BreakGlassReason
	Rules      []*Rule
	// Limit is how many break-glass releases one caseworker may make within Window.
	Limit  int
	Window time.Duration

	// step carries the rules for Check, named "break-glass" in refusals.
	step *Step
}

// BreakGlassStep is the step name refusals and access records use for a break-glass release.
const BreakGlassStep = "break-glass"

// Reason returns the rule's reason with the code.
func (bg *BreakGlass) Reason(code string) (*BreakGlassReason, bool) {
	i := slices.IndexFunc(bg.Reasons, func(r *BreakGlassReason) bool { return r.Code == code })
	if i < 0 {
		return nil, false
	}
	return bg.Reasons[i], true
}

// Check decides a break-glass request against the rule exactly as [Step.Check] decides one at a step:
// every field and fact asked for must be named by the rule, nothing is trimmed.
func (bg *BreakGlass) Check(authority, dataset string, fields, derived []string) (Grant, error) {
	return bg.step.Check(authority, dataset, fields, derived)
}

// Step is the rule as a step (id "break-glass", the rule's agency, purpose, legal basis and releases),
// for the code that fetches and logs a grant at a step.
func (bg *BreakGlass) Step() *Step { return bg.step }

// BreakGlassReason is one emergency a break-glass rule is for.
type BreakGlassReason struct {
	Code  string
	Title Text
}

// Step returns the step with the given id and its index in the journey.
func (j *Journey) Step(id string) (step *Step, index int, ok bool) {
	for i, s := range j.Steps {
		if s.ID == id {
			return s, i, true
		}
	}
	return nil, -1, false
}

// Step names who acts and what they may see.
type Step struct {
	ID    string
	Title Text
	// Agency is the id of the agency that acts at this step; Role is the caseworker role expected.
	Agency, Role string
	Purpose      Text
	LegalBasis   string
	// Rules are what the step may see, one per authority dataset; a dataset without a rule is refused.
	Rules []*Rule
	// Consent is nil when the step needs no consent.
	Consent *Consent
	// Covert is nil unless the step's accesses are kept from the citizen for a while.
	Covert *Covert
	// Optional is set when the citizen may switch this step off (see also Journey.Optional).
	Optional *Optional

	// journey is the id of the journey the step belongs to, for messages.
	journey string
}

// Rule returns the rule of the step for one authority dataset.
func (s *Step) Rule(authority, dataset string) (*Rule, bool) {
	for _, r := range s.Rules {
		if r.Authority == authority && r.Dataset == dataset {
			return r, true
		}
	}
	return nil, false
}

// Rule is what a step may see of one authority dataset.
type Rule struct {
	// Authority and Dataset split the policy's "authority.dataset".
	Authority, Dataset string
	// Message is the dataset's message type, as the authority describes it.
	Message protoreflect.MessageDescriptor
	// Fields are the allowed field paths, normalized (sorted, no path covered by another).
	Fields []string
	// Derived are the facts the authority computes for the step, in policy order.
	Derived []*Derived
}

// Derived is a fact an authority computes with a CEL expression over the full record.
type Derived struct {
	Name        string
	Description Text
	Expression  string
	// Type is what the policy declares the fact can be; ResultType is the type CEL infers from the
	// schema ("bool", "int", "string", "list(…)"), which the loader has checked against Type.
	Type       FactType
	ResultType string
	// Reads are the record's field paths the expression reads, from the checked expression: what
	// the authority looks at to compute the fact (none of it is released).
	Reads []string
	// CitizenSeesAnswer is whether the citizen is shown the answer of this fact, when it is a bool
	// (policy field citizen_sees_answer; unset means yes: the answer is about their own data).
	CitizenSeesAnswer bool
	// HiddenAnswerReason says why the citizen must not see the answer, where CitizenSeesAnswer is
	// false (policy field hidden_answer_reason; lint warns when it is missing).
	HiddenAnswerReason Text
}

// ShowsAnswer reports whether the citizen is shown this fact's answer: a bool fact whose policy does
// not say no.
func (d *Derived) ShowsAnswer() bool { return d.CitizenSeesAnswer && d.Type.Kind == FactBool }

// Kinds of FactType.
const (
	FactBool   = "bool"
	FactInt    = "int"
	FactEnum   = "enum"
	FactString = "string"
	FactRecord = "record"
)

// FactType is the declared type of a derived fact, and so what it can disclose: a yes/no, a number in
// a range, one of a few values — or, only when the policy says why, a string or a record (values, not
// a fact).
type FactType struct {
	Kind string // one of the Fact… constants
	// Min and Max bound an int fact, both included.
	Min, Max int64
	// Values are the values an enum fact can take.
	Values []string
	// ValueReason says why a string or record fact is needed as a value.
	ValueReason Text
}

// String is the type as a reviewer reads it: "bool", "int 0..10", "enum {diesel, electric}",
// "string", "record".
func (t FactType) String() string {
	switch t.Kind {
	case FactInt:
		return fmt.Sprintf("int %d..%d", t.Min, t.Max)
	case FactEnum:
		return "enum {" + strings.Join(t.Values, ", ") + "}"
	}
	return t.Kind
}

// Admits reports whether v, a value an authority computed, is of the type. The broker releases no fact
// that is not: an int out of its range or a string outside an enum's values discloses more than the
// policy says.
func (t FactType) Admits(v *structpb.Value) bool {
	switch t.Kind {
	case FactBool:
		_, ok := v.GetKind().(*structpb.Value_BoolValue)
		return ok
	case FactInt:
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		return ok && n.NumberValue == math.Trunc(n.NumberValue) && n.NumberValue >= float64(t.Min) && n.NumberValue <= float64(t.Max)
	case FactEnum:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		return ok && slices.Contains(t.Values, s.StringValue)
	case FactString:
		_, ok := v.GetKind().(*structpb.Value_StringValue)
		return ok
	case FactRecord:
		switch v.GetKind().(type) {
		case *structpb.Value_ListValue, *structpb.Value_StructValue, *structpb.Value_NullValue:
			return true
		}
	}
	return false
}

// Covert keeps a step's accesses out of the citizen's view for at most MaxDays after each access;
// they are logged at once like any other access.
type Covert struct {
	// Reason is shown to the citizen with the accesses once they become visible.
	Reason  Text
	MaxDays int
	// Reveal is the point in the case at which the citizen is shown the step's accesses, if that
	// comes before MaxDays.
	Reveal Reveal
}

// Reveal is when a covert step's accesses are shown before their maximum delay has passed.
type Reveal string

const (
	// RevealCaseClosed shows them when the case closes (the default: a closed case hides nothing).
	RevealCaseClosed Reveal = "case-closed"
	// RevealNextStep shows them when a later step that is not covert begins (the citizen is told,
	// e.g. heard before a decision), or the case closes.
	RevealNextStep Reveal = "next-step"
	// RevealMaxDays shows them only when the maximum delay has passed, even after the case closed.
	RevealMaxDays Reveal = "max-days"
)

// MaxDelay is the longest an access at the step may stay hidden.
func (c *Covert) MaxDelay() time.Duration { return time.Duration(c.MaxDays) * 24 * time.Hour }

// Consent is the citizen's consent a step needs before it can release anything.
type Consent struct {
	// DefaultDays is how long a consent lasts when the citizen does not choose; MaxDays the longest
	// it may last.
	DefaultDays, MaxDays int
}
