package citizen_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestParentalCustody: a parent acts for a child in their custody, found in the registry's custody
// register, with every scope and for every journey, until the child comes of age; reading the
// register is in the parent's log, every look in the child's log worded for a parent; no one else gets
// anything with the child's id, and at the child's birthday the parent gets nothing more.
func TestParentalCustody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.b.Bundle()
	pc := b.Registry.ParentalCustody
	c, dc := e.citizen(), e.delegations()
	if pc == nil {
		// Without a custody register, nobody acts for a child, and nothing is read.
		bl, err := dc.ListDelegations(as(tokBo), &citizenv1.ListDelegationsRequest{})
		if err != nil || len(bl.GetHeld()) != 0 {
			t.Fatalf("without a custody register Bo holds %v, %v", bl, err)
		}
		return
	}
	j, cs := firstConsentStep(t, b)
	dansCase := e.open(j.Steps[0].Agency, j.ID, dan)
	custodyChecks := func() (n int) {
		for _, r := range e.truth(bo) {
			if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK {
				n++
				if r.GetAuthority() != pc.Authority || r.GetDataset() != pc.Dataset || len(r.GetFields()) != 3 || !strings.HasPrefix(r.GetFields()[0], pc.Field+".") {
					t.Errorf("custody check record: %v", r)
				}
			}
		}
		return n
	}

	bl, err := dc.ListDelegations(as(tokBo), &citizenv1.ListDelegationsRequest{})
	if err != nil || len(bl.GetHeld()) != 1 {
		t.Fatalf("Bo's delegations: %v, %v", bl, err)
	}
	kid := bl.GetHeld()[0]
	if kid.GetBasis() != citizenv1.DelegationBasis_DELEGATION_BASIS_PARENTAL_CUSTODY || kid.GetGivenNames() != "Dan" ||
		len(kid.GetScopes()) != 4 || kid.GetState() != citizenv1.DelegationState_DELEGATION_STATE_ACTIVE || !strings.HasPrefix(kid.GetId(), "cus_") {
		t.Fatalf("Bo's child as listed: %v", kid)
	}
	if until := kid.GetExpiresAt().AsTime(); until.Sub(e.clock.Now()) > danComesOfAge || until.Sub(e.clock.Now()) < danComesOfAge-time.Hour {
		t.Errorf("custody ends %v, want about %v from now", until, danComesOfAge)
	}
	if n := custodyChecks(); n != 1 {
		t.Fatalf("Bo's log has %d custody checks after listing, want 1", n)
	}

	t.Run("the parent acts", func(t *testing.T) {
		lc, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{OnBehalfOf: kid.GetId()})
		if err != nil || len(lc.GetCases()) != 1 || lc.GetCases()[0].GetId() != dansCase.GetId() {
			t.Fatalf("Bo's view of Dan's cases: %v, %v", lc, err)
		}
		if _, err := c.ListAccesses(as(tokBo), &citizenv1.ListAccessesRequest{OnBehalfOf: kid.GetId()}); err != nil {
			t.Fatal(err)
		}
		gc, err := c.GrantConsent(as(tokBo), &citizenv1.GrantConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: kid.GetId()})
		if err != nil || !gc.GetConsent().GetValid() {
			t.Fatalf("consent for Dan: %v, %v", gc, err)
		}
		if own, _ := c.ListConsents(as(tokDan), &citizenv1.ListConsentsRequest{}); len(own.GetConsents()) != 1 {
			t.Errorf("Dan's consents: %v", own.GetConsents())
		}
		// A parent also withdraws it (a power of attorney cannot; see TestDelegationBOLA).
		rc, err := c.RevokeConsent(as(tokBo), &citizenv1.RevokeConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: kid.GetId()})
		if err != nil || rc.GetConsent().GetValid() || rc.GetConsent().GetRevokedAt() == nil {
			t.Fatalf("withdrawing Dan's consent: %v, %v", rc, err)
		}
		if own, _ := c.ListConsents(as(tokDan), &citizenv1.ListConsentsRequest{}); len(own.GetConsents()) != 1 || own.GetConsents()[0].GetValid() {
			t.Errorf("Dan's consents after the withdrawal: %v", own.GetConsents())
		}
		recs := e.delegateRecords(dan)
		if len(recs) != 4 {
			t.Fatalf("Dan's log has %d delegate records, want 4", len(recs))
		}
		if last := recs[0]; last.GetKind() != auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED || last.GetDelegate().GetAction() != auditv1.DelegateAction_DELEGATE_ACTION_REVOKE_CONSENT {
			t.Errorf("the withdrawal in Dan's log: %v", last)
		}
		for _, r := range recs {
			if r.GetDelegate().GetBasis() != auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY || r.GetDelegate().GetDelegationId() != kid.GetId() {
				t.Errorf("Dan's record %v", r)
			}
		}
		// The register was read once for all of it.
		if n := custodyChecks(); n != 1 {
			t.Errorf("Bo's log has %d custody checks, want 1", n)
		}
		// Dan reads it as a parent's doing, in both languages.
		var words int
		for _, a := range e.accesses(tokDan, &citizenv1.ListAccessesRequest{}) {
			if a.GetDelegate().GetBasis() != auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY {
				continue
			}
			words++
			if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE {
				if !strings.Contains(a.GetPurpose().GetEn(), "parent with custody") || !strings.Contains(a.GetPurpose().GetDa(), "forældremyndighed") {
					t.Errorf("Dan reads %v", a.GetPurpose())
				}
			}
		}
		if words != 4 {
			t.Errorf("Dan sees %d of the parent's actions, want 4", words)
		}
		// Bo reads the custody check in his words.
		for _, a := range e.accesses(tokBo, &citizenv1.ListAccessesRequest{}) {
			if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK && (a.GetPurpose().GetEn() == "" || a.GetPurpose().GetDa() == "") {
				t.Errorf("custody check without words: %v", a)
			}
		}
	})

	t.Run("no one else", func(t *testing.T) {
		before := len(e.delegateRecords(dan))
		// Anna is no parent of Dan; Dan cannot act for himself through the id; a made-up id is no child.
		for _, tc := range []struct{ tok, id string }{{tokAnna, kid.GetId()}, {tokCai, kid.GetId()}, {tokBo, "cus_01jd3x0m6k9w2e5r7t8y4b1c0a"}} {
			_, err := c.ListCases(as(tc.tok), &citizenv1.ListCasesRequest{OnBehalfOf: tc.id})
			wantCode(t, err, codes.NotFound)
			_, err = c.GrantConsent(as(tc.tok), &citizenv1.GrantConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: tc.id})
			wantCode(t, err, codes.NotFound)
			_, err = c.RevokeConsent(as(tc.tok), &citizenv1.RevokeConsentRequest{Journey: j.ID, Step: cs.ID, OnBehalfOf: tc.id})
			wantCode(t, err, codes.NotFound)
		}
		if n := len(e.delegateRecords(dan)); n != before {
			t.Errorf("denied calls logged: %d delegate records in Dan's log, want %d", n, before)
		}
	})

	t.Run("the child comes of age", func(t *testing.T) {
		before := len(e.delegateRecords(dan))
		e.clock.advance(danComesOfAge + time.Hour)
		_, err := c.ListCases(as(tokBo), &citizenv1.ListCasesRequest{OnBehalfOf: kid.GetId()})
		wantCode(t, err, codes.NotFound)
		_, err = c.ListConsents(as(tokBo), &citizenv1.ListConsentsRequest{OnBehalfOf: kid.GetId()})
		wantCode(t, err, codes.NotFound)
		bl, err := dc.ListDelegations(as(tokBo), &citizenv1.ListDelegationsRequest{})
		if err != nil || len(bl.GetHeld()) != 0 {
			t.Fatalf("after Dan's birthday Bo holds %v, %v", bl, err)
		}
		if n := len(e.delegateRecords(dan)); n != before {
			t.Errorf("Dan's log has %d delegate records, want %d", n, before)
		}
	})
}
