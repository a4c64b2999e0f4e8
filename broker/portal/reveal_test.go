package portal

import (
	"strings"
	"testing"
	"time"

	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// TestCovertRevealedEntry renders the early reveal of a covert step's checks the way the timeline and
// the live stream do, in both languages: the agency, the sentence the API gives (how many, and why now),
// the matter, and no data, no id, no "looked at your data".
func TestCovertRevealedEntry(t *testing.T) {
	s := newStack(t)
	a := &citizenv1.Access{Id: accID(60), Time: ts(testNow.Add(-time.Hour)), Kind: auditv1.AccessKind_ACCESS_KIND_COVERT_REVEALED,
		Agency: partyMunicipal, CaseId: caseID(1), Journey: journeySick, Step: stepEmployed, Decision: auditv1.Decision_DECISION_RELEASED,
		LegalBasis: "Retssikkerhedsloven § 11 a",
		Purpose: txt("The 2 checks made in your case without telling you are now shown to you, because the case was closed",
			"De 2 kontroller, der blev foretaget i din sag uden at du fik besked, vises nu for dig, fordi sagen blev lukket")}
	for _, tc := range []struct {
		lang string
		want []string
	}{
		{"en", []string{"Copenhagen Municipality (Jobcentre)", "now shows you what it checked without telling you:",
			"The 2 checks made in your case without telling you are now shown to you, because the case was closed", "Sickness benefit",
			`data-announce="New in your log: Copenhagen Municipality (Jobcentre) now shows you what it checked without telling you:`}},
		{"da", []string{"Københavns Kommune (Jobcenter)", "viser dig nu, hvad den tjekkede uden at give dig besked:",
			"De 2 kontroller, der blev foretaget i din sag uden at du fik besked, vises nu for dig, fordi sagen blev lukket", "Sygedagpenge"}},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			v := &view{Lang: tc.lang, loc: time.UTC, now: testNow}
			html, err := s.portal.renderPartial("entry", entryData{V: v, A: v.accessItem(a)})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(html, w) {
					t.Errorf("entry lacks %q:\n%s", w, html)
				}
			}
			for _, n := range []string{"Data from", "Data fra", "⟦", "the whole", "hele", "looked at your data", "så dine data", caseID(1), "COVERT"} {
				if strings.Contains(html, n) {
					t.Errorf("entry has %q:\n%s", n, html)
				}
			}
		})
	}
}
