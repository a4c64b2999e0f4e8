package policy

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"buf.build/go/protovalidate"
	"buf.build/go/protoyaml"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

// Finding is one problem in a policy file, at a position in it. Line and Column are 1-based; 0 means
// the position is unknown (e.g. the file could not be read at all).
type Finding struct {
	File         string
	Line, Column int
	Message      string
}

func (f Finding) String() string {
	if f.Line <= 0 {
		return f.File + ": " + f.Message
	}
	return fmt.Sprintf("%s:%d:%d: %s", f.File, f.Line, f.Column, f.Message)
}

// LoadError lists every finding of a policy load, one per line, sorted by file and position.
type LoadError struct {
	Findings []Finding
}

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		lines[i] = f.String()
	}
	return strings.Join(lines, "\n")
}

// findings collects the findings of one load.
type findings []Finding

func (fs *findings) err() error {
	if len(*fs) == 0 {
		return nil
	}
	out := slices.Clone(*fs)
	slices.SortStableFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	out = slices.Compact(out)
	return &LoadError{Findings: out}
}

// source is one decoded policy file with its YAML node tree, so that semantic findings can point at
// the element they concern.
type source struct {
	file
	root  *yaml.Node // the document's top node; nil when the file has none
	lines []string
	// schemaLines are the lines that already carry a schema finding; a semantic finding on the same
	// line would only repeat it in other words.
	schemaLines map[int]bool
	findings    *findings
}

// validator adapts protovalidate to protoyaml's single-argument interface.
type validator struct{ v protovalidate.Validator }

func (v validator) Validate(m proto.Message) error { return v.v.Validate(m) }

// yamlLineRE finds the line in go-yaml's syntax errors ("yaml: line 3: mapping values are not allowed").
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// isParserError reports whether a go-yaml message comes from its parser rather than its scanner.
func isParserError(msg string) bool {
	for _, p := range []string{
		"did not find expected node content", "did not find expected key", "did not find expected ','",
		"did not find expected '-' indicator", "did not find expected <document start>",
		"block sequence entries are not allowed", "found duplicate %YAML directive",
		"found incompatible YAML document", "found undefined tag handle", "found duplicate %TAG directive",
	} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// decode parses f into msg with the schema's validation rules. Schema findings are added to fs; the
// returned source is nil when the file could not be parsed as YAML at all.
func decode(f file, msg proto.Message, v protovalidate.Validator, fs *findings) *source {
	s := &source{file: f, schemaLines: map[int]bool{}, findings: fs}
	var doc yaml.Node
	if err := yaml.Unmarshal(f.data, &doc); err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			// go-yaml reports parser errors (unlike scanner errors) with a 0-based line: the line
			// before the construct that is not closed.
			if isParserError(m[2]) {
				line++
			}
			s.schemaAt(line, 1, "invalid YAML: "+m[2])
		} else {
			s.schemaAt(0, 0, "invalid YAML: "+strings.TrimPrefix(msg, "yaml: "))
		}
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		s.schemaAt(0, 0, "the file is empty")
		return nil
	}
	s.root = doc.Content[0]
	s.lines = strings.Split(string(f.data), "\n")
	if err := unmarshal(f, msg, v); err != nil {
		s.addDecodeErrors(err)
	}
	return s
}

// unmarshal runs protoyaml, turning a panic on hostile input into an error.
func unmarshal(f file, msg proto.Message, v protovalidate.Validator) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot decode the file (%v)", r)
		}
	}()
	return protoyaml.UnmarshalOptions{Path: f.name, Validator: validator{v}}.Unmarshal(f.data, msg)
}

// addDecodeErrors turns protoyaml's errors ("name:line:col message\n snippet…", joined) into findings.
func (s *source) addDecodeErrors(err error) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		first, _, _ := strings.Cut(e.Error(), "\n")
		rest, ok := strings.CutPrefix(first, s.name+":")
		if !ok {
			s.schemaAt(0, 0, first)
			continue
		}
		var line, col int
		pos, msg, _ := strings.Cut(rest, " ")
		if n, _ := fmt.Sscanf(pos, "%d:%d", &line, &col); n != 2 {
			s.schemaAt(0, 0, rest)
			continue
		}
		s.schemaAt(line, col, msg)
	}
}

func (s *source) schemaAt(line, col int, msg string) {
	s.schemaLines[line] = true
	*s.findings = append(*s.findings, Finding{File: s.name, Line: line, Column: col, Message: oneLine(msg)})
}

// at adds a semantic finding at the node the path leads to (see node).
func (s *source) at(path []any, format string, args ...any) {
	n := s.node(path...)
	s.atPos(n.Line, n.Column, fmt.Sprintf(format, args...))
}

func (s *source) atPos(line, col int, msg string) {
	if s.schemaLines[line] {
		return
	}
	*s.findings = append(*s.findings, Finding{File: s.name, Line: line, Column: col, Message: oneLine(msg)})
}

func oneLine(msg string) string {
	return strings.Join(strings.Fields(msg), " ")
}

// node returns the YAML node of an element of the file, given as map keys (proto field names) and
// sequence indexes, e.g. ("steps", 2, "releases", 0, "fields", 3). When the element is not in the
// file (a field left out), it returns the deepest node on the way, so a finding still points at the
// enclosing element.
func (s *source) node(path ...any) *yaml.Node {
	cur := s.root
	for _, p := range path {
		for cur.Kind == yaml.AliasNode && cur.Alias != nil {
			cur = cur.Alias
		}
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if cur.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(cur.Content); i += 2 {
					if k := cur.Content[i].Value; k == p || k == lowerCamel(p) {
						next = cur.Content[i+1]
					}
				}
			}
		case int:
			if cur.Kind == yaml.SequenceNode && p >= 0 && p < len(cur.Content) {
				next = cur.Content[p]
			}
		}
		if next == nil {
			return cur
		}
		cur = next
	}
	return cur
}

// lowerCamel is the JSON name protoyaml also accepts for a field ("legal_basis" → "legalBasis").
func lowerCamel(name string) string {
	var b strings.Builder
	up := false
	for _, r := range name {
		switch {
		case r == '_':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// celPosRE finds positions in CEL's messages: "ERROR: <input>:2:19: undefined field 'gross'".
var celPosRE = regexp.MustCompile(`<input>:(\d+):(\d+): (.*)`)

// celUndefinedRE finds the field name in CEL's "undefined field 'gros_dkk'".
var celUndefinedRE = regexp.MustCompile(`undefined field '([^']*)'`)

// celFindings reports a CEL compile error at the position it names inside the expression, translated
// to the file when the expression's text can be found there (plain, quoted or literal-block style).
// fields are the field names of the record's messages: a CEL "undefined field" gets a "did you mean".
func (s *source) celFindings(path []any, expr string, err error, prefix string, fields []string) {
	n := s.node(path...)
	found := false
	for line := range strings.SplitSeq(err.Error(), "\n") {
		m := celPosRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		found = true
		el, _ := strconv.Atoi(m[1])
		ec, _ := strconv.Atoi(m[2])
		if f := celUndefinedRE.FindStringSubmatch(m[3]); f != nil {
			m[3] += didYouMean(f[1], fields)
		}
		if fl, fc, ok := s.exprPos(n, expr, el, ec); ok {
			s.atPos(fl, fc, prefix+m[3])
		} else {
			s.atPos(n.Line, n.Column, fmt.Sprintf("%sexpression %d:%d: %s", prefix, el, ec, m[3]))
		}
	}
	if !found {
		s.atPos(n.Line, n.Column, prefix+strings.TrimPrefix(err.Error(), "compile derived fact: "))
	}
}

// exprPos maps line:col inside the expression held by scalar node n to a position in the file. It
// only answers when the expression's line is found verbatim where it is expected, so escapes and
// folding never produce a wrong position.
func (s *source) exprPos(n *yaml.Node, expr string, line, col int) (int, int, bool) {
	exprLines := strings.Split(expr, "\n")
	if line < 1 || line > len(exprLines) || col < 1 {
		return 0, 0, false
	}
	el := exprLines[line-1]
	type cand struct{ line, col int }
	var cands []cand
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		if n.Style&yaml.LiteralStyle != 0 && n.Line+line-1 < len(s.lines) {
			src := s.lines[n.Line+line-1]
			if el != "" && strings.HasSuffix(src, el) {
				cands = append(cands, cand{n.Line + line, len(src) - len(el) + 1})
			}
		}
	case line == 1:
		cands = append(cands, cand{n.Line, n.Column}, cand{n.Line, n.Column + 1})
	}
	for _, c := range cands {
		if c.line < 1 || c.line > len(s.lines) {
			continue
		}
		src := s.lines[c.line-1]
		if start := c.col - 1; start >= 0 && start+len(el) <= len(src) && src[start:start+len(el)] == el {
			return c.line, c.col + col - 1, true
		}
	}
	return 0, 0, false
}

// didYouMean is the " (did you mean …?)" suffix of a finding, or "" when no option is a likely typo of s.
func didYouMean(s string, options []string) string {
	if c := fieldmask.Closest(s, options); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}
