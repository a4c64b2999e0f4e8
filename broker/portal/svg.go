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

// Average glyph widths of the diagram's 14 px text, rounded up so that wrapped lines fit their boxes
// in both languages (Danish words run long): bold, and regular.
const (
	glyphBold    = 8.4
	glyphRegular = 7.7
)

// fit is how many characters of text fit in px, bold or not.
func fit(px int, bold bool) int {
	if bold {
		return int(float64(px) / glyphBold)
	}
	return int(float64(px) / glyphRegular)
}

// svgBand is one step as lines of text: the step box, and a row per authority dataset.
type svgBand struct {
	ps   pathStep
	step []svgText
	rows []svgRow
}

type svgRow struct {
	set, items []svgText
}

// bandsOf words every step in lines that fit boxes whose text is stepW, setW and itemW wide.
func bandsOf(v *view, page *journeyPage, stepW, setW, itemW int) []svgBand {
	var bands []svgBand
	add := func(dst *[]svgText, class, text string, px int, bold bool) {
		for _, l := range wrap(text, fit(px, bold)) {
			*dst = append(*dst, svgText{class, l})
		}
	}
	for _, s := range page.Steps {
		b := svgBand{ps: s}
		add(&b.step, "svg-step-n", v.T("step.n.title", s.Number), stepW, true)
		add(&b.step, "svg-strong", s.Title, stepW, true)
		add(&b.step, "svg-muted", s.Agency, stepW, false)
		if s.ConsentRequired {
			add(&b.step, "svg-note", v.T("svg.consent"), stepW, true)
		}
		if s.CovertReason != "" {
			add(&b.step, "svg-note", v.T("svg.covert", s.CovertDays), stepW, true)
		}
		for _, rel := range s.Releases {
			var r svgRow
			add(&r.set, "svg-strong", rel.Authority, setW, true)
			add(&r.set, "svg-muted", rel.Dataset, setW, false)
			bullet := func(class, mark, text string, bold bool) {
				for i, l := range wrap(text, fit(itemW, bold)-2) {
					prefix := "   "
					if i == 0 {
						prefix = mark + " "
					}
					r.items = append(r.items, svgText{class, prefix + l})
				}
			}
			for _, f := range rel.Facts {
				bullet("svg-fact", "✓", f, true)
			}
			for _, f := range rel.Fields {
				bullet("svg-field", "•", f, false)
			}
			b.rows = append(b.rows, r)
		}
		if len(b.rows) == 0 {
			var r svgRow
			add(&r.set, "svg-muted", v.T("svg.nodata"), setW, false)
			b.rows = append(b.rows, r)
		}
		bands = append(bands, b)
	}
	return bands
}

// dataPathSVG draws the data path twice: three columns side by side for a wide screen, and the same
// stacked for a phone (CSS shows the one that fits), so that no text is clipped and the page never
// scrolls sideways.
func dataPathSVG(v *view, page *journeyPage) template.HTML {
	return wideSVG(v, page) + narrowSVG(v, page)
}

func svgOpen(s *svgBuf, v *view, page *journeyPage, class, id string, w, h int) {
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" class="datapath %s" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-labelledby="%[6]s-title %[6]s-desc" focusable="false">`,
		class, w, h, w, h, id)
	s.f(`<title id="%s-title">%s</title>`, id, esc(v.T("svg.title", page.Title)))
	s.f(`<desc id="%s-desc">%s</desc>`, id, esc(v.T("svg.desc", len(page.Steps))))
	s.f(`<defs><marker id="%s-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="svg-arrowhead"/></marker></defs>`, id)
}

func stepClass(b svgBand) string {
	if b.ps.CovertReason != "" {
		return "svg-box svg-stepbox svg-covert"
	}
	return "svg-box svg-stepbox"
}

func wideSVG(v *view, page *journeyPage) template.HTML {
	bands := bandsOf(v, page, colStepW-28, colSetW-28, colItemW-24)
	type sized struct {
		rowH []int
		h    int
	}
	sizes := make([]sized, len(bands))
	height := headH
	for i, b := range bands {
		rowsH := -releaseGap
		for _, r := range b.rows {
			h := max(len(r.set), len(r.items))*lineH + 2*padY
			sizes[i].rowH = append(sizes[i].rowH, h)
			rowsH += h + releaseGap
		}
		sizes[i].h = max(rowsH, len(b.step)*lineH+2*padY)
		// Stretch the last row so the band's rows fill the step's height.
		if extra := sizes[i].h - rowsH; extra > 0 {
			sizes[i].rowH[len(b.rows)-1] += extra
		}
		height += sizes[i].h + stepGap
	}
	const id = "dp"
	var s svgBuf
	svgOpen(&s, v, page, "datapath--wide", id, svgWidth, height)
	for _, col := range []struct {
		x   int
		w   int
		key string
	}{{colStepX, colStepW, "svg.col.step"}, {colSetX, colSetW, "svg.col.from"}, {colItemX, colItemW, "svg.col.what"}} {
		// The headings are capitals with letter spacing: wider than the text below them.
		for i, l := range wrap(v.T(col.key), int(float64(col.w)/10.5)) {
			s.f(`<text x="%d" y="%d" class="svg-head">%s</text>`, col.x, 18+i*16, esc(l))
		}
	}
	y := headH
	for i, b := range bands {
		h := sizes[i].h
		s.f(`<g class="svg-band">`)
		s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="%s"/>`, colStepX, y, colStepW, h, stepClass(b))
		s.textBlock(colStepX+14, y+padY+14, b.step)
		ry := y
		for j, r := range b.rows {
			rh := sizes[i].rowH[j]
			s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="svg-box svg-setbox"/>`, colSetX, ry, colSetW, rh)
			s.textBlock(colSetX+14, ry+padY+14, r.set)
			mid := ry + rh/2
			// data flows from the authority to the step's agency
			s.f(`<path d="M%d,%d C%d,%d %d,%d %d,%d" class="svg-link" marker-end="url(#%s-arrow)"/>`,
				colSetX, mid, colSetX-30, mid, colStepX+colStepW+30, y+h/2, colStepX+colStepW+2, y+h/2, id)
			if len(r.items) > 0 {
				s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="svg-box svg-itembox"/>`, colItemX, ry, colItemW, rh)
				s.textBlock(colItemX+12, ry+padY+14, r.items)
				s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" class="svg-link"/>`, colSetX+colSetW, mid, colItemX, mid)
			}
			ry += rh + releaseGap
		}
		s.f(`</g>`)
		y += h + stepGap
	}
	s.f(`</svg>`)
	return template.HTML(s.String())
}

// The stacked diagram for a phone: each step's box across the width, and below it, indented, a box
// per authority dataset with what the step sees of it; a line with an arrow carries the data up to
// the step.
const (
	narrowW      = 360
	narrowStepX  = 2
	narrowStepW  = 356
	narrowRelX   = 26
	narrowRelW   = 332
	narrowRelGap = 8
)

func narrowSVG(v *view, page *journeyPage) template.HTML {
	bands := bandsOf(v, page, narrowStepW-28, narrowRelW-28, narrowRelW-24)
	height := 8
	for _, b := range bands {
		height += len(b.step)*lineH + 2*padY + narrowRelGap
		for _, r := range b.rows {
			height += (len(r.set)+len(r.items))*lineH + 2*padY + narrowRelGap
			if len(r.items) > 0 {
				height += padY
			}
		}
		height += stepGap
	}
	const id = "dpn"
	var s svgBuf
	svgOpen(&s, v, page, "datapath--narrow", id, narrowW, height)
	y := 4
	for _, b := range bands {
		s.f(`<g class="svg-band">`)
		stepH := len(b.step)*lineH + 2*padY
		s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="%s"/>`, narrowStepX, y, narrowStepW, stepH, stepClass(b))
		s.textBlock(narrowStepX+14, y+padY+14, b.step)
		top := y + stepH
		y = top + narrowRelGap
		lastMid := top
		for _, r := range b.rows {
			h := (len(r.set)+len(r.items))*lineH + 2*padY
			if len(r.items) > 0 {
				h += padY
			}
			s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" class="svg-box svg-setbox"/>`, narrowRelX, y, narrowRelW, h)
			s.textBlock(narrowRelX+14, y+padY+14, r.set)
			if len(r.items) > 0 {
				iy := y + padY + len(r.set)*lineH + padY/2
				s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" class="svg-rule"/>`, narrowRelX+8, iy, narrowRelX+narrowRelW-8, iy)
				s.textBlock(narrowRelX+12, iy+padY/2+14, r.items)
			}
			mid := y + padY + lineH/2
			s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" class="svg-link"/>`, narrowRelX, mid, 14, mid)
			lastMid = mid
			y += h + narrowRelGap
		}
		// data flows up from the authorities to the step's agency
		s.f(`<path d="M14,%d L14,%d" class="svg-link" marker-end="url(#%s-arrow)"/>`, lastMid, top+1, id)
		s.f(`</g>`)
		y += stepGap - narrowRelGap
	}
	s.f(`</svg>`)
	return template.HTML(s.String())
}
