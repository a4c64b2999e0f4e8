package portal

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/aperture-gov/aperture/broker/portal/portaltest"
	"github.com/aperture-gov/aperture/broker/report"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// testReports are two published years with made-up agencies and journeys (the page shows whatever a
// report names; nothing here is from the example catalog). The 2026 report has small counts that the
// public page must hide.
func testReports() []*report.Report {
	mk := func(year int, rows []report.Row, auths []report.AuthorityRow) *report.Report {
		return &report.Report{
			Format: report.Format,
			Period: report.Period{From: time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(year+1, 1, 1, 0, 0, 0, 0, time.UTC)},
			Checkpoint: report.Checkpoint{Origin: "example.test/log", TreeSize: 4242, RootHash: "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=",
				Note: "example.test/log\n4242\nq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n"},
			Figures:    report.Figures{Leaves: 4242, Rows: rows, Authorities: auths},
			NotCovered: report.NotCovered(),
			Labels: &report.Labels{
				Agencies:    map[string]report.Text{"ag-a": {EN: "Agency Alpha", DA: "Myndighed Alfa"}, "ag-b": {EN: "Agency Beta", DA: "Myndighed Beta"}},
				Journeys:    map[string]report.Text{"jr-1": {EN: "First matter", DA: "Første sag"}, "jr-2": {EN: "Second matter", DA: "Anden sag"}},
				Authorities: map[string]report.Text{"au-x": {EN: "Register X", DA: "Register X"}},
			},
		}
	}
	reps := []*report.Report{
		mk(2025, []report.Row{{Agency: "ag-a", Journey: "jr-1", Decisions: report.Decisions{Released: 40, Refused: 10}, RefusedBy: map[string]int64{"CASE_CLOSED": 10}}},
			[]report.AuthorityRow{{Authority: "au-x", Released: 40}}),
		mk(2026, []report.Row{
			{Agency: "ag-a", Journey: "jr-1", Decisions: report.Decisions{Released: 120, Refused: 9}, FieldsDisclosed: 360, FactsDisclosed: 120,
				RefusedBy: map[string]int64{"FIELD_NOT_RELEASED": 6, "CONSENT_EXPIRED": 3}, OverSharing: 7,
				ConsentsGranted: 40, ConsentsRevoked: 3, ConsentsExpired: 12, QuestionsAsked: 8, QuestionsAnswered: 7, MedianSecondsToAnswer: 3*24*3600 + 600},
			{Agency: "ag-b", Journey: "jr-2", Decisions: report.Decisions{Released: 3, Refused: 0}, FieldsDisclosed: 6, CovertRevealed: 2,
				ConsentsGranted: 2, QuestionsAnswered: 1, MedianSecondsToAnswer: 60},
		}, []report.AuthorityRow{{Authority: "au-x", Released: 123, OverSharing: 7}}),
	}
	reps[1].Figures.MedianSecondsToAnswer = 3 * 24 * 3600
	reps[1].Figures.Rows[0].CovertRevealedEarly = 6
	// The newer report is of the Danish year: its boundaries are Danish midnights (23:00 UTC the day
	// before), and the page shows its dates in its own zone, whatever the portal's.
	cph, err := time.LoadLocation("Europe/Copenhagen")
	if err != nil {
		panic(err)
	}
	reps[1].Period = report.Period{From: time.Date(2026, 1, 1, 0, 0, 0, 0, cph), To: time.Date(2027, 1, 1, 0, 0, 0, 0, cph), TimeZone: "Europe/Copenhagen"}
	return reps
}

type staticReports []*report.Report

func (s staticReports) Reports() ([]*report.Report, error) { return s, nil }

// newReportServer serves a portal whose only data is the published reports: the report page calls no
// citizen API (the client points at an address nobody listens on, and is never used).
func newReportServer(t *testing.T, reps Reports) *httptest.Server {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p, err := New(Config{Citizen: citizenv1.NewCitizenServiceClient(conn), Sessions: testSessions{}, Logger: slog.New(slog.DiscardHandler), Reports: reps})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReportPage: the page is public, shows the newest report, suppresses small counts (and one more
// where a single hidden count could be derived), names the checkpoint, and 404s an unknown period.
func TestReportPage(t *testing.T) {
	srv := newReportServer(t, staticReports(testReports()))
	code, body := get(t, srv.URL+"/report?lang=en")
	if code != http.StatusOK {
		t.Fatalf("GET /report: %d\n%s", code, body)
	}
	for _, want := range []string{
		"Data-responsibility report", "1 January 2026", "31 December 2026", "Agency Alpha", "Second matter",
		`<svg xmlns="http://www.w3.org/2000/svg" id="chart-decisions"`, `id="chart-reasons"`,
		"4242", "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=", "aperture report verify",
		"Asked for information the step does not allow", `href="/report/20250101-20260101"`,
		"because the rules lowered how long a consent may last", "Consents and questions", `id="report-consents"`,
		"Dates are in the time zone Europe/Copenhagen.", `data-figure="covert_revealed_early">6<`, "Hidden, shown early",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// Released 120 and 3: the 3 is hidden, and so is the 120 (else 123 − 120 gives it away)…
	rows := regexp.MustCompile(`(?s)<tbody>.*?</tbody>`).FindString(body)
	if !strings.Contains(rows, `First matter</td><td class="num">fewer than 5</td>`) || !strings.Contains(rows, `Second matter</td><td class="num">fewer than 5</td>`) {
		t.Errorf("small counts shown:\n%s", rows)
	}
	// …the refusal reasons 6 and 3: both hidden; the over-sharing 7 stays (nothing small beside it).
	reasons := regexp.MustCompile(`(?s)id="report-reasons".*?</table>`).FindString(body)
	if strings.Contains(reasons, ">3<") || strings.Contains(reasons, ">6<") {
		t.Errorf("refusal reasons: small count derivable:\n%s", reasons)
	}
	if !strings.Contains(body, `data-figure="over_sharing">7<`) || !strings.Contains(body, `data-figure="released">123<`) {
		t.Errorf("key figures missing")
	}
	// Consents and questions: 40 and 2 given, the 2 hidden and so the 40 (the total 42 stays); 3
	// withdrawn alone is hidden with its total; the time to answer shows over 8 answers, not over 1.
	consents := regexp.MustCompile(`(?s)id="report-consents".*?</table>`).FindString(body)
	for _, want := range []string{`data-figure="consents_granted">42<`, `data-figure="consents_revoked">fewer than 5<`, `data-figure="consents_expired">12<`,
		`data-figure="questions_asked">8<`, `data-figure="questions_answered">8<`, `data-figure="median_time_to_answer">3 days<`} {
		if !strings.Contains(body, want) {
			t.Errorf("key figures lack %s", want)
		}
	}
	if strings.Contains(consents, ">40<") || strings.Contains(consents, ">2<") || strings.Contains(consents, ">1<") ||
		!strings.Contains(consents, "too few answers to show") || !strings.Contains(consents, "Second matter") {
		t.Errorf("consents and questions: small counts or a time over one answer shown:\n%s", consents)
	}
	// Signed in, the page names the citizen: no shared cache may keep it.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/report", nil)
	req.AddCookie(&http.Cookie{Name: "aperture_session", Value: testToken})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("signed in: Cache-Control %q", cc)
	}
	if resp, err := http.Get(srv.URL + "/report"); err != nil || resp.Header.Get("Cache-Control") != "public, max-age=300" {
		t.Errorf("signed out: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, _ := get(t, srv.URL+"/report/20250101-20260101"); code != http.StatusOK {
		t.Errorf("an earlier year: %d", code)
	}
	// The Danish year is named by its Danish dates, not by the UTC dates of its midnights.
	if code, _ := get(t, srv.URL+"/report/20260101-20270101"); code != http.StatusOK {
		t.Errorf("the Danish year by its own dates: %d", code)
	}
	if code, _ := get(t, srv.URL+"/report/19990101-20000101"); code != http.StatusNotFound {
		t.Errorf("an unknown period: %d, want 404", code)
	}
	code, body = get(t, newReportServer(t, nil).URL+"/report?lang=da")
	if code != http.StatusOK || !strings.Contains(body, "Der er endnu ikke offentliggjort nogen rapport.") {
		t.Errorf("no report: %d\n%s", code, body)
	}
}

// TestReportDir: the portal reads the JSON files `aperture report --format json` writes; a file that
// is not a report is named in the error and left out.
func TestReportDir(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "2026.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := testReports()[1].WriteJSON(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"format":"x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	reps, err := report.Dir(dir).Reports()
	if len(reps) != 1 || err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Fatalf("Dir.Reports = %d reports, %v", len(reps), err)
	}
	code, body := get(t, newReportServer(t, report.Dir(dir)).URL+"/report?lang=en")
	if code != http.StatusOK || !strings.Contains(body, "Agency Alpha") {
		t.Fatalf("GET /report from a directory: %d", code)
	}
}

// TestReportBrowser opens the public report in a real headless Chromium with JavaScript switched
// off (the charts are server-rendered SVG), in English and Danish, signed out.
func TestReportBrowser(t *testing.T) {
	srv := newReportServer(t, staticReports(testReports()))
	ctx := portaltest.NewBrowser(t)
	portaltest.SetViewport(t, ctx, portaltest.Desktop)
	portaltest.Do(t, ctx, "switch JavaScript off", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	for _, tc := range []struct {
		lang, h1, fewer, period, reason, toAnswer string
	}{
		{"en", "Data-responsibility report", "fewer than 5", "From 1 January 2026 to 31 December 2026. Dates are in the time zone Europe/Copenhagen.", "The consent had run out", "3 days"},
		{"da", "Rapport om dataansvar", "færre end 5", "Fra 1. januar 2026 til 31. december 2026. Datoerne er i tidszonen Europe/Copenhagen.", "Samtykket var udløbet", "3 dage"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			portaltest.Do(t, ctx, "open the report", chromedp.Navigate(srv.URL+"/report?lang="+tc.lang), chromedp.WaitVisible(chromedp.CSS("#chart-decisions")))
			// Evaluate is the test driver's script (over CDP), not the page's: it runs with page scripts off.
			text := func(sel string) string {
				return portaltest.Eval[string](t, ctx, `(document.querySelector('`+sel+`') || {}).textContent || ""`)
			}
			h1, period, rows, reasons := text("h1"), text("#report-period"), text("#report-rows tbody"), text("#report-reasons")
			bars := portaltest.Eval[int](t, ctx, `document.querySelectorAll('#chart-decisions rect.chart-bar').length`)
			svgW := portaltest.Eval[int](t, ctx, `Math.round(document.querySelector('#chart-decisions').getBoundingClientRect().width)`)
			if h1 != tc.h1 || period != tc.period {
				t.Errorf("h1 %q, period %q", h1, period)
			}
			if !strings.Contains(rows, tc.fewer) || !strings.Contains(reasons, tc.reason) {
				t.Errorf("rows %q / reasons %q", rows, reasons)
			}
			if consents := text("#report-consents"); !strings.Contains(consents, tc.toAnswer) || !strings.Contains(consents, tc.fewer) {
				t.Errorf("consents and questions %q, want the time to answer %q and a hidden count", consents, tc.toAnswer)
			}
			// Two legend swatches, and bars only for the counts shown: Agency Alpha's 9 refusals (all
			// other row counts are hidden or zero).
			if bars != 3 {
				t.Errorf("%d bars in the decisions chart, want 3 (2 legend + 1 shown count)", bars)
			}
			if svgW < 600 {
				t.Errorf("chart is %d px wide", svgW)
			}
			if errs := portaltest.ConsoleErrors(ctx); len(errs) > 0 {
				t.Errorf("console errors: %v", errs)
			}
			portaltest.Screenshot(t, ctx, "report-"+tc.lang)
		})
	}
	portaltest.Do(t, ctx, "go to the earlier year", chromedp.Click(chromedp.CSS(`a[href="/report/20250101-20260101"]`)), chromedp.WaitVisible(chromedp.CSS("#report-period")))
	other := portaltest.Eval[string](t, ctx, `location.pathname + " " + document.querySelector('#report-period').textContent`)
	if !strings.Contains(other, "2025") {
		t.Errorf("earlier year: %q", other)
	}
	// On a phone the page does not scroll sideways: wide tables and charts scroll in their own box.
	portaltest.SetViewport(t, ctx, portaltest.Phone)
	portaltest.Do(t, ctx, "open the report on a phone", chromedp.Navigate(srv.URL+"/report?lang=da"), chromedp.WaitVisible(chromedp.CSS("#report-key")))
	if over := portaltest.Eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`); over {
		t.Errorf("the report page scrolls sideways on a phone: %v > %v",
			portaltest.Eval[float64](t, ctx, `document.documentElement.scrollWidth`), portaltest.Eval[float64](t, ctx, `window.innerWidth`))
	}
	portaltest.ScreenshotViewport(t, ctx, "report-phone")
}
