package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/cases"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// TestProactiveJourneyEndToEnd: an authority publishes a life event over its mTLS identity → the broker
// opens the journeys the policies start on it → the agency gets the case event on NATS → the opening is
// in the citizen's access log → the citizen sees "nothing to fill in" in the portal, in English and
// Danish. The same event again opens nothing; an event type the authority may not publish, and any
// event published with an agency's or auditor's certificate, are refused and change nothing. The event,
// its publisher and its journeys come from policies/events.yaml.
func TestProactiveJourneyEndToEnd(t *testing.T) {
	ts := newTestStack(t, func(o *stackOptions) {
		o.PortalListen, o.CitizenListen, o.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	})
	b := ts.Broker.Bundle()
	var ev *policy.LifeEvent
	for _, e := range b.Events() {
		if len(e.Starts) > 0 {
			ev = e
			break
		}
	}
	if ev == nil {
		t.Fatal("the policies start no journey on a life event")
	}
	publisher, start := ev.PublishedBy[0], ev.Starts[0]
	journey, _ := b.Journey(start.Journey)
	citizen := ts.Population.Featured()[0].ID

	// The agency's system listens on its own event subject, with its own certificate.
	pki := filepath.Join(ts.dataDir, "pki")
	if _, err := ts.CA.Source(mtls.KindAgency, start.Agency); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ts.nats.ClientURL(), nats.ClientCert(filepath.Join(pki, "agency-"+start.Agency+".crt"), filepath.Join(pki, "agency-"+start.Agency+".key")),
		nats.RootCAs(filepath.Join(pki, "ca.crt")), nats.NoReconnect())
	if err != nil {
		t.Fatalf("agency %s connects to NATS: %v", start.Agency, err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("aperture.events.agency." + start.Agency + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	publish := func(kind, name, typ, id string) (*brokerv1.PublishLifeEventResponse, error) {
		ctx, cancel := context.WithTimeout(cw("cw-1"), 30*time.Second) // the caseworker header is ignored for authorities
		defer cancel()
		return brokerv1.NewLifeEventServiceClient(ts.conn(kind, name)).PublishLifeEvent(ctx, &brokerv1.PublishLifeEventRequest{
			EventId: id, Type: typ, CitizenId: citizen, OccurredAt: timestamppb.New(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)),
		})
	}
	citizenCases := func() []*cases.Case {
		pn := ts.Pseudonyms.Pseudonym(citizen).Value
		all, err := ts.Broker.Cases.List(context.Background(), func(c *cases.Case) bool { return c.Pseudonym == pn })
		if err != nil {
			t.Fatal(err)
		}
		return all
	}

	first, err := publish(mtls.KindAuthority, publisher, ev.Type, "ev-1")
	if err != nil {
		t.Fatalf("%s publishes %s: %v", publisher, ev.Type, err)
	}
	if first.GetDuplicate() || len(first.GetCases()) != len(ev.Starts) {
		t.Fatalf("first delivery: %v, want %d new cases", first, len(ev.Starts))
	}
	opened := first.GetCases()[0]
	if opened.GetJourney() != start.Journey || opened.GetAgency() != start.Agency {
		t.Fatalf("opened %s at %s, want %s at %s", opened.GetJourney(), opened.GetAgency(), start.Journey, start.Agency)
	}

	// The agency learns of the case from its event subject, without anyone carrying papers.
	deadline := time.Now().Add(20 * time.Second)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no case_opened event for %s: %v", opened.GetCaseId(), err)
		}
		var ce brokerv1.CaseEvent
		if err := proto.Unmarshal(msg.Data, &ce); err != nil {
			t.Fatal(err)
		}
		if ce.GetCaseId() == opened.GetCaseId() && ce.GetType() == cases.EventCaseOpened {
			break
		}
	}

	// The opening is in the citizen's access log: the agency now knows of the citizen's case.
	openings := func() int {
		n := 0
		for _, r := range ts.accessRecords(citizen) {
			if r.GetCaseId() == opened.GetCaseId() && r.GetAgency() == start.Agency && r.GetKind() == auditv1.AccessKind_ACCESS_KIND_CASE_READ {
				n++
			}
		}
		return n
	}
	if n := openings(); n != 1 {
		t.Fatalf("%d access records of the opening, want 1", n)
	}
	before := citizenCases()
	logged := len(ts.accessRecords(citizen))

	// Delivered twice: one case, the same answer, nothing logged.
	again, err := publish(mtls.KindAuthority, publisher, ev.Type, "ev-1")
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetDuplicate() || len(again.GetCases()) != 1 || again.GetCases()[0].GetCaseId() != opened.GetCaseId() {
		t.Fatalf("second delivery: %v, want the first delivery's case as a duplicate", again)
	}
	unchanged := func(what string) {
		t.Helper()
		if got := citizenCases(); len(got) != len(before) {
			t.Fatalf("%s: the citizen has %d cases, had %d", what, len(got), len(before))
		}
		if got := len(ts.accessRecords(citizen)); got != logged {
			t.Fatalf("%s: %d access records, had %d", what, got, logged)
		}
	}
	unchanged("duplicate event")

	// An authority may publish only the event types the policies give it.
	refused := false
	for _, a := range ts.Registry.Authorities {
		if ev.MayPublish(a.ID) {
			continue
		}
		_, err := publish(mtls.KindAuthority, a.ID, ev.Type, "ev-2")
		wantCode(t, err, codes.PermissionDenied, ev.Type)
		wantReason(t, err, "EVENT_NOT_ALLOWED", "type", ev.Type)
		unchanged("event from " + a.ID)
		refused = true
		break
	}
	if !refused {
		t.Fatalf("every authority may publish %s: the test needs one that may not", ev.Type)
	}
	// Nor an undeclared type.
	_, err = publish(mtls.KindAuthority, publisher, "no_such_event", "ev-3")
	wantCode(t, err, codes.PermissionDenied)
	wantReason(t, err, "EVENT_NOT_ALLOWED")
	unchanged("undeclared event type")

	// BOLA: an agency's certificate — even the agency the journey starts at — and an auditor's publish nothing.
	for _, a := range ts.Registry.Agencies {
		_, err := publish(mtls.KindAgency, a.ID, ev.Type, "ev-4")
		wantCode(t, err, codes.PermissionDenied)
	}
	_, err = publish(mtls.KindAuditor, ts.Registry.Auditors[0].ID, ev.Type, "ev-5")
	wantCode(t, err, codes.PermissionDenied)
	unchanged("events from agency and auditor certificates")
	// And an authority may not reach the agencies' API with its certificate.
	_, err = brokerv1.NewBrokerServiceClient(ts.conn(mtls.KindAuthority, publisher)).OpenCase(cw("cw-1"),
		&brokerv1.OpenCaseRequest{Journey: start.Journey, CitizenId: citizen})
	wantCode(t, err, codes.PermissionDenied)
	unchanged("an authority opening a case")

	// Counted by outcome, with the declared type or "unknown", never a citizen.
	for outcome, want := range map[string]float64{"opened": 1, "duplicate": 1} {
		if n, ok := scrape(t, ts.Metrics.Addr(), "aperture_life_events_total", `outcome="`+outcome+`"`, `type="`+ev.Type+`"`); !ok || n != want {
			t.Errorf("aperture_life_events_total{outcome=%q}: %v (found %v), want %v", outcome, n, ok, want)
		}
	}
	if n, ok := scrape(t, ts.Metrics.Addr(), "aperture_life_events_total", `outcome="refused"`, `type="unknown"`); !ok || n < 1 {
		t.Errorf("undeclared event type not counted as unknown: %v %v", n, ok)
	}

	// The citizen sees the case was started for them, with the journey's title, in both languages.
	ctx := portaltest.NewBrowser(t)
	base := ts.Portal.base
	portaltest.Do(t, ctx, "sign in", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name="citizen"]`)),
		chromedp.Click(chromedp.CSS(`input[value="`+citizen+`"]`)), chromedp.Click(chromedp.CSS(`button[value="signin"]`)),
		chromedp.WaitVisible(chromedp.CSS("#timeline")))
	for _, lang := range []struct{ code, title, notice string }{
		{"en", journey.Title.EN, "You have nothing to fill in."},
		{"da", journey.Title.DA, "Du skal ikke udfylde noget."},
	} {
		portaltest.Do(t, ctx, "case page "+lang.code, chromedp.Navigate(base+"/cases/"+opened.GetCaseId()+"?lang="+lang.code),
			chromedp.WaitVisible(chromedp.CSS(".notice--proactive")))
		txt := portaltest.Eval[string](t, ctx, `document.querySelector(".notice--proactive").innerText`)
		label := ev.Label.EN
		if lang.code == "da" {
			label = ev.Label.DA
		}
		for _, want := range []string{lang.title, lang.notice, label} {
			if !strings.Contains(txt, want) {
				t.Errorf("%s notice does not say %q:\n%s", lang.code, want, txt)
			}
		}
		if strings.Contains(txt, start.Journey) || strings.Contains(txt, ev.Type) || strings.Contains(txt, opened.GetCaseId()) {
			t.Errorf("%s notice shows an id:\n%s", lang.code, txt)
		}
		portaltest.Screenshot(t, ctx, "proactive-case-"+lang.code)
		portaltest.Do(t, ctx, "cases list "+lang.code, chromedp.Navigate(base+"/cases?lang="+lang.code), chromedp.WaitVisible(chromedp.CSS(".cards")))
		list := portaltest.Eval[string](t, ctx, `document.querySelector(".cards").innerText`)
		if !strings.Contains(list, lang.notice) {
			t.Errorf("%s case list does not mark the case as started for the citizen:\n%s", lang.code, list)
		}
	}
}
