package portaltest

import (
	"html"
	"regexp"
	"slices"
)

// What a citizen must never read on a page: words of the machine, not of people.
var leakPatterns = []struct {
	what string
	re   *regexp.Regexp
}{
	{"an ISO timestamp", regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}`)},
	{"an enum constant", regexp.MustCompile(`\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b`)},
	{"a field path or id with underscores", regexp.MustCompile(`\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b`)},
	{"a dotted field path", regexp.MustCompile(`\b[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\b`)},
	{"double parentheses", regexp.MustCompile(`\([^()]*\)\s*\(`)},
}

var (
	tags    = regexp.MustCompile(`(?s)<(script|style|pre)\b.*?</(script|style|pre)>|<[^>]*>`)
	spaces  = regexp.MustCompile(`\s+`)
	allowed = []string{"e.g", "i.e", "f.eks"}
)

// VisibleText is the text of an HTML page without tags, scripts and styles (attributes such as a
// <time datetime> are not text), for Leaks. Preformatted text (<pre>: a signed checkpoint under
// "Technical details") is machine text shown on purpose, and left out too.
func VisibleText(page string) string {
	return spaces.ReplaceAllString(html.UnescapeString(tags.ReplaceAllString(page, " ")), " ")
}

// Leaks returns each piece of text that names the machine instead of the citizen's world: an ISO
// timestamp, an enum constant, a field path, one of datasets (dataset ids, e.g. "person") in
// parentheses, double parentheses; with what it is.
func Leaks(text string, datasets ...string) []string {
	var out []string
	for _, id := range datasets {
		if re := regexp.MustCompile(`\(` + regexp.QuoteMeta(id) + `\)`); re.MatchString(text) {
			out = append(out, "a dataset id in parentheses: ("+id+")")
		}
	}
	for _, p := range leakPatterns {
		for _, m := range p.re.FindAllString(text, -1) {
			if slices.Contains(allowed, m) {
				continue
			}
			out = append(out, p.what+": "+m)
		}
	}
	return out
}
