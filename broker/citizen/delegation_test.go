package citizen_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/accesslog"
	"github.com/aperture-gov/aperture/broker/policy"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// delegations returns the delegation API client, over the citizen API's TLS connection.
func (e *env) delegations() citizenv1.CitizenDelegationServiceClient {
	e.citizen() // dials
	e.mu.Lock()
	defer e.mu.Unlock()
	return citizenv1.NewCitizenDelegationServiceClient(e.cconn)
}

// otherJourney is a journey of the bundle other than j whose first step's agency can open it.
func otherJourney(t *testing.T, b *policy.Bundle, j *policy.Journey) *policy.Journey {
	t.Helper()
	for _, o := range b.Journeys() {
		if o.ID != j.ID && o.Steps[0].Covert == nil {
			return o
		}
	}
	t.Fatal("the policies have only one journey")
	return nil
}

// powersOfAttorney are the delegations of ds given by someone (not the children in one's custody).
func powersOfAttorney(ds []*citizenv1.Delegation) []*citizenv1.Delegation {
	var out []*citizenv1.Delegation
	for _, d := range ds {
		if d.GetBasis() == citizenv1.DelegationBasis_DELEGATION_BASIS_POWER_OF_ATTORNEY {
			out = append(out, d)
		}
	}
	return out
}

// delegateRecords are the delegate records in citizen's access log, straight from the log.
func (e *env) delegateRecords(citizen string) []*auditv1.AccessRecord {
	e.t.Helper()
	e.waitIndexCaughtUp()
	var out []*auditv1.AccessRecord
	for _, r := range e.truth(citizen) {
		if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE || r.GetDelegate() != nil {
			out = append(out, r)
		}
	}
	return out
}

// TestDelegationBOLA: a power of attorney lets its holder, and no one else, do what its scope allows
// for the citizen who gave it, for the journeys it names, until it expires or is revoked; each thing
// the holder sees or does is in the giver's log first, in words that name no one; every other call
// on someone's behalf gets nothing and changes nothing. The journeys come from the policy bundle.
func TestDelegationBOLA(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.secrets = append(e.secrets, e.pn.Pseudonym(bo).Value) // the holder's pseudonym never reaches a log line
	c, dc := e.citizen(), e.delegations()
	b := e.b.Bundle()
	j, cs := firstConsentStep(t, b)
	other := otherJourney(t, b, j)
	inScope := e.open(j.Steps[0].Agency, j.ID, anna)
	outOfScope := e.open(other.Steps[0].Agency, other.ID, anna)
	bosOwn := e.open(j.Steps[0].Agency, j.ID, bo)
	rule := j.Steps[0].Rules
	if len(rule) > 0 {
		e.release(j.Steps[0].Agency, inScope.GetId(), rule[0].Authority, rule[0].Dataset)
	}
	ghost := "del_01jd3x0m6k9w2e5r7t8y4b1c0a"
	now := e.clock.Now()
	in30d := timestamppb.New(now.Add(30 * 24 * time.Hour))

	// calls are every call on someone's behalf, each given a delegation id.
	type call struct {
		name string
		do   func(id string) error
	}
	calls := []call{
		{"ListAccesses", func(id string) error {
			_, err := c.ListAccesses(as(tokBo), &citizenv1.ListAccessesRequest{OnBehalfOf: id})
			return err
		}},
		{"ListCases", func(id string) error {
			_, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{OnBehalfOf: id})
			return err
		}},
		{"GetCase", func(id string) error {
			_, err := c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: inScope.GetId(), OnBehalfOf: id})
			return err
		}},
		{"ListConsents", func(id string) error {
			_, err := c.ListConsents(as(tokBo), &citizenv1.ListConsentsRequest{OnBehalfOf: id})
			return err
		}},
		{"PreviewConsent", func(id string) error {
			_, err := c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: id})
			return err
		}},
		{"GrantConsent", func(id string) error {
			_, err := c.GrantConsent(as(tokBo), &citizenv1.GrantConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: id})
			return err
		}},
	}
	nothingChanged := func(t *testing.T, wantDelegateRecords int) {
		t.Helper()
		if n := len(e.delegateRecords(anna)); n != wantDelegateRecords {
			t.Errorf("Anna's log has %d delegate records, want %d", n, wantDelegateRecords)
		}
		lc, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(lc.GetConsents()) != 0 && wantDelegateRecords == 0 {
			t.Errorf("a denied call gave consent for Anna: %v", lc.GetConsents())
		}
	}

	t.Run("never granted", func(t *testing.T) {
		for _, cl := range calls {
			wantCode(t, cl.do(ghost), codes.NotFound)
		}
		nothingChanged(t, 0)
	})

	// Anna gives Bo power of attorney to see her cases and give consent, for journey j only.
	g, err := dc.GrantDelegation(as(tokAnna), &citizenv1.GrantDelegationRequest{
		HolderCitizenId: bo, Journeys: []string{j.ID}, ExpiresAt: in30d,
		Scopes: []citizenv1.DelegationScope{citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES, citizenv1.DelegationScope_DELEGATION_SCOPE_GRANT_CONSENT},
	})
	if err != nil {
		t.Fatal(err)
	}
	d1 := g.GetDelegation().GetId()
	if g.GetDelegation().GetState() != citizenv1.DelegationState_DELEGATION_STATE_ACTIVE {
		t.Fatalf("granted: %v", g.GetDelegation())
	}

	t.Run("someone else's delegation", func(t *testing.T) {
		// Cai, and Anna herself, name Bo's delegation: not found, as if it did not exist.
		for _, tok := range []string{tokCai, tokAnna} {
			_, err := c.ListCases(as(tok), &citizenv1.ListCasesRequest{OnBehalfOf: d1})
			wantCode(t, err, codes.NotFound)
			_, err = c.GrantConsent(as(tok), &citizenv1.GrantConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d1})
			wantCode(t, err, codes.NotFound)
			_, err = c.PreviewConsent(as(tok), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d1})
			wantCode(t, err, codes.NotFound)
		}
		// Only the giver revokes it.
		_, err := dc.RevokeDelegation(as(tokBo), &citizenv1.RevokeDelegationRequest{Id: d1})
		wantCode(t, err, codes.NotFound)
		nothingChanged(t, 0)
	})

	t.Run("outside scope", func(t *testing.T) {
		_, err := c.ListAccesses(as(tokBo), &citizenv1.ListAccessesRequest{OnBehalfOf: d1})
		wantCode(t, err, codes.PermissionDenied)
		_, err = c.ListConsents(as(tokBo), &citizenv1.ListConsentsRequest{OnBehalfOf: d1})
		wantCode(t, err, codes.PermissionDenied)
		// A case of a journey it does not name is not found; consent there is denied.
		_, err = c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: outOfScope.GetId(), OnBehalfOf: d1})
		wantCode(t, err, codes.NotFound)
		for _, st := range other.Steps {
			if st.Consent != nil {
				_, err = c.GrantConsent(as(tokBo), &citizenv1.GrantConsentRequest{Journey: other.ID, Step: st.ID, OnBehalfOf: d1})
				wantCode(t, err, codes.PermissionDenied)
				_, err = c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: other.ID, Step: st.ID, OnBehalfOf: d1})
				wantCode(t, err, codes.PermissionDenied)
			}
		}
		nothingChanged(t, 0)
	})

	t.Run("in scope", func(t *testing.T) {
		lc, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{OnBehalfOf: d1})
		if err != nil {
			t.Fatal(err)
		}
		if len(lc.GetCases()) != 1 || lc.GetCases()[0].GetId() != inScope.GetId() {
			t.Fatalf("Bo sees %v for Anna, want only the case of %s", lc.GetCases(), j.ID)
		}
		if _, err := c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: inScope.GetId(), OnBehalfOf: d1}); err != nil {
			t.Fatal(err)
		}
		// A case of the same journey that is not Anna's (Bo's own) is not found on her behalf.
		_, err = c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: bosOwn.GetId(), OnBehalfOf: d1})
		wantCode(t, err, codes.NotFound)
		// Bo previews what the consent would release for Anna: her step, her (missing) consent.
		pv, err := c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d1})
		if err != nil || pv.GetStep().GetStep().GetId() != cs.ID || pv.GetCurrent() != nil {
			t.Fatalf("preview on Anna's behalf: %v, %v", pv, err)
		}
		gc, err := c.GrantConsent(as(tokBo), &citizenv1.GrantConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d1})
		if err != nil || !gc.GetConsent().GetValid() {
			t.Fatalf("consent on Anna's behalf: %v, %v", gc, err)
		}
		// A second preview shows Anna's consent; Bo's own preview shows none of his.
		pv, err = c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d1})
		if err != nil || !pv.GetCurrent().GetValid() {
			t.Fatalf("preview on Anna's behalf after consent: %v, %v", pv, err)
		}
		if own, err := c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID}); err != nil || own.GetCurrent() != nil {
			t.Fatalf("Bo's own preview: %v, %v", own, err)
		}
		// Withdrawing stays with Anna: the API takes no power of attorney for it.
		_, err = c.RevokeConsent(as(tokBo), &citizenv1.RevokeConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d1})
		wantCode(t, err, codes.InvalidArgument)
		// The consent is Anna's, not Bo's, and still holds.
		if own, _ := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{}); len(own.GetConsents()) != 1 || !own.GetConsents()[0].GetValid() {
			t.Errorf("Anna's consents: %v", own.GetConsents())
		}
		if own, _ := c.ListConsents(as(tokBo), &citizenv1.ListConsentsRequest{}); len(own.GetConsents()) != 0 {
			t.Errorf("Bo's own consents: %v", own.GetConsents())
		}
		// Bo's own cases are still his own.
		if own, _ := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{}); len(own.GetCases()) != 1 || own.GetCases()[0].GetId() != bosOwn.GetId() {
			t.Errorf("Bo's own cases: %v", own.GetCases())
		}
		// Five things Bo did, five records in Anna's log, none naming Bo.
		recs := e.delegateRecords(anna)
		if len(recs) != 5 {
			t.Fatalf("Anna's log has %d delegate records, want 5", len(recs))
		}
		bp := []byte(e.pn.Pseudonym(bo).Value)
		for _, r := range recs {
			if r.GetDelegate().GetDelegationId() != d1 || r.GetDelegate().GetBasis() != auditv1.DelegateBasis_DELEGATE_BASIS_POWER_OF_ATTORNEY {
				t.Errorf("record %v", r)
			}
		}
		// Anna reads them in her words, in both languages.
		seen := map[auditv1.DelegateAction]*citizenv1.Access{}
		for _, a := range e.accesses(tokAnna, &citizenv1.ListAccessesRequest{}) {
			if a.GetDelegate() != nil {
				seen[a.GetDelegate().GetAction()] = a
				if bytes.Contains(a.GetLeaf(), bp) {
					t.Errorf("the log record of %v names the holder", a.GetDelegate())
				}
				if a.GetPurpose().GetEn() == "" || a.GetPurpose().GetDa() == "" {
					t.Errorf("delegate access without words: %v", a)
				}
			}
		}
		if g := seen[auditv1.DelegateAction_DELEGATE_ACTION_GRANT_CONSENT]; g == nil || g.GetJourney().GetId() != j.ID || g.GetStep().GetId() != cs.ID {
			t.Errorf("consent on her behalf as Anna sees it: %v", g)
		}
		if p := seen[auditv1.DelegateAction_DELEGATE_ACTION_PREVIEW_CONSENT]; p == nil || p.GetJourney().GetId() != j.ID ||
			p.GetStep().GetId() != cs.ID || p.GetAgency() != nil || !strings.Contains(p.GetPurpose().GetEn(), "would share") {
			t.Errorf("preview on her behalf as Anna sees it: %v", p)
		}
		if seen[auditv1.DelegateAction_DELEGATE_ACTION_VIEW_CASES] == nil {
			t.Error("Anna does not see that her cases were looked at")
		}
	})

	t.Run("lists", func(t *testing.T) {
		bl, err := dc.ListDelegations(as(tokBo), &citizenv1.ListDelegationsRequest{})
		if held := powersOfAttorney(bl.GetHeld()); err != nil || len(held) != 1 || held[0].GetId() != d1 || len(bl.GetGranted()) != 0 {
			t.Fatalf("Bo's delegations: %v, %v", bl, err)
		}
		al, err := dc.ListDelegations(as(tokAnna), &citizenv1.ListDelegationsRequest{})
		if err != nil || len(al.GetGranted()) != 1 || len(al.GetHeld()) != 0 || al.GetGranted()[0].GetJourneys()[0].GetId() != j.ID {
			t.Fatalf("Anna's delegations: %v, %v", al, err)
		}
		if cl, _ := dc.ListDelegations(as(tokCai), &citizenv1.ListDelegationsRequest{}); len(cl.GetHeld())+len(cl.GetGranted()) != 0 {
			t.Fatalf("Cai's delegations: %v", cl)
		}
	})

	t.Run("after revocation", func(t *testing.T) {
		r, err := dc.RevokeDelegation(as(tokAnna), &citizenv1.RevokeDelegationRequest{Id: d1})
		if err != nil || r.GetDelegation().GetState() != citizenv1.DelegationState_DELEGATION_STATE_REVOKED {
			t.Fatalf("revoke: %v, %v", r, err)
		}
		for _, cl := range calls {
			wantCode(t, cl.do(d1), codes.NotFound)
		}
		nothingChanged(t, 5)
		if bl, _ := dc.ListDelegations(as(tokBo), &citizenv1.ListDelegationsRequest{}); len(powersOfAttorney(bl.GetHeld())) != 0 {
			t.Errorf("Bo still holds %v", bl.GetHeld())
		}
	})

	t.Run("after expiry", func(t *testing.T) {
		g, err := dc.GrantDelegation(as(tokAnna), &citizenv1.GrantDelegationRequest{
			HolderCitizenId: bo, ExpiresAt: timestamppb.New(e.clock.Now().Add(2 * time.Hour)),
			Scopes: []citizenv1.DelegationScope{citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_ACCESSES},
		})
		if err != nil {
			t.Fatal(err)
		}
		d2 := g.GetDelegation().GetId()
		// Seeing accesses does not cover previewing a consent.
		_, err = c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: d2})
		wantCode(t, err, codes.PermissionDenied)
		la, err := c.ListAccesses(as(tokBo), &citizenv1.ListAccessesRequest{OnBehalfOf: d2})
		if err != nil || len(la.GetAccesses()) == 0 {
			t.Fatalf("Bo lists Anna's accesses: %v, %v", la, err)
		}
		for _, a := range la.GetAccesses() {
			for _, f := range a.GetFacts() {
				if f.Answer != nil {
					t.Errorf("a delegate sees the answer of fact %s", f.GetName())
				}
			}
		}
		e.clock.advance(3 * time.Hour)
		for _, cl := range calls {
			wantCode(t, cl.do(d2), codes.NotFound)
		}
		nothingChanged(t, 6)
	})

	t.Run("invalid grants", func(t *testing.T) {
		scopes := []citizenv1.DelegationScope{citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES}
		future := timestamppb.New(e.clock.Now().Add(time.Hour))
		for name, tc := range map[string]struct {
			req  *citizenv1.GrantDelegationRequest
			code codes.Code
		}{
			"to oneself":      {&citizenv1.GrantDelegationRequest{HolderCitizenId: anna, Scopes: scopes, ExpiresAt: future}, codes.InvalidArgument},
			"in the past":     {&citizenv1.GrantDelegationRequest{HolderCitizenId: bo, Scopes: scopes, ExpiresAt: timestamppb.New(e.clock.Now().Add(-time.Hour))}, codes.InvalidArgument},
			"no scope":        {&citizenv1.GrantDelegationRequest{HolderCitizenId: bo, ExpiresAt: future}, codes.InvalidArgument},
			"unknown journey": {&citizenv1.GrantDelegationRequest{HolderCitizenId: bo, Scopes: scopes, ExpiresAt: future, Journeys: []string{"no-such-journey"}}, codes.NotFound},
		} {
			_, err := dc.GrantDelegation(as(tokAnna), tc.req)
			if status := codes.Code(0); err == nil {
				t.Errorf("%s: granted (%v)", name, status)
				continue
			}
			t.Run(name, func(t *testing.T) { wantCode(t, err, tc.code) })
		}
	})
}

// TestDelegateGetsNothingWithoutTheLog: a look or a consent on someone's behalf is logged in the
// giver's log before it is answered or stored; when the log cannot take the record, the holder gets
// Unavailable, sees nothing, and no consent is given.
func TestDelegateGetsNothingWithoutTheLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, dc := e.citizen(), e.delegations()
	j, cs := firstConsentStep(t, e.b.Bundle())
	kase := e.open(j.Steps[0].Agency, j.ID, anna)
	g, err := dc.GrantDelegation(as(tokAnna), &citizenv1.GrantDelegationRequest{
		HolderCitizenId: bo, ExpiresAt: timestamppb.New(e.clock.Now().Add(24 * time.Hour)),
		Scopes: []citizenv1.DelegationScope{
			citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_ACCESSES, citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CASES,
			citizenv1.DelegationScope_DELEGATION_SCOPE_SEE_CONSENTS, citizenv1.DelegationScope_DELEGATION_SCOPE_GRANT_CONSENT,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := g.GetDelegation().GetId()
	// While the log takes records, the holder may look (proving the calls below are refused for the log alone).
	if _, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{OnBehalfOf: id}); err != nil {
		t.Fatalf("a look on Anna's behalf with the log up: %v", err)
	}
	// The log stops taking records the way a full disk or a lost quorum does for a broker: JetStream
	// refuses the write (a sealed ACCESS stream takes nothing more), and the breaker opens.
	js, err := jetstream.New(e.b.NATSConn())
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), accesslog.AccessStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	la, err := c.ListAccesses(as(tokBo), &citizenv1.ListAccessesRequest{OnBehalfOf: id})
	wantCode(t, err, codes.Unavailable)
	lc, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{OnBehalfOf: id})
	wantCode(t, err, codes.Unavailable)
	gc, err := c.GetCase(as(tokBo), &citizenv1.GetCaseRequest{CaseId: kase.GetId(), OnBehalfOf: id})
	wantCode(t, err, codes.Unavailable)
	ln, err := c.ListConsents(as(tokBo), &citizenv1.ListConsentsRequest{OnBehalfOf: id})
	wantCode(t, err, codes.Unavailable)
	_, err = c.GrantConsent(as(tokBo), &citizenv1.GrantConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: id})
	wantCode(t, err, codes.Unavailable)
	pv, err := c.PreviewConsent(as(tokBo), &citizenv1.PreviewConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: id})
	wantCode(t, err, codes.Unavailable)
	if pv.GetStep() != nil {
		t.Fatal("a preview on someone's behalf answered without its record")
	}
	if len(la.GetAccesses())+len(lc.GetCases())+len(ln.GetConsents()) != 0 || gc.GetCase() != nil {
		t.Fatal("a refused call on someone's behalf answered with data")
	}
	if own, err := c.ListConsents(as(tokAnna), &citizenv1.ListConsentsRequest{}); err != nil || len(own.GetConsents()) != 0 {
		t.Fatalf("a consent was given for Anna without its record: %v, %v", own.GetConsents(), err)
	}
	// A parent's custody is read from the register only with that read in the parent's log: no list
	// of children, and nothing for a child, without it.
	if e.b.Bundle().Registry.ParentalCustody != nil {
		bl, err := dc.ListDelegations(as(tokBo), &citizenv1.ListDelegationsRequest{})
		wantCode(t, err, codes.Unavailable)
		if len(bl.GetHeld()) != 0 {
			t.Fatal("children listed without the custody check in the log")
		}
	}
}
