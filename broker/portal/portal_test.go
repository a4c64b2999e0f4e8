package portal

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type response struct {
	code   int
	header http.Header
	body   string
}

// do sends a request as the signed-in citizen (token "" = signed out), without following redirects.
func (s *stack) do(t *testing.T, method, path, token string, form url.Values, hdr map[string]string) response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, s.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: "aperture_session", Value: token})
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

func (s *stack) get(t *testing.T, path string, hdr map[string]string) response {
	return s.do(t, "GET", path, testToken, nil, hdr)
}

func (s *stack) post(t *testing.T, path string, form url.Values) response {
	return s.do(t, "POST", path, testToken, form, nil)
}

var htmlLang = regexp.MustCompile(`<html lang="([a-z]+)">`)

// checkPage checks what every HTML page must have.
func checkPage(t *testing.T, r response, lang string) {
	t.Helper()
	if got := htmlLang.FindStringSubmatch(r.body); got == nil || got[1] != lang {
		t.Errorf("html lang = %v, want %s", got, lang)
	}
	for _, bad := range []string{"⟦", "<no value>", "%!", "ZgotmplZ", testToken} {
		if strings.Contains(r.body, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for _, want := range []string{`<meta name="viewport"`, `class="skip-link" href="#main"`, `<main id="main"`, "Development mode", "Udviklingstilstand"} {
		if want == "Development mode" && lang == "da" || want == "Udviklingstilstand" && lang == "en" {
			continue
		}
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Every page speaks the citizen's words: no field path, dataset id, enum constant or ISO time.
	var datasets []string
	for _, d := range testLabels().GetDatasets() {
		datasets = append(datasets, d.GetDataset())
	}
	for _, leak := range portaltest.Leaks(portaltest.VisibleText(r.body), datasets...) {
		t.Errorf("page shows %s", leak)
	}
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Referrer-Policy") == "" {
		t.Errorf("security headers missing: %v", r.header)
	}
	if strings.Contains(r.body, "<script>") || strings.Contains(r.body, " style=") || strings.Contains(r.body, " onclick=") {
		t.Error("inline script or style: the CSP forbids it")
	}
}

func TestPagesRender(t *testing.T) {
	s := newStack(t)
	pages := []struct {
		path   string
		en, da []string
	}{
		{"/", []string{"Who has seen my data", "Danish Tax Agency, caseworker 4411", "saw:", "checked whether:", "your income was above the threshold in 6 of the last 12 months: no", "not the data behind it",
			"Sick notes › diagnosis", "asked for:", "and was refused:", "This step does not allow them to see sick notes › diagnosis, so nothing was shared.",
			"Sickness benefit, step 2: Check the employment requirement", "Sygedagpengeloven § 7", "Question this access", "/questions/new?access=" + accID(6),
			"Sick notes › how much you can work (percent)", "more than was asked for", "Doctor and sick notes, from Health data (general practice and sick notes)", `data-live="on"`, `href="/?page=p2"`},
			[]string{"Hvem har set mine data", "Skattestyrelsen, sagsbehandler 4411", "så:", "tjekkede, om:", "din indkomst var over grænsen i 6 af de sidste 12 måneder: nej", "og fik afslag:", "Dette trin giver ikke lov til at se lægeerklæringer › diagnose", "Lægeerklæringer › hvor meget du kan arbejde (procent)", "Sygedagpenge, trin 2: Tjek beskæftigelseskravet", "Spørg ind til opslaget"}},
		{"/?page=p2", []string{"You looked at:", "your whole Personal details record (2 items)", "Kept from you until 12 March 2026", "because telling you early could harm an investigation", "Back to the newest", `data-live="off"`},
			[]string{"Du så på:", "alle dine oplysninger: Personoplysninger (2 punkter)", "Holdt skjult for dig indtil 12. marts 2026", "fordi det kan skade"}},
		{"/cases", []string{"My cases", "Sickness benefit", "In progress", "2 of 4 steps done", "Now with", "Copenhagen Municipality (Jobcentre)", "Closed", `href="/cases?page=c2"`},
			[]string{"Mine sager", "Sygedagpenge", "I gang", "2 af 4 trin færdige", "Afsluttet"}},
		{"/cases/" + caseID(1), []string{"Who has your case now", "Step 3: Assess work capacity", "Being handled now", "Done", "To come", "Consent given", "/journeys/sickness-benefit"},
			[]string{"Hvem har din sag nu", "Behandles nu", "Færdig", "Kommer senere", "Samtykke givet"}},
		{"/journeys", []string{"Journeys and data paths", "Sickness benefit", "4 steps", "Moving house"}, []string{"Forløb og dataveje", "Sygedagpenge", "4 trin", "Flytning"}},
		{"/journeys/sickness-benefit", []string{"<svg", `<title id="dp-title">Data path of Sickness benefit</title>`, "<desc", "aria-labelledby=\"dp-title dp-desc\"",
			"Danish Tax Agency — income register", "Your income was above the threshold", "Sick notes › how much you can work (percent)", "Sygedagpengeloven § 32",
			"may be kept from you for up to 90 days", "telling you early could harm an investigation", "Needed. It lasts 90 days", "<table", `scope="col"`},
			[]string{"Datavej for Sygedagpenge", "Lægeerklæringer › hvor meget du kan arbejde (procent)", "Personoplysninger", "Skatteforvaltningen — indkomstregistret", "Din indkomst var over grænsen", "kan holdes skjult for dig i op til 90 dage", "Nødvendigt. Det gælder i 90 dage"}},
		{"/journeys/moving-house", []string{"You move to a new address."}, []string{"You move to a new address.", "Flytning"}},
		{"/consents", []string{"Your consents", "Given", "Withdrawn", "Withdraw consent", "Steps that ask for your consent", "/consents/sickness-benefit/assess-work-capacity"},
			[]string{"Dine samtykker", "Givet", "Trukket tilbage", "Træk samtykke tilbage"}},
		{"/consents/sickness-benefit/assess-work-capacity", []string{"What you would agree to", "Copenhagen Municipality (Jobcentre) may see", "Sick notes › how much you can work (percent)",
			"Valid until", "12 June 2026", "Usually 90 days. At most 180 days.", `name="days" value="90"`, `max="180"`, "Yes, I give my consent", "Withdrawn"},
			[]string{"Hvad du siger ja til", "må Københavns Kommune (Jobcenter) se", "12. juni 2026", "Normalt 90 dage. Højst 180 dage.", "Ja, jeg giver mit samtykke"}},
		{"/data", []string{"My data", "Civil Registration System (CPR)", "See your data: Personal details", "/data/population/person", "/data/health/patient", "/data/tax/income", "written down"},
			[]string{"Mine data", "Det Centrale Personregister (CPR)", "Se dine data: Personoplysninger"}},
		{"/data/population/person", []string{"What Civil Registration System (CPR) holds about you", "First names", "Karen Marie", "Municipality number", "0101", "Nørrebrogade 12, 2. th.", "1 August 2021", "Spouse", "Child", "Protected address", "No", "412,500", "written down as your own access", "/#" + accID(7)},
			[]string{"Hvad Det Centrale Personregister (CPR) har om dig", "Karen Marie", "Fornavne", "1. august 2021", "Ægtefælle", "Barn", "Beskyttet adresse", "Nej", "412.500", "skrevet ned som dit eget"}},
		{"/data/employment/history", []string{"holds no record about you"}, []string{"har ingen oplysninger om dig"}},
		{"/questions", []string{"My questions", "Waiting for an answer", "Answered", "We only received a yes/no", "Why did the jobcentre ask for my diagnosis?",
			"Answer from Danish Tax Agency", "Written by caseworker tax-cw-1.", "See the access you asked about", `href="/accesses/` + accID(6) + `/proof"`},
			[]string{"Mine spørgsmål", "Venter på svar", "Besvaret"}},
		{"/questions/new?access=" + accID(6), []string{"Question this access", `name="access" value="` + accID(6) + `"`, `<label for="message">`, "<textarea"},
			[]string{"Spørg ind til opslaget", "Dit spørgsmål"}},
	}
	for _, pg := range pages {
		for _, tc := range []struct {
			lang string
			hdr  map[string]string
			path string
			want []string
		}{
			{"en", map[string]string{"Accept-Language": "en-GB,en;q=0.9"}, pg.path, pg.en},
			{"da", map[string]string{"Accept-Language": "da-DK,da;q=0.9,en;q=0.5"}, pg.path, pg.da},
			{"da", nil, pg.path + sep(pg.path) + "lang=da", pg.da},
			{"en", map[string]string{"Cookie": langCookie + "=en", "Accept-Language": "da"}, pg.path, pg.en},
		} {
			t.Run(tc.lang+tc.path, func(t *testing.T) {
				r := s.get(t, tc.path, tc.hdr)
				if r.code != http.StatusOK {
					t.Fatalf("status %d\n%s", r.code, r.body)
				}
				checkPage(t, r, tc.lang)
				for _, w := range tc.want {
					if !strings.Contains(r.body, w) {
						t.Errorf("page lacks %q", w)
					}
				}
			})
		}
	}
}

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

func TestLanguageSwitchIsRemembered(t *testing.T) {
	s := newStack(t)
	r := s.get(t, "/cases?lang=da", nil)
	if !strings.Contains(r.header.Get("Set-Cookie"), langCookie+"=da") {
		t.Fatalf("Set-Cookie = %q", r.header.Get("Set-Cookie"))
	}
	if !strings.Contains(r.body, `href="/cases?lang=en"`) || !strings.Contains(r.body, `hreflang="en"`) {
		t.Error("no switch back to English")
	}
	r = s.get(t, "/cases", map[string]string{"Cookie": langCookie + "=da"})
	checkPage(t, r, "da")
}

func TestAcceptLanguage(t *testing.T) {
	for _, tc := range []struct{ h, want string }{
		{"", "en"}, {"da", "da"}, {"en-US,en;q=0.9", "en"}, {"fr-FR,da;q=0.8,en;q=0.5", "da"},
		{"en;q=0.9,da;q=0.95", "da"}, {"de", "en"}, {"nb-NO", "da"},
	} {
		if got := acceptLanguage(tc.h); got != tc.want {
			t.Errorf("acceptLanguage(%q) = %s, want %s", tc.h, got, tc.want)
		}
	}
}

func TestTimelineFiltersAndPaging(t *testing.T) {
	s := newStack(t)
	r := s.get(t, "/?authority=health&journey=sickness-benefit&period=30d&page=tok7", nil)
	if r.code != http.StatusOK {
		t.Fatalf("status %d", r.code)
	}
	c := s.fake.last("ListAccesses")
	req := c.req.(*citizenv1.ListAccessesRequest)
	if req.GetAuthority() != "health" || req.GetJourney() != "sickness-benefit" || req.GetPageToken() != "tok7" || req.GetPageSize() != timelinePageSize {
		t.Errorf("request = %v", req)
	}
	if got, want := req.GetSince().AsTime(), testNow.Add(-30*24*time.Hour); !got.Equal(want) {
		t.Errorf("since = %v, want %v", got, want)
	}
	if req.GetUntil() != nil {
		t.Error("until set")
	}
	if c.token != testToken {
		t.Errorf("token = %q", c.token)
	}
	for _, w := range []string{`<option value="health" selected>`, `<option value="sickness-benefit" selected>`, `<option value="30d" selected>`, "Clear filters", `data-live="off"`,
		`href="/?authority=health&amp;journey=sickness-benefit&amp;period=30d"`} {
		if !strings.Contains(r.body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	// The next page keeps the filters.
	r = s.get(t, "/?journey=moving-house", nil)
	if !strings.Contains(r.body, "Nothing matches these filters") {
		t.Error("no empty-filter message")
	}
	r = s.get(t, "/?period=7d", nil)
	if !strings.Contains(r.body, `href="/?page=p2&amp;period=7d"`) {
		t.Error("next page link does not keep the period")
	}
	// Only the authorities' looks: the API leaves out the citizen's own, the choice is kept.
	r = s.get(t, "/?who=others", nil)
	if req := s.fake.last("ListAccesses").req.(*citizenv1.ListAccessesRequest); !req.GetExcludeSelf() {
		t.Errorf("who=others: request = %v", req)
	}
	if !strings.Contains(r.body, `<option value="others" selected>`) || strings.Contains(r.body, "entry--self") || !strings.Contains(r.body, "Clear filters") {
		t.Error("who=others: the choice is not kept, or my own looks are listed")
	}
	if s.get(t, "/", nil); s.fake.last("ListAccesses").req.(*citizenv1.ListAccessesRequest).GetExcludeSelf() {
		t.Error("my own looks are left out without asking")
	}
	// A filter the API refuses is a form error, not a crash.
	s.fake.setFail("ListAccesses", status.Error(codes.InvalidArgument, "authority: bad pattern"))
	r = s.get(t, "/?authority=BAD", nil)
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, "We could not use these filters") {
		t.Errorf("status %d", r.code)
	}
}

func TestPostsCallTheAPI(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct {
		name, path string
		form       url.Values
		method     string
		want       proto.Message
		location   string
	}{
		{"grant", "/consents/sickness-benefit/assess-work-capacity/grant", url.Values{"days": {"30"}}, "GrantConsent",
			&citizenv1.GrantConsentRequest{Journey: "sickness-benefit", Step: "assess-work-capacity", Days: 30}, "/consents/sickness-benefit/assess-work-capacity?done=granted"},
		{"grant default", "/consents/sickness-benefit/assess-work-capacity/grant", url.Values{"days": {""}}, "GrantConsent",
			&citizenv1.GrantConsentRequest{Journey: "sickness-benefit", Step: "assess-work-capacity"}, "/consents/sickness-benefit/assess-work-capacity?done=granted"},
		{"revoke", "/consents/sickness-benefit/assess-work-capacity/revoke", url.Values{}, "RevokeConsent",
			&citizenv1.RevokeConsentRequest{Journey: "sickness-benefit", Step: "assess-work-capacity"}, "/consents/sickness-benefit/assess-work-capacity?done=revoked"},
		{"revoke from list", "/consents/sickness-benefit/assess-work-capacity/revoke", url.Values{"from": {"list"}}, "RevokeConsent",
			&citizenv1.RevokeConsentRequest{Journey: "sickness-benefit", Step: "assess-work-capacity"}, "/consents?done=revoked"},
		{"question", "/questions", url.Values{"access": {accID(6)}, "message": {"  Why did you need this?  "}}, "QuestionAccess",
			&citizenv1.QuestionAccessRequest{AccessId: accID(6), Message: "Why did you need this?"}, "/questions?done=asked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.post(t, tc.path, tc.form)
			if r.code != http.StatusSeeOther || r.header.Get("Location") != tc.location {
				t.Fatalf("status %d location %q\n%s", r.code, r.header.Get("Location"), r.body)
			}
			c := s.fake.last(tc.method)
			if c == nil {
				t.Fatal("API not called")
			}
			if !proto.Equal(c.req, tc.want) {
				t.Errorf("request = %v, want %v", c.req, tc.want)
			}
			if c.token != testToken {
				t.Errorf("token = %q", c.token)
			}
			// The page redirected to confirms.
			r = s.get(t, tc.location, nil)
			if r.code != http.StatusOK || !strings.Contains(r.body, `class="flash"`) {
				t.Errorf("no confirmation after redirect (status %d)", r.code)
			}
		})
	}
}

func TestFormErrors(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct {
		name, path string
		form       url.Values
		want       []string
		noCall     string
	}{
		{"days not a number", "/consents/sickness-benefit/assess-work-capacity/grant", url.Values{"days": {"thirty"}},
			[]string{"There is a problem", "whole number", `aria-invalid="true"`, `value="thirty"`}, "GrantConsent"},
		{"days above maximum", "/consents/sickness-benefit/assess-work-capacity/grant", url.Values{"days": {"365"}},
			[]string{"There is a problem", "The most you can choose is 180 days", `value="365"`, "At most 180 days"}, ""},
		{"far too many days", "/consents/sickness-benefit/assess-work-capacity/grant", url.Values{"days": {"99999999999"}},
			[]string{"There is a problem", "The most you can choose is 180 days", `value="99999999999"`}, ""},
		{"empty question", "/questions", url.Values{"access": {accID(6)}, "message": {"   "}},
			[]string{"There is a problem", "Write your question.", `aria-invalid="true"`}, "QuestionAccess"},
		{"long question", "/questions", url.Values{"access": {accID(6)}, "message": {strings.Repeat("ø", 2001)}},
			[]string{"too long"}, "QuestionAccess"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.post(t, tc.path, tc.form)
			if r.code != http.StatusBadRequest {
				t.Fatalf("status %d", r.code)
			}
			checkPage(t, r, "en")
			for _, w := range tc.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			if tc.noCall != "" && s.fake.count(tc.noCall) > 0 {
				t.Errorf("%s called for a bad form", tc.noCall)
			}
		})
	}
	// InvalidArgument from the API on the question form is a form error too.
	s.fake.setFail("QuestionAccess", status.Error(codes.InvalidArgument, "message: too long"))
	r := s.post(t, "/questions", url.Values{"access": {accID(6)}, "message": {"Why?"}})
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, "We could not send this question") || !strings.Contains(r.body, "Why?</textarea>") {
		t.Errorf("status %d", r.code)
	}
}

func TestCrossOriginPostRefused(t *testing.T) {
	s := newStack(t)
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
	} {
		for _, path := range []string{"/consents/sickness-benefit/assess-work-capacity/grant", "/consents/sickness-benefit/assess-work-capacity/revoke", "/questions"} {
			r := s.do(t, "POST", path, testToken, url.Values{"days": {"30"}, "access": {accID(6)}, "message": {"x"}}, hdr)
			if r.code != http.StatusForbidden {
				t.Errorf("%s with %v: status %d, want 403", path, hdr, r.code)
			}
		}
	}
	for _, m := range []string{"GrantConsent", "RevokeConsent", "QuestionAccess"} {
		if n := s.fake.count(m); n != 0 {
			t.Errorf("%s called %d times by cross-origin requests", m, n)
		}
	}
	// Same-origin (as a browser sends it) is fine.
	r := s.do(t, "POST", "/questions", testToken, url.Values{"access": {accID(6)}, "message": {"x"}}, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": s.srv.URL})
	if r.code != http.StatusSeeOther {
		t.Errorf("same-origin POST: status %d", r.code)
	}
}

func TestSignedOut(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/", "/login?return=%2F"},
		{"GET", "/cases/" + caseID(1), "/login?return=%2Fcases%2F" + caseID(1)},
		{"GET", "/?journey=moving-house", "/login?return=%2F%3Fjourney%3Dmoving-house"},
		{"POST", "/consents/sickness-benefit/assess-work-capacity/grant", "/login?return=%2Fconsents%2Fsickness-benefit%2Fassess-work-capacity"},
	} {
		r := s.do(t, tc.method, tc.path, "", url.Values{}, nil)
		if r.code != http.StatusSeeOther || r.header.Get("Location") != tc.want {
			t.Errorf("%s %s: %d %q, want 303 %q", tc.method, tc.path, r.code, r.header.Get("Location"), tc.want)
		}
	}
	if len(s.fake.calls) != 0 {
		t.Errorf("API called for a signed-out visitor: %d calls", len(s.fake.calls))
	}
	// Static files need no sign-in.
	r := s.do(t, "GET", "/static/portal.css", "", nil, nil)
	if r.code != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/css") {
		t.Errorf("portal.css: %d %s", r.code, r.header.Get("Content-Type"))
	}
	// The SSE endpoint answers 401 rather than redirecting a script.
	r = s.do(t, "GET", "/events", "", nil, nil)
	if r.code != http.StatusUnauthorized {
		t.Errorf("/events signed out: %d", r.code)
	}
}

func TestAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		err                error
		code               int
		want               string
	}{
		{"expired token", "", "/cases", nil, http.StatusSeeOther, ""},
		{"unauthenticated", "ListCases", "/cases", status.Error(codes.Unauthenticated, "expired"), http.StatusSeeOther, ""},
		{"unauthenticated on post", "GrantConsent", "/consents/sickness-benefit/assess-work-capacity/grant", status.Error(codes.Unauthenticated, "expired"), http.StatusSeeOther, ""},
		{"not found", "GetCase", "/cases/" + caseID(1), status.Error(codes.NotFound, "no such case"), http.StatusNotFound, "Page not found"},
		{"unknown case", "", "/cases/" + caseID(9), nil, http.StatusNotFound, "Page not found"},
		{"unknown journey", "", "/journeys/no-such", nil, http.StatusNotFound, "Page not found"},
		{"permission denied", "GetMyData", "/data/population/person", status.Error(codes.PermissionDenied, "self-access to this dataset is not allowed"), http.StatusForbidden, "You cannot do this"},
		{"failed precondition", "RevokeConsent", "/consents/sickness-benefit/assess-work-capacity/revoke", status.Error(codes.FailedPrecondition, "no consent to revoke"), http.StatusConflict, "This cannot be done right now"},
		{"unavailable", "ListConsents", "/consents", status.Error(codes.Unavailable, "log down"), http.StatusServiceUnavailable, "not available right now"},
		{"internal", "ListQuestions", "/questions", status.Error(codes.Internal, "boom"), http.StatusInternalServerError, "something went wrong"},
		{"unknown page", "", "/no/such/page", nil, http.StatusNotFound, "Page not found"},
		{"bad access id", "", "/questions/new?access=nope", nil, http.StatusNotFound, "Page not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t)
			if tc.method != "" {
				s.fake.setFail(tc.method, tc.err)
			}
			token := testToken
			if tc.name == "expired token" {
				token = "tok-someone-else"
			}
			method := "GET"
			var form url.Values
			if strings.HasSuffix(tc.path, "/grant") || strings.HasSuffix(tc.path, "/revoke") {
				method, form = "POST", url.Values{"days": {"30"}}
			}
			r := s.do(t, method, tc.path, token, form, nil)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d\n%s", r.code, tc.code, r.body)
			}
			if tc.code == http.StatusSeeOther {
				if loc := r.header.Get("Location"); !strings.HasPrefix(loc, "/login?return=") {
					t.Errorf("Location = %q", loc)
				}
				return
			}
			checkPage(t, r, "en")
			if !strings.Contains(r.body, tc.want) {
				t.Errorf("page lacks %q", tc.want)
			}
			if tc.err != nil && strings.Contains(r.body, status.Convert(tc.err).Message()) {
				t.Error("the service's own text (English, for developers) shown to the citizen")
			}
		})
	}
}

func TestEventsStreamsAnEntry(t *testing.T) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.srv.URL+"/events", nil)
	req.AddCookie(&http.Cookie{Name: "aperture_session", Value: testToken})
	req.Header.Set("Accept-Language", "da")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	select {
	case <-s.fake.watching:
	case <-ctx.Done():
		t.Fatal("WatchAccesses not called")
	}
	if c := s.fake.last("WatchAccesses"); c.token != testToken {
		t.Errorf("token = %q", c.token)
	}
	a := testAccesses()[0]
	a.Id = accID(99)
	s.fake.watch <- a
	sc := bufio.NewScanner(res.Body)
	var event, id string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" && event != "" {
			break
		}
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	html := strings.Join(data, "\n")
	if event != "access" || id != accID(99) {
		t.Errorf("event %q id %q", event, id)
	}
	for _, w := range []string{`<li class="entry" id="` + accID(99) + `"`, "Skattestyrelsen, sagsbehandler 4411", "din indkomst var over grænsen", "data-announce=\"Nyt opslag: Skattestyrelsen"} {
		if !strings.Contains(html, w) {
			t.Errorf("entry lacks %q:\n%s", w, html)
		}
	}
}

func TestTranslationsComplete(t *testing.T) {
	verbs := regexp.MustCompile(`%(\[\d\])?[sdv]`)
	for k, m := range messages {
		if m.en == "" || m.da == "" {
			t.Errorf("%s: missing a language", k)
		}
		if a, b := len(verbs.FindAllString(m.en, -1)), len(verbs.FindAllString(m.da, -1)); a != b {
			t.Errorf("%s: %d arguments in English, %d in Danish", k, a, b)
		}
	}
}

func TestHumanise(t *testing.T) {
	for in, want := range map[string]string{
		"sick_notes.work_capacity_percent": "sick notes › work capacity percent",
		"address":                          "address",
		"household.given_names":            "household › given names",
	} {
		if got := humanField(in); got != want {
			t.Errorf("humanField(%q) = %q", in, got)
		}
	}
	for in, want := range map[string]string{"Income was above": "income was above", "CPR number": "CPR number", "": ""} {
		if got := lowerFirst(in); got != want {
			t.Errorf("lowerFirst(%q) = %q", in, got)
		}
	}
	for _, tc := range []struct {
		s    string
		n    int
		want []string
	}{
		{"a b c", 3, []string{"a b", "c"}},
		{"abcdefgh", 3, []string{"abc", "def", "gh"}},
		{"", 5, []string{""}},
	} {
		if got := wrap(tc.s, tc.n); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("wrap(%q, %d) = %q", tc.s, tc.n, got)
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without a client succeeded")
	}
	if _, err := New(Config{Citizen: citizenv1.NewCitizenServiceClient(nil)}); err == nil {
		t.Error("New without sessions succeeded")
	}
}

// TestConsentPageAfterGrant: once consent is given, its page says until when and offers withdrawing it,
// not the grant form or the "what you would agree to" preview again; after withdrawing, it offers giving.
func TestConsentPageAfterGrant(t *testing.T) {
	s := newStack(t)
	const page = "/consents/sickness-benefit/assess-work-capacity"
	if r := s.post(t, page+"/grant", url.Values{"days": {"14"}}); r.code != http.StatusSeeOther {
		t.Fatalf("grant: status %d", r.code)
	}
	for _, tc := range []struct {
		lang       string
		want, lack []string
	}{
		{"en", []string{"Your consent", "Given until 10 June 2026", "You gave it on 12 March 2026.", "Withdraw consent", "What you agreed to share"},
			[]string{"What you would agree to", "Yes, I give my consent", "Valid until", `name="days"`}},
		{"da", []string{"Dit samtykke", "Givet indtil 10. juni 2026", "Træk samtykke tilbage"},
			[]string{"Hvad du siger ja til", "Ja, jeg giver mit samtykke", `name="days"`}},
	} {
		r := s.get(t, page+"?lang="+tc.lang, nil)
		if r.code != http.StatusOK {
			t.Fatalf("%s: status %d", tc.lang, r.code)
		}
		checkPage(t, r, tc.lang)
		for _, w := range tc.want {
			if !strings.Contains(r.body, w) {
				t.Errorf("%s: page lacks %q", tc.lang, w)
			}
		}
		for _, w := range tc.lack {
			if strings.Contains(r.body, w) {
				t.Errorf("%s: page has %q", tc.lang, w)
			}
		}
	}
	if r := s.post(t, page+"/revoke", url.Values{}); r.code != http.StatusSeeOther {
		t.Fatalf("revoke: status %d", r.code)
	}
	if r := s.get(t, page, nil); !strings.Contains(r.body, "Yes, I give my consent") || strings.Contains(r.body, "Given until") {
		t.Errorf("after withdrawing, the page does not offer giving consent again")
	}
}

// TestEveryRefusalReasonIsWorded: each machine-readable refusal reason the broker can give has a plain
// sentence in both languages, never the broker's English text or the code itself.
func TestEveryRefusalReasonIsWorded(t *testing.T) {
	for n := range auditv1.RefusalReason_name {
		why := auditv1.RefusalReason(n)
		a := &citizenv1.Access{Decision: auditv1.Decision_DECISION_REFUSED, RefusalReason: why, RefusalSubject: "address.postal_code", Reason: "broker text for caseworkers"}
		en := (&view{Lang: "en"}).refusal(a)
		da := (&view{Lang: "da"}).refusal(a)
		for _, s := range []string{en, da} {
			if s == "" || strings.Contains(s, "⟦") || strings.Contains(s, "REFUSAL") || strings.Contains(s, "_") || strings.Contains(s, "broker text") {
				t.Errorf("%v: %q", why, s)
			}
		}
		if en == da {
			t.Errorf("%v: the Danish sentence is the English one: %q", why, da)
		}
		// The public report names the same reasons as a short label.
		key := "report.reason." + strings.TrimPrefix(why.String(), "REFUSAL_REASON_")
		if _, ok := messages[key]; !ok {
			t.Errorf("%v: no report label %s", why, key)
		}
		if why != auditv1.RefusalReason_REFUSAL_REASON_UNSPECIFIED && en == (&view{Lang: "en"}).refusal(&citizenv1.Access{Decision: auditv1.Decision_DECISION_REFUSED}) {
			t.Errorf("%v has no sentence of its own: %q", why, en)
		}
	}
}

// TestSigninProblemPages: a cancelled or failed sign-in ends on a styled page in the citizen's language
// with a way back (sign in again where that helps, and the start page), never the login package's
// English plain text.
func TestSigninProblemPages(t *testing.T) {
	s := newStack(t)
	for _, tc := range []struct {
		problem, lang, want string
		again               bool
	}{
		{"cancelled", "en", "You did not sign in", true},
		{"cancelled", "da", "Du blev ikke logget ind", true},
		{"expired", "da", "Dit login tog for lang tid", true},
		{"retry", "en", "We could not finish your sign-in", true},
		{"unavailable", "da", "Login er ikke muligt lige nu", false},
		{"bad-return", "en", "That link does not lead to this site", true},
		{"something-new", "en", "We could not finish your sign-in", true},
	} {
		t.Run(tc.problem+"/"+tc.lang, func(t *testing.T) {
			r := s.do(t, "GET", "/signin-problem/"+tc.problem+"?lang="+tc.lang, "", nil, nil)
			if r.code != http.StatusBadRequest {
				t.Fatalf("status %d", r.code)
			}
			checkPage(t, r, tc.lang)
			if !strings.Contains(r.body, tc.want) || !strings.Contains(r.body, `href="/"`) {
				t.Errorf("page lacks %q or the way back to the start", tc.want)
			}
			if got := strings.Contains(r.body, `href="/login"`); got != tc.again {
				t.Errorf("offers signing in again: %v, want %v", got, tc.again)
			}
		})
	}
}
