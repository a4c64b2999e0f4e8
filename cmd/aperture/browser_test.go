package main

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
)

// portalBrowser is a headless Chromium on a stack's portal, with the steps the portal tests share.
type portalBrowser struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// browser opens a desktop-sized Chromium on the stack's portal.
func (ts *testStack) browser(t *testing.T) *portalBrowser {
	t.Helper()
	ctx := portaltest.NewBrowser(t)
	portaltest.SetViewport(t, ctx, portaltest.Desktop)
	return &portalBrowser{t: t, ctx: ctx, base: ts.Portal.base}
}

// do runs steps, failing the test with what they were for.
func (b *portalBrowser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	portaltest.Do(b.t, b.ctx, what, steps...)
}

// text is the visible text of the first element sel matches, or "" if none does.
func (b *portalBrowser) text(sel string) string {
	b.t.Helper()
	return portaltest.Eval[string](b.t, b.ctx, `(document.querySelector(`+jsString(sel)+`) || {innerText: ""}).innerText`)
}

// signIn signs in through the development login as the demo citizen with id.
func (b *portalBrowser) signIn(id string) {
	b.t.Helper()
	b.do("open the portal", chromedp.Navigate(b.base+"/?lang=en"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)))
	b.do("sign in", chromedp.Click(chromedp.CSS(`input[value="`+id+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))
}

// signOut signs out.
func (b *portalBrowser) signOut() {
	b.t.Helper()
	b.do("sign out", chromedp.Click(chromedp.CSS(`form.signout button`)), chromedp.WaitNotPresent(chromedp.CSS(`form.signout`)))
}

// screenshot saves the page as an artifact named name.
func (b *portalBrowser) screenshot(name string) { portaltest.Screenshot(b.t, b.ctx, name) }
