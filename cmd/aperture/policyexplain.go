package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing/fstest"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
	"github.com/aperture-gov/aperture/services/kit/labels"
)

// explainedJourney is the data path of one journey: who sees what, why, and under which law.
type explainedJourney struct {
	ID          string          `json:"id"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	File        string          `json:"file"`
	Steps       []explainedStep `json:"steps"`
	// Optional is set when the citizen may switch the whole journey off: what that means.
	Optional   string                `json:"optional,omitempty"`
	BreakGlass []explainedBreakGlass `json:"break_glass,omitempty"`
}

// explainedBreakGlass is one emergency release rule: who, why, under which law, what, how often.
type explainedBreakGlass struct {
	Agency      string             `json:"agency"`
	Purpose     string             `json:"purpose"`
	LegalBasis  string             `json:"legal_basis"`
	Reasons     []string           `json:"reasons"`
	Releases    []explainedRelease `json:"releases"`
	Limit       int                `json:"max_per_caseworker"`
	WindowHours int                `json:"window_hours"`
}

type explainedStep struct {
	ID         string             `json:"id"`
	Title      string             `json:"title"`
	Agency     string             `json:"agency"`
	AgencyName string             `json:"agency_name"`
	Role       string             `json:"role"`
	Purpose    string             `json:"purpose"`
	LegalBasis string             `json:"legal_basis"`
	Consent    *explainedConsent  `json:"consent,omitempty"`
	Covert     *explainedCovert   `json:"covert,omitempty"`
	Releases   []explainedRelease `json:"releases"`
	// Optional is set when the citizen may switch the step off: what that means. A step without it
	// is mandatory, by its legal basis.
	Optional string `json:"optional,omitempty"`
}

type explainedConsent struct {
	DefaultDays int `json:"default_days"`
	MaxDays     int `json:"max_days"`
}

type explainedCovert struct {
	Reason  string `json:"reason"`
	MaxDays int    `json:"max_days"`
}

type explainedRelease struct {
	Dataset       string          `json:"dataset"` // authority.dataset
	AuthorityName string          `json:"authority_name"`
	Fields        []string        `json:"fields"`
	Derived       []explainedFact `json:"derived,omitempty"`
	// DatasetLabel and FieldLabels are what the citizen reads for the dataset and each field path
	// (by path), from the authority's proto labels; a missing language is empty.
	DatasetLabel explainedLabel            `json:"dataset_label"`
	FieldLabels  map[string]explainedLabel `json:"field_labels"`
}

// explainedLabel is a display name in the citizen's languages.
type explainedLabel struct {
	EN string `json:"en"`
	DA string `json:"da"`
}

func (l explainedLabel) String() string {
	en, da := l.EN, l.DA
	if en == "" {
		en = "NO ENGLISH LABEL"
	}
	if da == "" {
		da = "NO DANISH LABEL"
	}
	return "“" + en + "” / “" + da + "”"
}

// pathLabel is how the citizen reads a field path: the labels of its segments, record first
// ("Address › Town"); a language is empty when any segment lacks it.
func pathLabel(md protoreflect.MessageDescriptor, path string) explainedLabel {
	fds, err := labels.Fields(md, path)
	if err != nil {
		return explainedLabel{}
	}
	var en, da []string
	for _, fd := range fds {
		l := labels.Field(fd)
		en, da = append(en, l.GetEn()), append(da, l.GetDa())
	}
	join := func(parts []string) string {
		if slices.Contains(parts, "") {
			return ""
		}
		return strings.Join(parts, " › ")
	}
	return explainedLabel{EN: join(en), DA: join(da)}
}

// explainedFact is what a reviewer needs to judge a derived fact: what it means, how it is computed,
// what it can be, and what it reads at the authority.
type explainedFact struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Expression  string `json:"expression"`
	// Type is the declared type ("bool", "int 0..10", "enum {a, b}", "string", "record"), ResultType
	// the type CEL infers from the schema.
	Type       string `json:"type"`
	ResultType string `json:"result_type"`
	// Reads are the record's field paths the expression reads (computed from the checked expression).
	Reads []string `json:"reads"`
	// ValueReason is why a string or record fact is released as a value.
	ValueReason string `json:"value_reason,omitempty"`
	// CitizenSeesAnswer is whether the citizen is shown the answer ("checked whether …: yes"), not
	// only that the fact was checked: a bool fact whose policy does not say citizen_sees_answer: false.
	// HiddenAnswerReason is the policy's reason where a bool fact's answer is kept from them.
	CitizenSeesAnswer  bool   `json:"citizen_sees_answer"`
	HiddenAnswerReason string `json:"hidden_answer_reason,omitempty"`
}

func explainFact(d *policy.Derived) explainedFact {
	return explainedFact{Name: d.Name, Description: d.Description.EN, Expression: d.Expression, Type: d.Type.String(),
		ResultType: d.ResultType, Reads: append([]string{}, d.Reads...), ValueReason: d.Type.ValueReason.EN,
		CitizenSeesAnswer: d.ShowsAnswer(), HiddenAnswerReason: d.HiddenAnswerReason.EN}
}

// answerText is what the citizen is told of a fact in their access log, as a reviewer reads it.
func answerText(f explainedFact) string {
	switch {
	case f.CitizenSeesAnswer:
		return "the check and its answer (yes or no)"
	case f.Type != policy.FactBool:
		return "only that it was checked (only yes/no answers are shown)"
	case f.HiddenAnswerReason != "":
		return "only that it was checked; the answer is HIDDEN, because: " + f.HiddenAnswerReason
	default:
		return "only that it was checked; the answer is HIDDEN, with no reason given"
	}
}

// oneLineExpr folds an expression's whitespace, for a table cell or a diff line.
func oneLineExpr(e string) string { return strings.Join(strings.Fields(e), " ") }

func readsText(reads []string) string {
	if len(reads) == 0 {
		return "no field of the record"
	}
	return strings.Join(reads, ", ")
}

func explainJourney(b *policy.Bundle, j *policy.Journey) explainedJourney {
	out := explainedJourney{ID: j.ID, Title: j.Title.EN, Description: j.Description.EN, File: j.File, Steps: []explainedStep{}}
	for _, s := range j.Steps {
		es := explainedStep{ID: s.ID, Title: s.Title.EN, Agency: s.Agency, Role: s.Role, Purpose: s.Purpose.EN,
			LegalBasis: s.LegalBasis, Releases: []explainedRelease{}}
		if a, ok := b.Registry.Agency(s.Agency); ok {
			es.AgencyName = a.Name.EN
		}
		if s.Consent != nil {
			es.Consent = &explainedConsent{DefaultDays: s.Consent.DefaultDays, MaxDays: s.Consent.MaxDays}
		}
		if s.Covert != nil {
			es.Covert = &explainedCovert{Reason: s.Covert.Reason.EN, MaxDays: s.Covert.MaxDays}
		}
		if o := j.OptionalAt(s); o != nil {
			es.Optional = o.Why.EN
		}
		es.Releases = explainRules(b, s.Rules)
		out.Steps = append(out.Steps, es)
	}
	if j.Optional != nil {
		out.Optional = j.Optional.Why.EN
	}
	for _, bg := range j.BreakGlass {
		eb := explainedBreakGlass{Agency: bg.Agency, Purpose: bg.Purpose.EN, LegalBasis: bg.LegalBasis,
			Releases: explainRules(b, bg.Rules), Limit: bg.Limit, WindowHours: int(bg.Window.Hours())}
		for _, r := range bg.Reasons {
			eb.Reasons = append(eb.Reasons, r.Code+" ("+r.Title.EN+")")
		}
		out.BreakGlass = append(out.BreakGlass, eb)
	}
	return out
}

func explainRules(b *policy.Bundle, rules []*policy.Rule) []explainedRelease {
	out := []explainedRelease{}
	for _, r := range rules {
		er := explainedRelease{Dataset: r.Authority + "." + r.Dataset, Fields: append([]string{}, r.Fields...), FieldLabels: map[string]explainedLabel{}}
		if r.Message != nil {
			dl := labels.Message(r.Message)
			er.DatasetLabel = explainedLabel{EN: dl.GetEn(), DA: dl.GetDa()}
			for _, f := range r.Fields {
				er.FieldLabels[f] = pathLabel(r.Message, f)
			}
		}
		if a, ok := b.Registry.Authority(r.Authority); ok {
			er.AuthorityName = a.Name.EN
		}
		for _, d := range r.Derived {
			er.Derived = append(er.Derived, explainFact(d))
		}
		out = append(out, er)
	}
	return out
}

func writeExplainText(w io.Writer, j explainedJourney) {
	fmt.Fprintf(w, "%s — %s (%s)\n%s\n", j.ID, j.Title, j.File, wrap(j.Description, "", 100))
	for i, s := range j.Steps {
		fmt.Fprintf(w, "\n%d. %s — %s\n", i+1, s.ID, s.Title)
		fmt.Fprintf(w, "   agency       %s (%s), role %s\n", s.Agency, s.AgencyName, s.Role)
		fmt.Fprintf(w, "   purpose      %s\n", wrap(s.Purpose, "                ", 100))
		fmt.Fprintf(w, "   legal basis  %s\n", s.LegalBasis)
		fmt.Fprintf(w, "   consent      %s\n", consentText(s.Consent))
		if s.Optional != "" {
			fmt.Fprintf(w, "   optional     the citizen may switch it off: %s\n", wrap(s.Optional, "                ", 100))
		} else {
			fmt.Fprintf(w, "   optional     no: mandatory by its legal basis\n")
		}
		if s.Covert != nil {
			fmt.Fprintf(w, "   covert       accesses hidden from the citizen for up to %d days, then shown with:\n                %s\n", s.Covert.MaxDays, wrap(s.Covert.Reason, "                ", 100))
		}
		if len(s.Releases) == 0 {
			fmt.Fprintf(w, "   releases     nothing\n")
		}
		for k, r := range s.Releases {
			label := "releases    "
			if k > 0 {
				label = "            "
			}
			fmt.Fprintf(w, "   %s %s (%s), citizens read %s\n", label, r.Dataset, r.AuthorityName, r.DatasetLabel)
			for _, f := range r.Fields {
				fmt.Fprintf(w, "                  field %s  %s\n", f, r.FieldLabels[f])
			}
			for _, d := range r.Derived {
				const indent = "                        "
				fmt.Fprintf(w, "                  fact  %s: %s\n", d.Name, wrap(d.Description, indent, 100))
				fmt.Fprintf(w, "%stype     %s (the expression yields %s)\n", indent, d.Type, d.ResultType)
				fmt.Fprintf(w, "%scomputes %s\n", indent, wrap(oneLineExpr(d.Expression), indent+"         ", 100))
				fmt.Fprintf(w, "%sreads    %s\n", indent, wrap(readsText(d.Reads), indent+"         ", 100))
				if d.ValueReason != "" {
					fmt.Fprintf(w, "%sDISCLOSES A VALUE, because: %s\n", indent, wrap(d.ValueReason, indent+"  ", 100))
				}
				fmt.Fprintf(w, "%scitizen  sees %s\n", indent, wrap(answerText(d), indent+"         ", 100))
			}
		}
	}
	writeBreakGlassText(w, j)
}

// writeBreakGlassText lists the journey's emergency release rules after its steps.
func writeBreakGlassText(w io.Writer, j explainedJourney) {
	for _, bg := range j.BreakGlass {
		fmt.Fprintf(w, "\nBREAK-GLASS for %s: outside the current step, at most %d per caseworker in %d hours\n", bg.Agency, bg.Limit, bg.WindowHours)
		fmt.Fprintf(w, "   purpose      %s\n", wrap(bg.Purpose, "                ", 100))
		fmt.Fprintf(w, "   legal basis  %s\n", bg.LegalBasis)
		fmt.Fprintf(w, "   reasons      %s\n", strings.Join(bg.Reasons, "; "))
		for _, r := range bg.Releases {
			fmt.Fprintf(w, "   releases     %s (%s): %s\n", r.Dataset, r.AuthorityName, strings.Join(r.Fields, ", "))
			for _, d := range r.Derived {
				fmt.Fprintf(w, "                fact %s: %s\n", d.Name, d.Description)
			}
		}
	}
}

func writeExplainMarkdown(w io.Writer, j explainedJourney) {
	fmt.Fprintf(w, "# %s (`%s`)\n\n%s\n\nPolicy file: `%s`\n", j.Title, j.ID, j.Description, j.File)
	for i, s := range j.Steps {
		fmt.Fprintf(w, "\n## %d. %s (`%s`)\n\n", i+1, s.Title, s.ID)
		fmt.Fprintf(w, "| | |\n|---|---|\n| agency | `%s` %s (role `%s`) |\n| purpose | %s |\n| legal basis | %s |\n| consent | %s |\n\n",
			s.Agency, mdCell(s.AgencyName), s.Role, mdCell(s.Purpose), mdCell(s.LegalBasis), consentText(s.Consent))
		if s.Covert != nil {
			fmt.Fprintf(w, "Covert: accesses are hidden from the citizen for up to %d days, then shown with this reason: %s\n\n", s.Covert.MaxDays, mdCell(s.Covert.Reason))
		}
		if s.Optional != "" {
			fmt.Fprintf(w, "Optional: the citizen may switch it off. %s\n\n", mdCell(s.Optional))
		}
		if len(s.Releases) == 0 {
			fmt.Fprintf(w, "Releases nothing.\n")
			continue
		}
		fmt.Fprintf(w, "| authority dataset | released |\n|---|---|\n")
		for _, r := range s.Releases {
			var items []string
			for _, f := range r.Fields {
				items = append(items, "field `"+f+"` "+mdCell(r.FieldLabels[f].String()))
			}
			for _, d := range r.Derived {
				item := fmt.Sprintf("fact `%s` (%s): %s<br>computes `%s`<br>reads %s", d.Name, mdCell(d.Type), mdCell(d.Description),
					mdCell(oneLineExpr(d.Expression)), mdCell(readsText(d.Reads)))
				if d.ValueReason != "" {
					item += "<br>**discloses a value**, because: " + mdCell(d.ValueReason)
				}
				item += "<br>the citizen sees " + mdCell(answerText(d))
				items = append(items, item)
			}
			fmt.Fprintf(w, "| `%s` (%s)<br>%s | %s |\n", r.Dataset, mdCell(r.AuthorityName), mdCell(r.DatasetLabel.String()), strings.Join(items, "<br>"))
		}
	}
	for _, bg := range j.BreakGlass {
		fmt.Fprintf(w, "\n## Break-glass: `%s`\n\nOutside the current step, at most %d per caseworker in %d hours; flagged, shown to the citizen at once, reviewed by an auditor.\n\n", bg.Agency, bg.Limit, bg.WindowHours)
		fmt.Fprintf(w, "| | |\n|---|---|\n| purpose | %s |\n| legal basis | %s |\n| reasons | %s |\n", mdCell(bg.Purpose), mdCell(bg.LegalBasis), mdCell(strings.Join(bg.Reasons, "; ")))
		for _, r := range bg.Releases {
			fmt.Fprintf(w, "| `%s` | %s |\n", r.Dataset, mdCell(strings.Join(r.Fields, ", ")))
		}
	}
}

func mdCell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

func consentText(c *explainedConsent) string {
	if c == nil {
		return "not required"
	}
	return fmt.Sprintf("required (lasts %d days unless the citizen chooses, at most %d)", c.DefaultDays, c.MaxDays)
}

// wrap folds s into lines of at most width characters, indenting every line after the first.
func wrap(s, indent string, width int) string {
	var b strings.Builder
	n := len(indent)
	for i, word := range strings.Fields(s) {
		if i > 0 && n+1+len(word) > width {
			b.WriteString("\n" + indent)
			n = len(indent)
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// disclosure is one field or fact released to one agency at one step.
type disclosure struct {
	Journey string `json:"journey"`
	Step    string `json:"step"`
	Agency  string `json:"agency"`
	Dataset string `json:"dataset"`
	Field   string `json:"field,omitempty"`
	Fact    string `json:"fact,omitempty"`
	// Expression and Type are the fact's CEL expression and declared type: a fact whose expression or
	// type changes is listed as changed.
	Expression string `json:"expression,omitempty"`
	Type       string `json:"type,omitempty"`
	// CitizenSeesAnswer, for a fact, is whether the citizen is shown its answer, not only that it was
	// checked (policy.Derived.ShowsAnswer); HiddenAnswerReason is the policy's reason where not.
	CitizenSeesAnswer  *bool  `json:"citizen_sees_answer,omitempty"`
	HiddenAnswerReason string `json:"hidden_answer_reason,omitempty"`
}

// factChange is a fact that both sides release at the same step to the same agency, computed
// differently or with another type: the same name may now disclose something else.
type factChange struct {
	Journey string `json:"journey"`
	Step    string `json:"step"`
	Agency  string `json:"agency"`
	Dataset string `json:"dataset"`
	Fact    string `json:"fact"`
	OldType string `json:"old_type"`
	NewType string `json:"new_type"`
	// OldExpression and NewExpression are the CEL expressions, as written.
	OldExpression string `json:"old_expression"`
	NewExpression string `json:"new_expression"`
}

func (c factChange) String() string {
	return fmt.Sprintf("%s/%s → %s: %s fact %s changed\n    was: %s = %s\n    now: %s = %s", c.Journey, c.Step, c.Agency, c.Dataset, c.Fact,
		c.OldType, oneLineExpr(c.OldExpression), c.NewType, oneLineExpr(c.NewExpression))
}

func (d disclosure) String() string {
	what := "field " + d.Field
	if d.Fact != "" {
		what = "fact " + d.Fact + d.answerNote()
	}
	return fmt.Sprintf("%s/%s → %s: %s %s", d.Journey, d.Step, d.Agency, d.Dataset, what)
}

// answerNote marks a fact whose answer is kept from the citizen.
func (d disclosure) answerNote() string {
	if d.CitizenSeesAnswer == nil || *d.CitizenSeesAnswer {
		return ""
	}
	if d.HiddenAnswerReason == "" {
		return " (answer hidden from the citizen, no reason given)"
	}
	return " (answer hidden from the citizen: " + d.HiddenAnswerReason + ")"
}

// policyDiff is what a policy change newly discloses and what it withdraws. A field is new only if
// no field the same agency already received at that step covers it; consent that is no longer asked
// for is listed as well, since it releases data without the citizen's say.
type policyDiff struct {
	Disclosed []disclosure `json:"disclosed"`
	Withdrawn []disclosure `json:"withdrawn"`
	// Changed are facts with the same name whose expression or type changed.
	Changed []factChange `json:"changed"`
	Consent []string     `json:"consent_changes"`
	// Answers are facts released on both sides whose answer the citizen now sees, or no longer sees.
	Answers []string `json:"answer_changes"`
}

func disclosures(b *policy.Bundle) map[string][]disclosure {
	out := map[string][]disclosure{} // by journey/step/agency/dataset
	add := func(journey, step, agency string, rules []*policy.Rule) {
		for _, r := range rules {
			key := strings.Join([]string{journey, step, agency, r.Authority + "." + r.Dataset}, "\x00")
			base := disclosure{Journey: journey, Step: step, Agency: agency, Dataset: r.Authority + "." + r.Dataset}
			for _, f := range r.Fields {
				d := base
				d.Field = f
				out[key] = append(out[key], d)
			}
			for _, f := range r.Derived {
				d := base
				d.Fact, d.Expression, d.Type = f.Name, f.Expression, f.Type.String()
				shows := f.ShowsAnswer()
				d.CitizenSeesAnswer, d.HiddenAnswerReason = &shows, f.HiddenAnswerReason.EN
				out[key] = append(out[key], d)
			}
		}
	}
	for _, j := range b.Journeys() {
		for _, s := range j.Steps {
			add(j.ID, s.ID, s.Agency, s.Rules)
		}
		// A break-glass rule discloses too: a new one, or a new field in one, is a new disclosure.
		for _, bg := range j.BreakGlass {
			add(j.ID, policy.BreakGlassStep, bg.Agency, bg.Rules)
		}
	}
	return out
}

// only returns the disclosures of a that b does not make.
func only(a, b map[string][]disclosure) []disclosure {
	var out []disclosure
	for key, ds := range a {
		var fields []string
		for _, d := range b[key] {
			if d.Fact == "" {
				fields = append(fields, d.Field)
			}
		}
		for _, d := range ds {
			switch {
			case d.Fact == "" && fieldmask.Covers(fields, d.Field):
			case d.Fact != "" && sameFact(b[key], d) != nil:
			default:
				out = append(out, d)
			}
		}
	}
	sortDisclosures(out)
	return out
}

// sameFact returns the fact of ds with f's name, whatever its expression: a fact that changed is
// reported as changed, not as withdrawn and disclosed.
func sameFact(ds []disclosure, f disclosure) *disclosure {
	for i, d := range ds {
		if d.Fact != "" && d.Fact == f.Fact {
			return &ds[i]
		}
	}
	return nil
}

// changedFacts lists the facts of cur whose expression or type differs from old's fact of that name.
func changedFacts(old, cur map[string][]disclosure) []factChange {
	out := []factChange{}
	for key, ds := range cur {
		for _, d := range ds {
			if d.Fact == "" {
				continue
			}
			if o := sameFact(old[key], d); o != nil && (o.Expression != d.Expression || o.Type != d.Type) {
				out = append(out, factChange{Journey: d.Journey, Step: d.Step, Agency: d.Agency, Dataset: d.Dataset, Fact: d.Fact,
					OldType: o.Type, NewType: d.Type, OldExpression: o.Expression, NewExpression: d.Expression})
			}
		}
	}
	slices.SortFunc(out, func(a, b factChange) int {
		return cmp.Or(cmp.Compare(a.Journey, b.Journey), cmp.Compare(a.Step, b.Step), cmp.Compare(a.Agency, b.Agency),
			cmp.Compare(a.Dataset, b.Dataset), cmp.Compare(a.Fact, b.Fact))
	})
	return out
}

// answerChanges lists the facts of cur whose answer the citizen sees where old's fact of that name
// kept it from them, or the other way round.
func answerChanges(old, cur map[string][]disclosure) []string {
	out := []string{}
	for key, ds := range cur {
		for _, d := range ds {
			o := sameFact(old[key], d)
			if d.Fact == "" || o == nil || *o.CitizenSeesAnswer == *d.CitizenSeesAnswer {
				continue
			}
			at := fmt.Sprintf("%s/%s → %s: %s fact %s", d.Journey, d.Step, d.Agency, d.Dataset, d.Fact)
			if *d.CitizenSeesAnswer {
				out = append(out, at+": the citizen now sees its answer")
			} else {
				why := "no reason given"
				if d.HiddenAnswerReason != "" {
					why = "because: " + d.HiddenAnswerReason
				}
				out = append(out, at+": the citizen no longer sees its answer ("+why+")")
			}
		}
	}
	slices.Sort(out)
	return out
}

func sortDisclosures(ds []disclosure) {
	slices.SortFunc(ds, func(a, b disclosure) int {
		return cmp.Or(cmp.Compare(a.Journey, b.Journey), cmp.Compare(a.Step, b.Step), cmp.Compare(a.Agency, b.Agency),
			cmp.Compare(a.Dataset, b.Dataset), cmp.Compare(a.Fact, b.Fact), cmp.Compare(a.Field, b.Field))
	})
}

func diffPolicies(old, cur *policy.Bundle) policyDiff {
	o, n := disclosures(old), disclosures(cur)
	d := policyDiff{Disclosed: only(n, o), Withdrawn: only(o, n), Changed: changedFacts(o, n), Consent: []string{}, Answers: answerChanges(o, n)}
	if d.Disclosed == nil {
		d.Disclosed = []disclosure{}
	}
	if d.Withdrawn == nil {
		d.Withdrawn = []disclosure{}
	}
	for _, j := range cur.Journeys() {
		oj, ok := old.Journey(j.ID)
		if !ok {
			continue
		}
		for _, s := range j.Steps {
			os, _, ok := oj.Step(s.ID)
			if !ok {
				continue
			}
			switch {
			case os.Consent != nil && s.Consent == nil:
				d.Consent = append(d.Consent, fmt.Sprintf("%s/%s no longer asks for the citizen's consent", j.ID, s.ID))
			case os.Consent == nil && s.Consent != nil:
				d.Consent = append(d.Consent, fmt.Sprintf("%s/%s now asks for the citizen's consent", j.ID, s.ID))
			}
		}
	}
	return d
}

func writeDiff(w io.Writer, d policyDiff, format string) error {
	switch format {
	case "json":
		return writeJSON(w, d)
	case "markdown":
		fmt.Fprintf(w, "## Disclosure changes\n\n")
		if len(d.Disclosed)+len(d.Withdrawn)+len(d.Changed)+len(d.Consent)+len(d.Answers) == 0 {
			fmt.Fprintf(w, "None: the change discloses nothing new and withdraws nothing.\n")
			return nil
		}
		if len(d.Disclosed)+len(d.Withdrawn) > 0 {
			fmt.Fprintf(w, "| | journey/step | agency | dataset | field or fact |\n|---|---|---|---|---|\n")
			row := func(sign string, x disclosure) {
				what := "field `" + x.Field + "`"
				if x.Fact != "" {
					what = "fact `" + x.Fact + "`" + mdCell(x.answerNote())
				}
				fmt.Fprintf(w, "| %s | `%s/%s` | `%s` | `%s` | %s |\n", sign, x.Journey, x.Step, x.Agency, x.Dataset, what)
			}
			for _, x := range d.Disclosed {
				row("**newly disclosed**", x)
			}
			for _, x := range d.Withdrawn {
				row("withdrawn", x)
			}
		}
		if len(d.Changed) > 0 {
			fmt.Fprintf(w, "\n| | journey/step | agency | dataset | fact | was | now |\n|---|---|---|---|---|---|---|\n")
			for _, c := range d.Changed {
				fmt.Fprintf(w, "| **changed** | `%s/%s` | `%s` | `%s` | `%s` | %s: `%s` | %s: `%s` |\n", c.Journey, c.Step, c.Agency, c.Dataset, c.Fact,
					mdCell(c.OldType), mdCell(oneLineExpr(c.OldExpression)), mdCell(c.NewType), mdCell(oneLineExpr(c.NewExpression)))
			}
		}
		for _, c := range d.Consent {
			fmt.Fprintf(w, "\n- %s\n", c)
		}
		for _, c := range d.Answers {
			fmt.Fprintf(w, "\n- %s\n", mdCell(c))
		}
		return nil
	}
	if len(d.Disclosed)+len(d.Withdrawn)+len(d.Changed)+len(d.Consent)+len(d.Answers) == 0 {
		fmt.Fprintln(w, "no disclosure changes")
		return nil
	}
	for _, x := range d.Disclosed {
		fmt.Fprintf(w, "+ %s\n", x)
	}
	for _, x := range d.Withdrawn {
		fmt.Fprintf(w, "- %s\n", x)
	}
	for _, c := range d.Changed {
		fmt.Fprintf(w, "~ %s\n", c)
	}
	for _, c := range d.Consent {
		fmt.Fprintf(w, "! %s\n", c)
	}
	for _, c := range d.Answers {
		fmt.Fprintf(w, "! %s\n", c)
	}
	fmt.Fprintf(w, "%d newly disclosed, %d withdrawn", len(d.Disclosed), len(d.Withdrawn))
	if len(d.Changed) > 0 {
		fmt.Fprintf(w, ", %d changed", len(d.Changed))
	}
	fmt.Fprintln(w)
	return nil
}

func runPolicyExplain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy explain", flag.ContinueOnError)
	format := fs.String("format", "text", "output format: text, markdown or json")
	dir := fs.String("dir", "policies", "policy directory (with --diff: the registry used for single journey files)")
	diff := fs.Bool("diff", false, "compare two policy directories or journey files: OLD NEW")
	asJSON := fs.Bool("json", false, "print JSON for machines (the same as --format json)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		*format = "json"
	}
	if *format != "text" && *format != "markdown" && *format != "json" {
		return usagef("--format %q: want text, markdown or json", *format)
	}
	descs := newCatalogDescriptors()
	if *diff {
		if len(pos) != 2 {
			return usagef("usage: aperture policy explain --diff [--format F] [--dir DIR] OLD NEW")
		}
		old, err := loadPolicyArg(pos[0], *dir, descs)
		if err != nil {
			return err
		}
		cur, err := loadPolicyArg(pos[1], *dir, descs)
		if err != nil {
			return err
		}
		return writeDiff(stdout, diffPolicies(old, cur), *format)
	}
	if len(pos) != 1 {
		return usagef("usage: aperture policy explain [--format F] [--dir DIR] JOURNEY")
	}
	b, err := loadPolicyTree(os.DirFS(*dir), descs)
	if err != nil {
		return fmt.Errorf("load %s (run `aperture policy lint`):\n%w", *dir, err)
	}
	j, ok := b.Journey(pos[0])
	if !ok {
		var ids []string
		for _, j := range b.Journeys() {
			ids = append(ids, j.ID)
		}
		return fmt.Errorf("no journey %q in %s (journeys: %s)", pos[0], *dir, strings.Join(ids, ", "))
	}
	ej := explainJourney(b, j)
	switch *format {
	case "json":
		return writeJSON(stdout, ej)
	case "markdown":
		writeExplainMarkdown(stdout, ej)
	default:
		writeExplainText(stdout, ej)
	}
	return nil
}

// loadPolicyArg loads one side of a diff: a policy directory, or a single journey file (for instance
// the old version from `git show`) checked against the registry in regDir.
func loadPolicyArg(arg, regDir string, descs policy.Descriptors) (*policy.Bundle, error) {
	st, err := os.Stat(arg)
	if err != nil {
		return nil, err
	}
	var fsys fs.FS
	if st.IsDir() {
		fsys = os.DirFS(arg)
	} else {
		data, err := os.ReadFile(arg)
		if err != nil {
			return nil, err
		}
		reg, err := os.ReadFile(filepath.Join(regDir, registryFile))
		if err != nil {
			return nil, fmt.Errorf("a journey file is checked against a registry: %w", err)
		}
		// The loader wants journeys/<id>.yaml; a file from elsewhere keeps its id.
		var head struct {
			ID string `yaml:"id"`
		}
		_ = yaml.Unmarshal(data, &head) // a malformed file is reported by the load below
		name := head.ID
		if name == "" {
			name = strings.TrimSuffix(filepath.Base(arg), path.Ext(arg))
		}
		fsys = fstest.MapFS{
			registryFile:                 {Data: reg},
			"journeys/" + name + ".yaml": {Data: data},
		}
	}
	b, err := loadPolicyTree(fsys, descs)
	if err != nil {
		return nil, fmt.Errorf("load %s:\n%w", arg, err)
	}
	return b, nil
}
