package portal

import (
	"fmt"
	"html/template"
	"strings"
)

// The data path diagram: three columns — the step and its agency, the authority datasets it gets data
// from, and what it sees of each (facts first, then fields) — one band per step. It is drawn on the
// server as inline SVG with a <title> and <desc>; the page repeats everything as a table.
const (
	svgWidth   = 960
	colStepX   = 8
	colStepW   = 270
	colSetX    = 340
	colSetW    = 260
	colItemX   = 660
	colItemW   = 292
	lineH      = 19
	padY       = 12
	headH      = 40
	stepGap    = 22
	releaseGap = 10
)

// wrap breaks s into lines of at most n characters, at spaces where it can.
func wrap(s string, n int) []string {
	var lines []string
	var cur []rune
	for _, word := range strings.Fields(s) {
		w := []rune(word)
		for len(w) > n { // a very long word: cut it
			if len(cur) > 0 {
				lines = append(lines, string(cur))
				cur = nil
			}
			lines = append(lines, string(w[:n]))
			w = w[n:]
		}
		switch {
		case len(cur) == 0:
			cur = w
		case len(cur)+1+len(w) <= n:
			cur = append(append(cur, ' '), w...)
		default:
			lines = append(lines, string(cur))
			cur = w
		}
	}
	if len(cur) > 0 {
		lines = append(lines, string(cur))
	}
	if len(lines) == 0 {
		lines = []string{""}
	}
	return lines
}

type svgText struct {
	class string
	text  string
}

type svgBuf struct {
	strings.Builder
}

func (b *svgBuf) f(format string, args ...any) { fmt.Fprintf(b, format, args...) }

func esc(s string) string { return template.HTMLEscapeString(s) }

// textBlock writes lines of text starting at (x, y) and returns the height used.
func (b *svgBuf) textBlock(x, y int, lines []svgText) {
	for i, l := range lines {
		b.f(`<text x="%d" y="%d" class="%s">%s</text>`, x, y+i*lineH, l.class, esc(l.text))
	}
}

func dataPathSVG(v *view, page *journeyPage) template.HTML {
	type row struct {
		set, items []svgText
		h          int
	}
	type band struct {
		step []svgText
		rows []row
		h    int
		ps   pathStep
	}
	var bands []band
	for _, s := range page.Steps {
		var b band
		b.ps = s
		b.step = append(b.step, svgText{"svg-step-n", v.T("step.n.title", s.Number)})
		for _, l := range wrap(s.Title, 30) {
			b.step = append(b.step, svgText{"svg-strong", l})
		}
		for _, l := range wrap(s.Agency, 34) {
			b.step = append(b.step, svgText{"svg-muted", l})
		}
		if s.ConsentRequired {
			b.step = append(b.step, svgText{"svg-note", v.T("svg.consent")})
		}
		if s.CovertReason != "" {
			for _, l := range wrap(v.T("svg.covert", s.CovertDays), 34) {
				b.step = append(b.step, svgText{"svg-note", l})
			}
		}
		for _, rel := range s.Releases {
			var r row
			for _, l := range wrap(rel.Authority, 30) {
				r.set = append(r.set, svgText{"svg-strong", l})
			}
			r.set = append(r.set, svgText{"svg-muted", rel.Dataset})
			for _, f := range rel.Facts {
				for i, l := range wrap(f, 34) {
					prefix := "   "
					if i == 0 {
						prefix = "✓ "
					}
					r.items = append(r.items, svgText{"svg-fact", prefix + l})
				}
			}
			for _, f := range rel.Fields {
				for i, l := range wrap(f, 34) {
					prefix := "   "
					if i == 0 {
						prefix = "• "
					}
					r.items = append(r.items, svgText{"svg-field", prefix + l})
				}
			}
			r.h = max(len(r.set), len(r.items))*lineH + 2*padY
			b.rows = append(b.rows, r)
		}
		if len(b.rows) == 0 {
			b.rows = append(b.rows, row{set: []svgText{{"svg-muted", v.T("svg.nodata")}}, h: lineH + 2*padY})
		}
		rowsH := -releaseGap
		for _, r := range b.rows {
			rowsH += r.h + releaseGap
		}
		b.h = max(rowsH, len(b.step)*lineH+2*padY)
		// Stretch the last row so the band's rows fill the step's height.
		if extra := b.h - rowsH; extra > 0 {
			b.rows[len(b.rows)-1].h += extra
		}
		bands = append(bands, b)
	}
	height := headH
	for _, b := range bands {
		height += b.h + stepGap
	}

	var s svgBuf
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" class="datapath" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-labelledby="dp-title dp-desc" focusable="false">`,
		svgWidth, height, svgWidth, height)
	s.f(`<title id="dp-title">%s</title>`, esc(v.T("svg.title", page.Title)))
	s.f(`<desc id="dp-desc">%s</desc>`, esc(v.T("svg.desc", len(page.Steps))))
	s.f(`<defs><marker id="dp-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="svg-arrowhead"/></marker></defs>`)
	s.f(`<text x="%d" y="24" class="svg-head">%s</text>`, colStepX, esc(v.T("svg.col.step")))
	s.f(`<text x="%d" y="24" class="svg-head">%s</text>`, colSetX, esc(v.T("svg.col.from")))
	s.f(`<text x="%d" y="24" class="svg-head">%s</text>`, colItemX, esc(v.T("svg.col.what")))
	y := headH
	for _, b := range bands {
		cls := "svg-box svg-stepbox"
		if b.ps.CovertReason != "" {
			cls += " svg-covert"
		}
		s.f(`<g class="svg-band">`)
		s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="%s"/>`, colStepX, y, colStepW, b.h, cls)
		s.textBlock(colStepX+14, y+padY+14, b.step)
		ry := y
		for _, r := range b.rows {
			s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="svg-box svg-setbox"/>`, colSetX, ry, colSetW, r.h)
			s.textBlock(colSetX+14, ry+padY+14, r.set)
			mid := ry + r.h/2
			// data flows from the authority to the step's agency
			s.f(`<path d="M%d,%d C%d,%d %d,%d %d,%d" class="svg-link" marker-end="url(#dp-arrow)"/>`,
				colSetX, mid, colSetX-30, mid, colStepX+colStepW+30, y+b.h/2, colStepX+colStepW+2, y+b.h/2)
			if len(r.items) > 0 {
				s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="svg-box svg-itembox"/>`, colItemX, ry, colItemW, r.h)
				s.textBlock(colItemX+12, ry+padY+14, r.items)
				s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" class="svg-link"/>`, colSetX+colSetW, mid, colItemX, mid)
			}
			ry += r.h + releaseGap
		}
		s.f(`</g>`)
		y += b.h + stepGap
	}
	s.f(`</svg>`)
	return template.HTML(s.String())
}
