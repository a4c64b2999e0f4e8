package portal

import (
	"strings"
	"testing"
	"time"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestConsentAndQuestionEntries renders a consent given and withdrawn, a question asked and its answer
// the way the timeline and the live stream do, in both languages: in plain words, with a date and no
// id, without data ("Data from") they do not hold, and with a link to where the citizen follows them
// instead of "ask about this".
func TestConsentAndQuestionEntries(t *testing.T) {
	s := newStack(t)
	purpose := txt("To get sickness benefit you must have worked enough.", "For at få sygedagpenge skal du have arbejdet nok.")
	granted := &citizenv1.Access{Id: accID(50), Time: ts(testNow.Add(-time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CONSENT_GRANTED,
		Agency: partyMunicipal, Journey: journeySick, Step: stepEmployed, Purpose: purpose, Decision: auditv1.Decision_DECISION_RELEASED,
		Consent: &auditv1.Consent{ExpiresAt: ts(time.Date(2027, 3, 3, 12, 0, 0, 0, time.UTC))}}
	revoked := &citizenv1.Access{Id: accID(51), Time: ts(testNow.Add(-time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_CONSENT_REVOKED,
		Agency: partyMunicipal, Journey: journeySick, Step: stepEmployed, Purpose: purpose, Decision: auditv1.Decision_DECISION_RELEASED,
		Consent: &auditv1.Consent{ExpiresAt: ts(time.Date(2027, 3, 3, 12, 0, 0, 0, time.UTC))}}
	asked := &citizenv1.Access{Id: accID(52), Time: ts(testNow.Add(-time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_QUESTION_ASKED,
		Agency: partyMunicipal, CaseId: caseID(1), Journey: journeySick, Step: stepEmployed, Decision: auditv1.Decision_DECISION_RELEASED,
		Purpose: txt("Your question about why the agency used your data", "Dit spørgsmål om, hvorfor myndigheden brugte dine data")}
	answered := &citizenv1.Access{Id: accID(53), Time: ts(testNow.Add(-time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_QUESTION_ANSWERED,
		Agency: partyMunicipal, Caseworker: "jc-207", CaseId: caseID(1), Journey: journeySick, Step: stepEmployed, Decision: auditv1.Decision_DECISION_RELEASED,
		Purpose: txt("To answer your question about why the agency used your data", "For at svare på dit spørgsmål om, hvorfor myndigheden brugte dine data")}
	noData := []string{"Data from", "Data fra", "/questions/new", "⟦", "the whole", "hele", "looked at your data", "så dine data"}
	for _, tc := range []struct {
		lang string
		a    *citizenv1.Access
		want []string
	}{
		{"en", granted, []string{"You", "gave Copenhagen Municipality (Jobcentre) consent to:", "step 2", "until 3 March 2027", "Sickness benefit", `href="/consents"`, "See your consents",
			`data-announce="New in your log: You gave Copenhagen Municipality (Jobcentre) consent to: step 2`}},
		{"da", granted, []string{"Du", "gav Københavns Kommune (Jobcenter) samtykke til:", "trin 2", "indtil 3. marts 2027", "Sygedagpenge", "Se dine samtykker"}},
		{"en", revoked, []string{"You", "withdrew the consent you gave Copenhagen Municipality (Jobcentre) to:", "step 2", `href="/consents"`}},
		{"da", revoked, []string{"Du", "trak det samtykke tilbage, du gav Københavns Kommune (Jobcenter) til:", "trin 2"}},
		{"en", asked, []string{"You", "asked Copenhagen Municipality (Jobcentre):", "why they used your data", `href="/questions"`, "See your questions and the answers"}},
		{"da", asked, []string{"Du", "spurgte Københavns Kommune (Jobcenter):", "hvorfor de brugte dine data", "Se dine spørgsmål og svarene",
			`data-announce="Nyt i din log: Du spurgte Københavns Kommune (Jobcenter): hvorfor de brugte dine data"`}},
		{"en", answered, []string{"Copenhagen Municipality (Jobcentre), caseworker jc-207", "answered your question:", "why they used your data", `href="/questions"`}},
		{"da", answered, []string{"Københavns Kommune (Jobcenter), sagsbehandler jc-207", "svarede på dit spørgsmål:", "hvorfor de brugte dine data"}},
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
			for _, n := range noData {
				if strings.Contains(html, n) {
					t.Errorf("entry has %q:\n%s", n, html)
				}
			}
		})
	}
}
