package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// langCookie keeps the language a citizen chose with the switch.
const langCookie = "aperture_lang"

// view is what every page template gets: the chrome (language, who is signed in, navigation) and
// the page's own data. Its methods are the template's words: T translates a chrome string, Tx picks
// the language of a policy text, and the date methods write dates the Danish or English way.
type view struct {
	Lang       string // "en" or "da"
	Nav        string // the navigation item to mark as current
	Title      string // page title (already translated)
	SignedIn   bool
	Name       string
	Dev        bool
	LogoutPath string
	LangURL    string // this page in the other language
	Flash      string // confirmation after a POST (already translated)
	// ActingFor is the power of attorney the citizen acts with on this page ("" for themselves): the
	// page shows the other person's data, under a banner.
	ActingFor string
	// May is what that power of attorney covers, by scopeKeys' words ("accesses", "cases",
	// "consents", "grant"): the menu offers only those pages. ActingHome is the first of them.
	May        map[string]bool
	ActingHome string
	// Delegations: the power-of-attorney pages exist.
	Delegations bool
	Data        any

	token          string
	actingJourneys []string // the journeys the power of attorney names (none: all)
	lab            labelSet
	loc            *time.Location
	now            time.Time
	path           string
}

func (p *Portal) newView(w http.ResponseWriter, r *http.Request) *view {
	lang := pickLang(w, r)
	other := "da"
	if lang == "da" {
		other = "en"
	}
	q := r.URL.Query()
	q.Set("lang", other)
	if r.Method != http.MethodGet {
		q = url.Values{"lang": {other}}
	}
	return &view{
		Lang:        lang,
		Dev:         p.cfg.DevBanner,
		Delegations: p.cfg.Delegations != nil,
		LogoutPath:  p.cfg.LogoutPath,
		LangURL:     r.URL.Path + "?" + q.Encode(),
		loc:         p.cfg.Location,
		now:         p.cfg.Now(),
		path:        r.URL.Path,
	}
}

// pickLang chooses the page language: ?lang= (remembered in a cookie), then the cookie, then the
// browser's Accept-Language; English when nothing says Danish.
func pickLang(w http.ResponseWriter, r *http.Request) string {
	if l := r.URL.Query().Get("lang"); l == "en" || l == "da" {
		http.SetCookie(w, &http.Cookie{
			Name: langCookie, Value: l, Path: "/", MaxAge: 365 * 24 * 3600,
			HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
		})
		return l
	}
	if c, err := r.Cookie(langCookie); err == nil && (c.Value == "en" || c.Value == "da") {
		return c.Value
	}
	return acceptLanguage(r.Header.Get("Accept-Language"))
}

// acceptLanguage returns "da" or "en", whichever the header prefers (by q-value, then order).
func acceptLanguage(h string) string {
	best, bestQ := "en", -1.0
	for part := range strings.SplitSeq(h, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		var l string
		switch base {
		case "da", "nb", "nn", "no": // Scandinavian readers get Danish
			l = "da"
		case "en":
			l = "en"
		default:
			continue
		}
		if q > bestQ {
			best, bestQ = l, q
		}
	}
	return best
}

// T translates a chrome string; with arguments the translation is a fmt format.
func (v *view) T(key string, args ...any) string {
	m, ok := messages[key]
	if !ok {
		return "⟦" + key + "⟧"
	}
	s := m.en
	if v.Lang == "da" && m.da != "" {
		s = m.da
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// Tx picks the page language of a policy text, falling back to English.
func (v *view) Tx(t *citizenv1.Text) string {
	if t == nil {
		return ""
	}
	if v.Lang == "da" && t.GetDa() != "" {
		return t.GetDa()
	}
	if t.GetEn() != "" {
		return t.GetEn()
	}
	return t.GetDa()
}

// Party names an agency or authority; the id when it has no name.
func (v *view) Party(p *citizenv1.Party) string {
	if s := v.Tx(p.GetName()); s != "" {
		return s
	}
	return p.GetId()
}

// Step names a step as "step 2: Check the employment requirement".
func (v *view) Step(s *citizenv1.StepRef) string {
	title := v.Tx(s.GetTitle())
	if title == "" {
		title = s.GetId()
	}
	if s.GetNumber() > 0 {
		return v.T("step.n", s.GetNumber()) + ": " + title
	}
	return title
}

var monthNames = map[string][12]string{
	"en": {"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"},
	"da": {"januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september", "oktober", "november", "december"},
}

func (v *view) local(t time.Time) time.Time {
	if v.loc != nil {
		return t.In(v.loc)
	}
	return t
}

// Day writes a date: "12 March 2026" / "12. marts 2026".
func (v *view) Day(t time.Time) string {
	return v.DayIn(v.local(t))
}

// DayIn writes the date of t in t's own time zone (a report's period is in the zone the report
// states, whatever the portal's).
func (v *view) DayIn(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	m := monthNames[v.Lang][t.Month()-1]
	if v.Lang == "da" {
		return fmt.Sprintf("%d. %s %d", t.Day(), m, t.Year())
	}
	return fmt.Sprintf("%d %s %d", t.Day(), m, t.Year())
}

// When writes a date and time: "12 March 2026 at 10:14" / "12. marts 2026 kl. 10.14".
func (v *view) When(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	lt := v.local(t)
	if v.Lang == "da" {
		return fmt.Sprintf("%s kl. %02d.%02d", v.Day(t), lt.Hour(), lt.Minute())
	}
	return fmt.Sprintf("%s at %02d:%02d", v.Day(t), lt.Hour(), lt.Minute())
}

// ISO writes the machine-readable datetime attribute of <time>.
func (v *view) ISO(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return v.local(t).Format(time.RFC3339)
}

// TS converts a protobuf timestamp for the date methods; the zero time when unset.
func (v *view) TS(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// humanField turns a field path into words: "sick_notes.work_capacity_percent" →
// "sick notes › work capacity percent".
func humanField(path string) string {
	parts := strings.Split(path, ".")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(strings.ReplaceAll(p, "_", " "))
	}
	return strings.Join(parts, " › ")
}

// humanKey turns a record key into a label: "work_capacity_percent" → "Work capacity percent".
func humanKey(k string) string {
	return upperFirst(strings.TrimSpace(strings.ReplaceAll(k, "_", " ")))
}

func upperFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

// lowerFirst starts a sentence fragment in lower case ("Income was…" → "income was…"), unless the
// first word looks like a name or an abbreviation ("CPR", "GP").
func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	r2, _ := utf8.DecodeRuneInString(s[n:])
	if unicode.IsUpper(r2) {
		return s
	}
	return string(unicode.ToLower(r)) + s[n:]
}

// TA is T for words that change when the citizen acts for someone else: "acting."+key when they do
// and it exists ("Your consent" becomes "Their consent"), key otherwise.
func (v *view) TA(key string, args ...any) string {
	if _, ok := messages["acting."+key]; ok && v.ActingFor != "" {
		key = "acting." + key
	}
	return v.T(key, args...)
}
