package portal

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pageTemplate is one page: the layout, the partials and the page's own file.
type pageTemplate struct {
	t *template.Template
}

var funcs = template.FuncMap{
	"entry":           func(v *view, a accessItem) entryData { return entryData{V: v, A: a} },
	"node":            func(v *view, n recordNode) nodeData { return nodeData{V: v, N: n} },
	"humanField":      humanField,
	"add":             func(a, b int) int { return a + b },
	"delegationTerms": func(v *view, d delegationItem) delegationTermsData { return delegationTermsData{V: v, D: d} },
	"switchForm": func(v *view, journey, title string, s switchState) switchFormData {
		return switchFormData{V: v, Journey: journey, Title: title, S: s}
	},
	"stepSwitchForm": func(v *view, journey string, st switchStep) switchFormData {
		return switchFormData{V: v, Journey: journey, Step: st.ID, Title: st.Title, S: st.Switch}
	},
}

// parseTemplates parses every page in templates/pages with the layout and the partials.
func parseTemplates() (map[string]*pageTemplate, error) {
	names, err := fs.Glob(files, "templates/pages/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*pageTemplate{}
	for _, n := range names {
		t, err := template.New("").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/partials/*.html", n)
		if err != nil {
			return nil, fmt.Errorf("portal: templates: %w", err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/pages/"), ".html")
		pages[name] = &pageTemplate{t: t}
	}
	if _, ok := pages["error"]; !ok {
		return nil, errors.New("portal: templates: no error page")
	}
	return pages, nil
}

// render writes a whole page. It renders into a buffer first, so a template error becomes a clean
// 500 instead of half a page.
func (p *Portal) render(w http.ResponseWriter, r *http.Request, v *view, code int, page string) {
	pt, ok := p.pages[page]
	if !ok {
		p.log.Error("portal: no such page template", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := pt.t.ExecuteTemplate(&buf, "layout", v); err != nil {
		p.log.Error("portal: template failed", "page", page, "route", r.Pattern, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// renderPartial renders one named partial (e.g. a timeline entry) to a string.
func (p *Portal) renderPartial(name string, data any) (string, error) {
	var buf bytes.Buffer
	if err := p.pages["error"].t.ExecuteTemplate(&buf, name, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// errorPage is the data of the error page.
type errorPage struct {
	Heading string
	Body    string
	Detail  string // what the service said, when it is meant for the citizen
	Back    string // a link to go on from
	Again   string // where to sign in again, when that is the way on
	Self    string // while acting for someone: the page to open after acting for oneself again
}

// SigninError renders a failed or cancelled sign-in as a page in the citizen's language, with a way
// back: to sign in again where that helps, and to the start page. problem is the sign-in's own word
// for what happened (citizenauth.Problem): cancelled, expired, retry, unavailable, bad-return,
// sign-out.
func (p *Portal) SigninError(w http.ResponseWriter, r *http.Request, status int, problem string) {
	securityHeaders(w.Header()) // the login package's routes are not wrapped by the portal
	v := p.newView(w, r)
	key := "signin." + problem
	if _, ok := messages[key+".h"]; !ok {
		key = "signin.retry"
	}
	ep := errorPage{Heading: v.T(key + ".h"), Body: v.T(key + ".p"), Back: "/"}
	if problem != "unavailable" && problem != "sign-out" {
		ep.Again = p.cfg.LoginPath
	}
	v.Title, v.Data = ep.Heading, ep
	p.render(w, r, v, status, "error")
}

// fail answers a failed API call with a page that explains it in plain words, by gRPC code.
// Unauthenticated (the sign-in has expired) sends the citizen to sign in again.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, v *view, err error) {
	st := status.Convert(err)
	p.log.Warn("portal: citizen API call failed", "route", r.Pattern, "code", st.Code().String())
	ep := errorPage{Back: "/"}
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.Unauthenticated:
		p.toLogin(w, r)
		return
	case codes.NotFound:
		p.notFound(w, r, v)
		return
	case codes.InvalidArgument, codes.OutOfRange:
		code = http.StatusBadRequest
		ep.Heading, ep.Body = v.T("err.invalid.h"), v.T("err.invalid.p")
	case codes.PermissionDenied:
		code = http.StatusForbidden
		ep.Heading, ep.Body = v.T("err.denied.h"), v.T("err.denied.p")
	case codes.FailedPrecondition:
		code = http.StatusConflict
		ep.Heading, ep.Body = v.T("err.precondition.h"), v.T("err.precondition.p")
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Canceled:
		code = http.StatusServiceUnavailable
		ep.Heading, ep.Body = v.T("err.unavailable.h"), v.T("err.unavailable.p")
	default:
		ep.Heading, ep.Body = v.T("err.internal.h"), v.T("err.internal.p")
	}
	v.Title, v.Data = ep.Heading, ep
	p.render(w, r, v, code, "error")
}

func (p *Portal) notFound(w http.ResponseWriter, r *http.Request, v *view) {
	ep := errorPage{Heading: v.T("err.notfound.h"), Body: v.T("err.notfound.p"), Back: "/"}
	v.Title, v.Data = ep.Heading, ep
	p.render(w, r, v, http.StatusNotFound, "error")
}

// isCode reports whether err is a gRPC error with code c.
func isCode(err error, c codes.Code) bool {
	return status.Code(err) == c
}

// codeOf is the gRPC code of err, for log lines.
func codeOf(err error) string {
	return status.Code(err).String()
}
