package portal

import (
	"strings"
	"testing"
	"time"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestReadEntries renders a case read and an auditor's read of the access log the way the timeline
// and the live stream do, in both languages: in plain words, without an authority ("Data from") they
// do not have, and with the question link only where there is an agency to answer it.
func TestReadEntries(t *testing.T) {
	s := newStack(t)
	dpo := &citizenv1.Party{Id: "dpo", Name: txt("Data Protection Officer", "Databeskyttelsesrådgiver")}
	caseRead := &citizenv1.Access{Id: accID(40), Time: ts(testNow.Add(-time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CASE_READ,
		Agency: partyMunicipal, Caseworker: "jc-207", CaseId: caseID(1), Journey: journeySick, Step: stepEmployed,
		Purpose:  txt("To get sickness benefit you must have worked enough.", "For at få sygedagpenge skal du have arbejdet nok."),
		Decision: auditv1.Decision_DECISION_RELEASED}
	auditorRead := &citizenv1.Access{Id: accID(41), Time: ts(testNow.Add(-2 * time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_AUDITOR_READ,
		Agency: dpo, Purpose: txt("Data Protection Officer looked at your access log", "Databeskyttelsesrådgiver så din adgangslog"),
		Decision: auditv1.Decision_DECISION_RELEASED}
	// A covert access shown before its date (the case closed): it was kept back, and is not still.
	revealed := &citizenv1.Access{Id: accID(42), Time: ts(testNow.Add(-3 * time.Hour)), Agency: partyMunicipal, Caseworker: "ctl-9",
		Authority: partyTaxIncome, Dataset: "income", Fields: []string{"monthly.amount"}, CaseId: caseID(1), Journey: journeySick, Step: stepFraud,
		HiddenUntil: ts(testNow.Add(80 * 24 * time.Hour)), HiddenReason: txt("Telling you early could harm an investigation.", "Det kan skade en undersøgelse at fortælle dig det tidligt."),
		Decision: auditv1.Decision_DECISION_RELEASED}
	for _, tc := range []struct {
		lang      string
		a         *citizenv1.Access
		want, not []string
	}{
		{"en", caseRead, []string{"Copenhagen Municipality (Jobcentre), caseworker jc-207", "looked at your case:", "your case “Sickness benefit”, which shows your CPR number",
			"Sickness benefit, step 2", "/questions/new?access=" + accID(40)}, []string{"Data from", "saw:", "⟦"}},
		{"da", caseRead, []string{"Københavns Kommune (Jobcenter), sagsbehandler jc-207", "så din sag:", "din sag “Sygedagpenge”, som viser dit CPR-nummer",
			"Spørg ind til opslaget"}, []string{"Data fra", "⟦"}},
		{"en", auditorRead, []string{"Data Protection Officer", "looked at your access log:", "the list of who has seen your data"},
			[]string{"Data from", "/questions/new", "⟦"}},
		{"da", auditorRead, []string{"Databeskyttelsesrådgiver", "så din adgangslog:", "listen over, hvem der har set dine data"},
			[]string{"Data fra", "/questions/new", "⟦"}},
		{"en", revealed, []string{"This was kept from you for a while", "because telling you early"}, []string{"Kept from you until", "June 2026"}},
		{"da", revealed, []string{"Dette blev holdt skjult for dig i en periode", "fordi det kan skade"}, []string{"Holdt skjult for dig indtil", "juni 2026"}},
	} {
		t.Run(tc.lang+"/"+tc.a.GetKind().String(), func(t *testing.T) {
			v := &view{Lang: tc.lang, loc: time.UTC, now: testNow}
			html, err := s.portal.renderPartial("entry", entryData{V: v, A: v.accessItem(tc.a)})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(html, w) {
					t.Errorf("entry lacks %q:\n%s", w, html)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(html, n) {
					t.Errorf("entry has %q:\n%s", n, html)
				}
			}
		})
	}
}
