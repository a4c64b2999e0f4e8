package portal

import (
	"cmp"
	"strings"
	"time"

	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
)

// Words says what the citizen API answers in the portal's words, as plain text, for a front end
// without HTML (the citizen CLI): a citizen reads the same sentences, labels and dates on the command
// line as in the browser, in English or Danish, and no field paths or ids.
type Words struct{ v *view }

// NewWords words in lang ("en" or "da"; anything else is English), with times in loc, now as the
// current time (for "kept from you until"), and the authorities' labels from the citizen API's
// ListDatasets (nil: words made from the field names).
func NewWords(lang string, loc *time.Location, now time.Time, datasets *citizenv1.ListDatasetsResponse) *Words {
	if lang != "da" {
		lang = "en"
	}
	return &Words{v: &view{Lang: lang, loc: loc, now: now, lab: labelSetOf(datasets)}}
}

// T is the portal's message key in the language, with args filled in.
func (w *Words) T(key string, args ...any) string { return w.v.T(key, args...) }

// Text is t in the language, falling back to the other.
func (w *Words) Text(t *citizenv1.Text) string { return w.v.Tx(t) }

// Party names an agency or authority.
func (w *Words) Party(p *citizenv1.Party) string { return w.v.Party(p) }

// Step names a step: "step 2: Check the employment requirement".
func (w *Words) Step(s *citizenv1.StepRef) string { return w.v.Step(s) }

// Day is a date: "12 March 2026" / "12. marts 2026"; When a date and time.
func (w *Words) Day(t time.Time) string  { return w.v.Day(t) }
func (w *Words) When(t time.Time) string { return w.v.When(t) }

// Access is one access as the timeline words it: a heading (when, and whether it was refused), who
// did what, the items and checks, the refusal's reason, and labelled lines for what it was for, why,
// under which law and where the data came from.
func (w *Words) Access(a *citizenv1.Access) []string {
	v := w.v
	it := v.accessItem(a)
	head := v.When(it.Time)
	if it.Refused {
		head += " — " + v.T("entry.refused.tag")
	}
	out := []string{head}
	switch {
	case it.Self && it.Refused:
		out = append(out, v.T("entry.self.refused"))
	case it.Self:
		out = append(out, v.T("entry.self.saw"))
	default:
		out = append(out, strings.TrimSpace(it.Who+" "+it.Did))
	}
	for _, s := range it.Items {
		out = append(out, "  • "+s)
	}
	if len(it.Checks) > 0 {
		if it.Refused {
			out = append(out, v.T("entry.also_asked_check"))
		} else {
			out = append(out, v.T("entry.also_checked"))
		}
		for _, s := range it.Checks {
			out = append(out, "  • "+s)
		}
	}
	if it.Refused {
		out = append(out, v.T("entry.refused")+" "+cmp.Or(it.Reason, v.T("entry.noreason")))
	}
	for _, l := range [][2]string{{"entry.for", it.For}, {"entry.why", it.Purpose}, {"entry.law", it.Law}, {"entry.source", it.Source}} {
		if l[1] != "" {
			out = append(out, v.T(l[0])+": "+l[1])
		}
	}
	if bg := it.BreakGlass; bg != nil {
		out = append(out, v.T("entry.breakglass")+": "+bg.Reason, v.T("entry.breakglass.justification")+": "+bg.Justification)
	}
	if !it.HiddenUntil.IsZero() {
		h := v.T("entry.hidden", v.Day(it.HiddenUntil))
		if it.HiddenEarly {
			h = v.T("entry.hidden.early")
		}
		if it.HiddenReason != "" {
			h += " " + v.T("entry.hidden.because") + " " + it.HiddenReason
		}
		out = append(out, h)
	}
	if len(it.Violations) > 0 {
		out = append(out, v.T("entry.violations")+" "+strings.Join(it.Violations, ", ")+".")
	}
	return out
}
