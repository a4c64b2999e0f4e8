package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/demo"
)

// movableClock is the whole stack's clock: real time plus an offset the test moves.
type movableClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *movableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *movableClock) set(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = time.Until(at)
}

// TestParentActsForChild is parental custody over the whole stack: a parent from the population
// register signs in to the portal (real headless Chromium, English and Danish), finds their child
// among the people they may act for, acts for them and sees the child's case under a banner that says
// so; the read of the custody register is in the parent's timeline and every look in the child's log,
// worded for a parent. Then the oldest child in anyone's custody turns 18 on the stack's clock, and
// from that moment their parent gets nothing and no longer lists them. Parents, children and journeys
// come from the registry, the population and the policies.
func TestParentActsForChild(t *testing.T) {
	clock := &movableClock{}
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen, o.Now = "127.0.0.1:0", "127.0.0.1:0", clock.Now
	})
	b := ts.Broker.Bundle()
	pc := b.Registry.ParentalCustody
	api := func(citizen string) (citizenv1.CitizenServiceClient, citizenv1.CitizenDelegationServiceClient, context.Context) {
		t.Helper()
		tok, err := ts.Portal.issuer.Mint(citizen, clock.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
		return citizenv1.NewCitizenServiceClient(ts.Portal.conn), citizenv1.NewCitizenDelegationServiceClient(ts.Portal.conn), ctx
	}
	var parent demo.Featured
	var kid demo.HouseholdMember
	for _, f := range ts.Population.Featured() {
		if c, ok := ts.Population.Citizen(f.ID); ok && len(c.Custody) > 0 {
			parent, kid = f, c.Custody[0]
			break
		}
	}
	if pc == nil || parent.ID == "" {
		// Without a custody register (or a featured parent), no one may act for a child: a child's id is
		// not found.
		c, _, ctx := api(ts.Population.Featured()[0].ID)
		_, err := c.ListCases(ctx, &citizenv1.ListCasesRequest{OnBehalfOf: "cus_01jd3x0m6k9w2e5r7t8y4b1c0a"})
		wantCode(t, err, codes.NotFound)
		if pc != nil {
			t.Fatal("the registry names a custody register but no featured citizen has a child in custody")
		}
		return
	}
	j, _ := plainReleaseStep(t, b)
	ts.open(j.Steps[0].Agency, j.ID, kid.ID)

	t.Run("portal", func(t *testing.T) {
		br := ts.browser(t)
		base, do, text := br.base, br.do, br.text
		br.signIn(parent.ID)
		do("people I may act for", chromedp.Navigate(base+"/delegations?lang=en"), chromedp.WaitVisible(chromedp.CSS("#held li.delegation--child")))
		if got := text("#held li.delegation--child"); !strings.Contains(got, "Your child "+kid.GivenNames) || strings.Contains(got, kid.ID) || !strings.Contains(got, "until they turn 18") {
			t.Errorf("the child as the parent sees it:\n%s", got)
		}
		br.screenshot("custody-01-children-en")
		do("act for the child", chromedp.Click(chromedp.CSS(`#held li.delegation--child button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#acting-banner")))
		do("the child's cases", chromedp.Navigate(base+"/cases?lang=en"), chromedp.WaitVisible(chromedp.CSS("#acting-banner")))
		if body := text("main"); !strings.Contains(body, j.Title.EN) || !strings.Contains(body, "You are acting for your child.") {
			t.Errorf("the parent's view of the child's cases:\n%s", body)
		}
		do("Danish", chromedp.Navigate(base+"/cases?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #acting-banner`)))
		if got := text("#acting-banner"); !strings.Contains(got, "Du handler for dit barn.") {
			t.Errorf("Danish banner: %q", got)
		}
		br.screenshot("custody-02-acting-da")
		// A parent gives and withdraws the child's consent (a power of attorney only gives).
		cj, cs := consentStep(t, b)
		do("consent for the child", chromedp.Navigate(base+"/consents/"+cj.ID+"/"+cs.ID+"?lang=en"), chromedp.WaitVisible(chromedp.CSS(`form[action$="/grant"] button[type="submit"]`)))
		do("give it", chromedp.Click(chromedp.CSS(`form[action$="/grant"] button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(`form[action$="/revoke"] button`)))
		do("withdraw it", chromedp.Click(chromedp.CSS(`form[action$="/revoke"] button`)), chromedp.WaitNotPresent(chromedp.CSS(`form[action$="/revoke"]`)))
		kcl, _, kctx0 := api(kid.ID)
		if own, err := kcl.ListConsents(kctx0, &citizenv1.ListConsentsRequest{}); err != nil || len(own.GetConsents()) != 1 || own.GetConsents()[0].GetValid() || own.GetConsents()[0].GetRevokedAt() == nil {
			t.Errorf("the child's consent after the parent gave and withdrew it: %v, %v", own, err)
		}
		do("act for myself", chromedp.Click(chromedp.CSS(`#acting-banner button`)), chromedp.WaitVisible(chromedp.CSS("#held")))

		// The parent's own timeline has the read of the register; the child's log has the looks.
		var check string
		for _, r := range ts.accessRecords(parent.ID) {
			if r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CUSTODY_CHECK {
				check = r.GetId()
			}
		}
		if check == "" {
			t.Fatal("the read of the custody register is not in the parent's log")
		}
		do("timeline", chromedp.Navigate(base+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS("#"+check)))
		if got := text("#" + check); !strings.Contains(got, "which children you have custody of") || strings.Contains(got, kid.ID) {
			t.Errorf("the custody check in the parent's timeline:\n%s", got)
		}
		do("Danish timeline", chromedp.Navigate(base+"/?lang=da"), chromedp.WaitVisible(chromedp.CSS(`html[lang="da"] #`+check)))
		if got := text("#" + check); !strings.Contains(got, "hvilke børn du har forældremyndighed over") {
			t.Errorf("the custody check in the Danish timeline:\n%s", got)
		}
		looks := 0
		for _, r := range ts.accessRecords(kid.ID) {
			if r.GetDelegate().GetBasis() == auditv1.DelegateBasis_DELEGATE_BASIS_PARENTAL_CUSTODY {
				looks++
			}
		}
		if looks == 0 {
			t.Error("the parent's looks are not in the child's log")
		}
		kc, _, kctx := api(kid.ID)
		la, err := kc.ListAccesses(kctx, &citizenv1.ListAccessesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range la.GetAccesses() {
			if a.GetKind() == auditv1.AccessKind_ACCESS_KIND_DELEGATE && (!strings.Contains(a.GetPurpose().GetEn(), "parent with custody") || !strings.Contains(a.GetPurpose().GetDa(), "forældremyndighed")) {
				t.Errorf("the child reads %v", a.GetPurpose())
			}
		}
	})

	t.Run("the child turns 18", func(t *testing.T) {
		// The child closest to 18 in anyone's custody, and their parent.
		var older, p string
		var born time.Time
		for _, id := range ts.Population.IDs() {
			c, _ := ts.Population.Citizen(id)
			for _, k := range c.Custody {
				if older == "" || k.BirthDate.Before(born) {
					older, p, born = k.ID, id, k.BirthDate
				}
			}
		}
		ts.open(j.Steps[0].Agency, j.ID, older)
		comesOfAge := born.AddDate(pc.AgeOfMajority, 0, 0)
		clock.set(comesOfAge.Add(-24 * time.Hour))
		c, dc, ctx := api(p)
		held, err := dc.ListDelegations(ctx, &citizenv1.ListDelegationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var id string
		for _, d := range held.GetHeld() {
			if d.GetBasis() == citizenv1.DelegationBasis_DELEGATION_BASIS_PARENTAL_CUSTODY && d.GetExpiresAt().AsTime().Equal(comesOfAge) {
				id = d.GetId()
			}
		}
		if id == "" {
			t.Fatalf("the day before the birthday the parent does not list the child: %v", held.GetHeld())
		}
		if lc, err := c.ListCases(ctx, &citizenv1.ListCasesRequest{OnBehalfOf: id}); err != nil || len(lc.GetCases()) != 1 {
			t.Fatalf("the day before the birthday: %v, %v", lc, err)
		}
		clock.set(comesOfAge.Add(time.Hour))
		c, dc, ctx = api(p)
		_, err = c.ListCases(ctx, &citizenv1.ListCasesRequest{OnBehalfOf: id})
		wantCode(t, err, codes.NotFound)
		held, err = dc.ListDelegations(ctx, &citizenv1.ListDelegationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range held.GetHeld() {
			if d.GetId() == id {
				t.Errorf("on the birthday the parent still lists the child: %v", d)
			}
		}
	})
}
