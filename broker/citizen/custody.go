package citizen

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/authorities"
	"github.com/aperture-gov/aperture/broker/delegation"
	"github.com/aperture-gov/aperture/broker/ids"
	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Parental custody: a parent acts for a child under the age of majority with the same API as a holder
// of a power of attorney, naming the child by a "cus_…" id. Nothing is stored: the broker reads the
// children in the parent's custody from the register the registry names (policy.ParentalCustody),
// in the parent's own record, logs that read in the parent's log, and checks the child's age against
// its clock at every call, so custody ends on the child's birthday without anyone revoking it.

const (
	// custodyPrefix starts the id a parent names a child by.
	custodyPrefix = "cus"
	// custodyTTL is how long one read of the register serves a parent's calls: long enough that a
	// parent browsing the portal does not fill their log with the same read, short enough that a
	// change in the register (custody moved by a court) takes effect within minutes.
	custodyTTL = 2 * time.Minute
	// custodyLegalBasis is the law that lets a parent act for a child.
	custodyLegalBasis = "Parental responsibility (Forældreansvarsloven)"
)

// custodyScopes is what parental custody allows: everything a power of attorney can.
var custodyScopes = []delegation.Scope{delegation.SeeAccesses, delegation.SeeCases, delegation.SeeConsents, delegation.GrantConsent}

// child is one child in a parent's custody, as the broker keeps it for custodyTTL: never the child's
// citizen id, only its pseudonym.
type child struct {
	id         string // "cus_…", derived from the pseudonym
	pseudonym  keys.Pseudonym
	givenNames string
	birth      time.Time
	comesOfAge time.Time
}

// custodyID is the id a parent names child by: a hash of the child's pseudonym, so it says nothing
// about the child and is the same in every session.
func custodyID(p keys.Pseudonym) string {
	sum := sha256.Sum256([]byte("aperture parental custody\x00" + p.Value))
	return ids.FromBytes(custodyPrefix, [16]byte(sum[:16]))
}

func isCustodyID(id string) bool { return strings.HasPrefix(id, custodyPrefix+"_") }

// custodyCache keeps each parent's children for custodyTTL, by the parent's pseudonym.
type custodyCache struct {
	mu      sync.Mutex
	entries map[string]custodyEntry
}

type custodyEntry struct {
	children []child
	until    time.Time
}

func (c *custodyCache) get(parent string, now time.Time) ([]child, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[parent]
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.children, true
}

func (c *custodyCache) put(parent string, children []child, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]custodyEntry{}
	}
	for k, e := range c.entries { // keep it to the parents active in the last custodyTTL
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
	c.entries[parent] = custodyEntry{children: children, until: now.Add(custodyTTL)}
}

// children returns the minors in c's custody now. The first call in custodyTTL reads the custody field
// of c's own record in the register and writes that read to c's log, durably, before anything is
// used. Without a parental_custody register it returns nothing.
func (s *Service) children(ctx context.Context, c Citizen) ([]child, error) {
	b := s.cfg.Policies()
	pc := b.Registry.ParentalCustody
	if pc == nil {
		return nil, nil
	}
	now := s.cfg.Now()
	all, ok := s.custody.get(c.Pseudonym.Value, now)
	if !ok {
		var err error
		if all, err = s.readCustody(ctx, b, pc, c, now); err != nil {
			return nil, err
		}
		s.custody.put(c.Pseudonym.Value, all, now)
	}
	minors := make([]child, 0, len(all))
	for _, ch := range all {
		if now.Before(ch.comesOfAge) {
			minors = append(minors, ch)
		}
	}
	return minors, nil
}

// readCustody fetches the custody field of c's record and logs the read in c's log.
func (s *Service) readCustody(ctx context.Context, b *policy.Bundle, pc *policy.ParentalCustody, c Citizen, now time.Time) ([]child, error) {
	md, err := s.cfg.Authorities.Dataset(pc.Authority, pc.Dataset)
	if err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the custody register is unavailable; please try again")
	}
	fields := []string{pc.Field + "." + policy.CustodyChildID, pc.Field + "." + policy.CustodyGivenNames, pc.Field + "." + policy.CustodyBirthDate}
	rec := &auditv1.AccessRecord{
		Id:               ids.New("acc", now),
		Time:             timestamppb.New(now),
		CitizenPseudonym: c.Pseudonym.Value,
		PseudonymKeyId:   c.Pseudonym.KeyID,
		Kind:             auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK,
		Authority:        pc.Authority,
		Dataset:          pc.Dataset,
		Fields:           fields,
		Purpose:          custodyCheckPurpose.GetEn(),
		LegalBasis:       custodyLegalBasis,
		Decision:         auditv1.Decision_DECISION_RELEASED,
		PolicyVersion:    b.Version,
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	resp, ferr := s.cfg.Authorities.Fetch(fctx, pc.Authority, &authorityv1.FetchRequest{
		CitizenId: c.id,
		Dataset:   pc.Dataset,
		FieldMask: &fieldmaskpb.FieldMask{Paths: fields},
		Context: &authorityv1.AccessContext{
			AccessId: rec.Id, CaseId: SelfCase, Purpose: rec.Purpose, LegalBasis: rec.LegalBasis, Agency: SelfAgency,
		},
	})
	cancel()
	var out []child
	switch {
	case errors.Is(ferr, authorities.ErrNotFound):
		// Not in the register: no children, and that answer is logged too.
		rec.Decision, rec.Reason, rec.Code, rec.Fields = auditv1.Decision_DECISION_REFUSED, "the register holds no record of you", refusal.NotFound.String(), nil
	case ferr != nil:
		return nil, refusal.Wrap(refusal.Unavailable, ferr, "the custody register %q did not answer; please try again", pc.Authority)
	default:
		if out, err = s.decodeCustody(md, pc, resp.GetRecord().GetTypeUrl(), resp.GetRecord().GetValue()); err != nil {
			return nil, refusal.Wrap(refusal.Unavailable, err, "the custody register %q answered with a malformed record", pc.Authority)
		}
	}
	if err := s.cfg.Log.Append(ctx, rec); err != nil {
		return nil, refusal.Wrap(refusal.Unavailable, err, "the access log is unavailable; nothing was shown")
	}
	return out, nil
}

// decodeCustody reads the children out of a record of type md. The child's citizen id is used only to
// compute its pseudonym here, and dropped.
func (s *Service) decodeCustody(md protoreflect.MessageDescriptor, pc *policy.ParentalCustody, typeURL string, value []byte) ([]child, error) {
	if got := protoreflect.FullName(typeURL[strings.LastIndexByte(typeURL, '/')+1:]); got != md.FullName() {
		return nil, fmt.Errorf("record type %q, want %s", got, md.FullName())
	}
	msg := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(value, msg); err != nil {
		return nil, fmt.Errorf("decode %s: %w", md.FullName(), err)
	}
	f := md.Fields().ByName(protoreflect.Name(pc.Field))
	if f == nil || !f.IsList() || f.Message() == nil {
		return nil, fmt.Errorf("%s has no repeated message field %q", md.FullName(), pc.Field)
	}
	cf := f.Message().Fields()
	idF, namesF, birthF := cf.ByName(policy.CustodyChildID), cf.ByName(policy.CustodyGivenNames), cf.ByName(policy.CustodyBirthDate)
	if idF == nil || namesF == nil || birthF == nil {
		return nil, fmt.Errorf("%s.%s lacks the child's id, names or birth date", md.FullName(), pc.Field)
	}
	list := msg.Get(f).List()
	out := make([]child, 0, list.Len())
	for i := range list.Len() {
		m := list.Get(i).Message()
		id := m.Get(idF).String()
		bd := m.Get(birthF).Message()
		secs := bd.Get(bd.Descriptor().Fields().ByName("seconds")).Int()
		if id == "" || secs == 0 {
			continue // a child the register cannot name or date is no basis to act on
		}
		birth := time.Unix(secs, 0).UTC()
		p := s.cfg.Pseudonyms.Pseudonym(id)
		out = append(out, child{
			id: custodyID(p), pseudonym: p, givenNames: m.Get(namesF).String(),
			birth: birth, comesOfAge: birth.AddDate(pc.AgeOfMajority, 0, 0),
		})
	}
	return out, nil
}

// actForChild resolves a "cus_…" id among the children in c's custody. A child not in the register's
// list, or of age, is NotFound, exactly like a power of attorney the caller does not hold.
func (s *Service) actForChild(ctx context.Context, c Citizen, id string) (acting, error) {
	kids, err := s.children(ctx, c)
	if err != nil {
		return acting{}, err
	}
	i := slices.IndexFunc(kids, func(ch child) bool { return ch.id == id })
	if i < 0 {
		return acting{}, refusal.New(refusal.NotFound, "you act for no child %s", id)
	}
	ch := kids[i]
	return acting{
		Citizen: Citizen{Pseudonym: ch.pseudonym},
		d: &delegation.Delegation{
			ID: ch.id, Giver: ch.pseudonym.Value, Holder: c.Pseudonym.Value, Scopes: custodyScopes,
			GrantedAt: ch.birth, ExpiresAt: ch.comesOfAge,
		},
		basis: auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY,
	}, nil
}

// childView is a child as the parent sees it in ListDelegations.
func childView(ch child) *citizenv1.Delegation {
	d := &citizenv1.Delegation{
		Id: ch.id, GrantedAt: ts(ch.birth), ExpiresAt: ts(ch.comesOfAge), State: citizenv1.DelegationState_DELEGATION_STATE_ACTIVE,
		Basis: citizenv1.DelegationBasis_DELEGATION_BASIS_PARENTAL_CUSTODY, GivenNames: ch.givenNames,
	}
	for api := range scopeFromAPI {
		d.Scopes = append(d.Scopes, api)
	}
	slices.Sort(d.Scopes)
	return d
}

// custodyCheckPurpose words the read of the custody register in the parent's log.
var custodyCheckPurpose = &citizenv1.Text{
	En: "To find the children in your custody, so that you can act for them",
	Da: "For at finde de børn, du har forældremyndighed over, så du kan handle for dem",
}
