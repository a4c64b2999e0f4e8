// Package portal is the citizen web portal of Aperture: a server-rendered site on top of the citizen
// gRPC API (aperture.citizen.v1) where a citizen sees who has looked at their data and why, follows
// their cases and the data path of every journey, previews, gives and withdraws consent, sees what the
// authorities hold about them, and questions an access.
//
// The portal holds no state of its own. Every page is one or a few calls of the citizen API, made
// with the signed-in citizen's OpenID Connect ID token as "authorization: Bearer <token>" metadata;
// sign-in itself is someone else's job (Config.Sessions, Config.LoginPath, Config.LogoutPath).
//
// Pages are rendered with html/template from embedded files; CSS and a small script (live timeline
// updates over Server-Sent Events, as progressive enhancement) are embedded static files, so the
// Content-Security-Policy needs no 'unsafe-inline'. Every page exists in English and Danish.
// Unsafe requests are protected against cross-site request forgery with
// http.CrossOriginProtection, and every form redirects after a successful POST.
//
// The portal never logs citizen data: log lines carry the route pattern and the gRPC code only.
package portal

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the portal shows Danish time wherever it runs

	"go.opentelemetry.io/otel/metric"

	"github.com/aperture-gov/aperture/broker/witness"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"google.golang.org/grpc/metadata"
)

//go:embed templates static
var files embed.FS

// Sessions tells the portal who is signed in.
type Sessions interface {
	// Session returns the signed-in citizen's OIDC ID token and display name, or ok=false.
	Session(r *http.Request) (token, name string, ok bool)
}

// Config configures the portal.
type Config struct {
	// Citizen is the citizen gRPC API; every call is made with outgoing metadata
	// "authorization: Bearer <token>".
	Citizen citizenv1.CitizenServiceClient
	// Corrections is the citizen's correction API (same metadata); nil: no correction pages.
	Corrections citizenv1.CitizenCorrectionServiceClient
	// Delegations is the citizen's power-of-attorney API (same metadata); nil: no power-of-attorney
	// pages, and no acting for someone else.
	Delegations citizenv1.CitizenDelegationServiceClient
	// Sessions finds the signed-in citizen of a request.
	Sessions Sessions
	// LoginPath is where a signed-out visitor is sent, with "?return=<path>" added; default "/login".
	LoginPath string
	// LogoutPath is the POST target of the sign-out button; default "/logout".
	LogoutPath string
	// DevBanner shows a visible "Development mode" marker on every page.
	DevBanner bool
	// Logger receives one line per failed API call (route and gRPC code, never citizen data);
	// default slog.Default().
	Logger *slog.Logger
	// Now is the clock, used for the period filter; default time.Now.
	Now func() time.Time
	// Location is the time zone dates are shown in; default Europe/Copenhagen.
	Location *time.Location
	// CatalogTTL is how long the journey catalogue (journeys, data paths and the authority datasets
	// they name — policy data, the same for every citizen) is kept between API reads; default one
	// minute. Negative disables caching.
	CatalogTTL time.Duration
	// Witnesses is the witness policy, with the log's checkpoint key (witness.Policy.WithLog): the
	// portal verifies every access proof itself with it. Nil: the proof page says it cannot check.
	Witnesses *witness.Policy
	// Reports are the published data-responsibility reports, shown to everyone at /report. Nil: the
	// page says that none is published.
	Reports Reports
	// Meter records the public report page's views and unreadable published reports; nil: none.
	Meter metric.MeterProvider
}

// Portal serves the citizen web portal.
type Portal struct {
	cfg    Config
	log    *slog.Logger
	pages  map[string]*pageTemplate
	static http.Handler
	csrf   *http.CrossOriginProtection

	reportMetrics reportMetrics

	catMu sync.Mutex
	cat   *catalog
	catAt time.Time

	labMu sync.Mutex
	lab   labelSet
	labAt time.Time
}

// New checks the configuration and parses the templates.
func New(cfg Config) (*Portal, error) {
	if cfg.Citizen == nil {
		return nil, errors.New("portal: Config.Citizen is required")
	}
	if cfg.Sessions == nil {
		return nil, errors.New("portal: Config.Sessions is required")
	}
	if cfg.LoginPath == "" {
		cfg.LoginPath = "/login"
	}
	if cfg.LogoutPath == "" {
		cfg.LogoutPath = "/logout"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Location == nil {
		loc, err := time.LoadLocation("Europe/Copenhagen")
		if err != nil {
			return nil, fmt.Errorf("portal: time zone: %w", err)
		}
		cfg.Location = loc
	}
	if cfg.CatalogTTL == 0 {
		cfg.CatalogTTL = time.Minute
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	staticFS, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	rm, err := newReportMetrics(cfg.Meter)
	if err != nil {
		return nil, err
	}
	return &Portal{
		cfg:           cfg,
		log:           cfg.Logger,
		pages:         pages,
		static:        http.StripPrefix("/static/", http.FileServerFS(staticFS)),
		csrf:          http.NewCrossOriginProtection(),
		reportMetrics: rm,
	}, nil
}

// Routes registers the portal pages under "/":
//
//	GET  /                                 who has seen my data (timeline; filters authority, journey, period; page)
//	GET  /events                           new accesses as Server-Sent Events (event "access", data = entry HTML)
//	GET  /cases, /cases/{id}               my cases, one case
//	GET  /journeys, /journeys/{id}         journeys, the data path of one journey
//	GET  /consents                         my consents and the steps that ask for consent
//	GET  /switches                         what I can switch off (and what the law requires), my switches
//	POST /switches                         switch one optional step (journey=, step=), a journey's optional steps
//	                                       (journey=), or all, off or on (off=1|0)
//	GET  /consents/{journey}/{step}        preview of a consent (?days=)
//	POST /consents/{journey}/{step}/grant  give consent (days)
//	POST /consents/{journey}/{step}/revoke withdraw consent
//	GET  /data, /data/{authority}/{dataset} what the authorities hold (a logged look at my own data)
//	GET  /questions, /questions/new?access= my questions, the form to question an access
//	POST /questions                        question an access (access, message)
//	GET  /accesses/{id}/proof              check one access in the public, witnessed log
//	GET  /corrections, /corrections/new    my requests to correct data, the form (see correctionRoutes)
//	POST /corrections                      ask an authority to correct a field
//	GET  /delegations                      powers of attorney I gave and hold (see delegationRoutes)
//	POST /delegations, /acting             give one, revoke one, act for someone or for myself again
//	GET  /report, /report/{id}             the public data-responsibility report (no sign-in; aggregates only)
//	GET  /static/…                         CSS, script, icon
//
// Every other path under "/" is answered with the portal's 404 page. The sign-in routes of the
// login package (LoginPath, LogoutPath, the OIDC callback) are more specific and win.
func (p *Portal) Routes(mux *http.ServeMux) {
	page := func(pattern string, h func(http.ResponseWriter, *http.Request, *view)) {
		mux.Handle(pattern, p.wrap(p.signedIn(h)))
	}
	// act is page for every page that knows whether the citizen acts for someone else (acting.go);
	// mine is act for a page that is only ever about the citizen themselves.
	act := func(pattern string, h func(http.ResponseWriter, *http.Request, *view)) {
		page(pattern, p.withActing(h))
	}
	mine := func(pattern string, h func(http.ResponseWriter, *http.Request, *view)) {
		act(pattern, p.ownOnly(h))
	}
	act("GET /{$}", p.needs(p.timeline, "accesses"))
	mux.Handle("GET /events", p.wrap(http.HandlerFunc(p.events)))
	act("GET /cases", p.needs(p.cases, "cases"))
	act("GET /cases/{id}", p.needs(p.caseDetail, "cases"))
	mine("GET /journeys", p.journeys)
	mine("GET /journeys/{id}", p.journey)
	act("GET /consents", p.needs(p.consents, "consents", "grant"))
	act("GET /consents/{journey}/{step}", p.needs(p.consentPreview, "grant"))
	act("POST /consents/{journey}/{step}/grant", p.needs(p.consentGrant, "grant"))
	act("POST /consents/{journey}/{step}/revoke", p.needs(p.consentRevoke, "revoke")) // a parent for a child; no power of attorney withdraws consent
	mine("GET /switches", p.switches)
	mine("POST /switches", p.setSwitch)
	mine("GET /data", p.myData)
	mine("GET /data/{authority}/{dataset}", p.myDataset)
	mine("GET /questions", p.questions)
	mine("GET /questions/new", p.questionForm)
	mine("POST /questions", p.questionAsk)
	mine("GET /accesses/{id}/proof", p.accessProof)
	p.correctionRoutes(mine)
	p.delegationRoutes(act)
	mux.Handle("GET /report", p.wrap(http.HandlerFunc(p.publicReport)))
	mux.Handle("GET /report/{id}", p.wrap(http.HandlerFunc(p.publicReport)))
	mux.Handle("GET /static/", p.wrap(p.staticFiles()))
	mux.Handle("/", p.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := p.newView(w, r)
		if _, name, ok := p.cfg.Sessions.Session(r); ok {
			v.Name, v.SignedIn = name, true
		}
		p.notFound(w, r, v)
	})))
}

// wrap adds the security headers and the cross-origin protection of every portal response.
func (p *Portal) wrap(h http.Handler) http.Handler {
	return p.csrf.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		h.ServeHTTP(w, r)
	}))
}

// securityHeaders are the headers of every page the portal renders.
func securityHeaders(hd http.Header) {
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

func (p *Portal) staticFiles() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		p.static.ServeHTTP(w, r)
	})
}

// signedIn sends a signed-out visitor to the login page and gives the handler the page's view.
func (p *Portal) signedIn(h func(http.ResponseWriter, *http.Request, *view)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, name, ok := p.cfg.Sessions.Session(r)
		if !ok || token == "" {
			p.toLogin(w, r)
			return
		}
		v := p.newView(w, r)
		v.Name, v.SignedIn = name, true
		v.token = token
		v.lab = p.labels(r, v)
		w.Header().Set("Cache-Control", "no-store")
		h(w, r, v)
	})
}

// toLogin redirects to the login page, asking it to come back to this page (for a POST: to the page
// the form was on).
func (p *Portal) toLogin(w http.ResponseWriter, r *http.Request) {
	back := r.URL.RequestURI()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		back = strings.TrimSuffix(strings.TrimSuffix(r.URL.Path, "/grant"), "/revoke")
	}
	if !strings.HasPrefix(back, "/") || strings.HasPrefix(back, "//") {
		back = "/"
	}
	http.Redirect(w, r, p.cfg.LoginPath+"?return="+url.QueryEscape(back), http.StatusSeeOther)
}

// ctx returns the request context with the citizen's token as outgoing metadata.
func (v *view) ctx(r *http.Request) context.Context {
	return metadata.AppendToOutgoingContext(r.Context(), "authorization", "Bearer "+v.token)
}

// redirect answers a successful POST.
func redirect(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, to, http.StatusSeeOther)
}
