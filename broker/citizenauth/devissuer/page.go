package devissuer

import (
	"bytes"
	"html/template"
	"net/http"
	"net/url"
)

// Banner is the warning every development login page shows.
const Banner = "DEVELOPMENT LOGIN — not for real citizens"

// The page uses native form controls only (fieldset, legend, labelled radio buttons, buttons), so it
// works with the keyboard and screen readers without script. Colours meet WCAG AA contrast: the
// banner is near-black on yellow, buttons white on dark green or near-black on light grey.
var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{if .Error}}Error — {{end}}Development login — Aperture</title>
<style>
  body { margin: 0; font-family: system-ui, sans-serif; font-size: 1.1875rem; line-height: 1.5; color: #0b0c0c; background: #ffffff; }
  .banner { background: #ffdd00; color: #0b0c0c; border-bottom: 8px solid #0b0c0c; padding: 1.25rem 1rem; text-align: center; }
  .banner strong { display: block; font-size: 2rem; line-height: 1.2; letter-spacing: 0.02em; }
  .banner p { margin: 0.5rem 0 0; }
  main { max-width: 40rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
  h1 { font-size: 1.75rem; margin: 0 0 1rem; }
  fieldset { border: 0; padding: 0; margin: 0 0 1.5rem; }
  legend { font-weight: 700; margin-bottom: 0.75rem; }
  .choice { display: flex; gap: 0.75rem; align-items: flex-start; padding: 0.75rem; border: 2px solid #505a5f; margin-bottom: 0.75rem; }
  .choice input { width: 1.5rem; height: 1.5rem; margin: 0.15rem 0 0; flex: none; }
  .choice label { cursor: pointer; flex: 1; }
  .id { font-family: ui-monospace, monospace; }
  .note { display: block; color: #383f43; }
  .actions { display: flex; gap: 1rem; flex-wrap: wrap; }
  button { font: inherit; font-weight: 700; padding: 0.6rem 1.25rem; border: 2px solid #0b0c0c; cursor: pointer; }
  .primary { background: #00703c; color: #ffffff; border-color: #002d18; }
  .secondary { background: #f3f2f1; color: #0b0c0c; }
  :focus-visible { outline: 4px solid #0b0c0c; outline-offset: 2px; box-shadow: 0 0 0 8px #ffdd00; }
  .error { border-left: 8px solid #d4351c; padding: 0.5rem 1rem; background: #fdf2f0; }
  .small { font-size: 1rem; color: #383f43; }
</style>
</head>
<body>
<div class="banner" role="note" aria-label="Warning">
  <strong>{{.Banner}}</strong>
  <p>This sign-in page exists only on a developer's machine. Anyone can sign in here as any demo citizen.</p>
</div>
<main>
{{if .Error}}
  <h1>The sign-in request was refused</h1>
  <div class="error" role="alert"><p>{{.Error}}</p></div>
  <p>Start again from the portal's sign-in link.</p>
{{else}}
  <h1>Sign in as a demo citizen</h1>
  <form method="post" action="{{.Action}}">
    <input type="hidden" name="response_type" value="code">
    <input type="hidden" name="client_id" value="{{.Req.ClientID}}">
    <input type="hidden" name="redirect_uri" value="{{.Req.RedirectURI}}">
    <input type="hidden" name="scope" value="{{.Req.Scope}}">
    <input type="hidden" name="state" value="{{.Req.State}}">
    <input type="hidden" name="nonce" value="{{.Req.Nonce}}">
    <input type="hidden" name="code_challenge" value="{{.Req.Challenge}}">
    <input type="hidden" name="code_challenge_method" value="S256">
    <fieldset>
      <legend>Which demo citizen do you want to be?</legend>
      {{range $n, $c := .Citizens}}
      <div class="choice">
        <input type="radio" id="citizen-{{$n}}" name="citizen" value="{{$c.ID}}"{{if eq $n 0}} checked{{end}}{{if $c.Note}} aria-describedby="note-{{$n}}"{{end}}>
        <label for="citizen-{{$n}}"><strong>{{$c.Name}}</strong> <span class="id">{{$c.ID}}</span>
          {{if $c.Note}}<span class="note" id="note-{{$n}}">{{$c.Note}}</span>{{end}}</label>
      </div>
      {{end}}
    </fieldset>
    <div class="actions">
      <button class="primary" type="submit" name="action" value="signin">Sign in as this citizen</button>
      <button class="secondary" type="submit" name="action" value="cancel">Cancel</button>
    </div>
  </form>
  <p class="small">You will be returned to <span class="id">{{.Req.RedirectURI}}</span>.</p>
{{end}}
</main>
</body>
</html>
`))

type pageData struct {
	Banner   string
	Error    string
	Action   string
	Req      authRequest
	Citizens []Citizen
}

func (i *Issuer) renderPicker(w http.ResponseWriter, ar authRequest) {
	// The form posts to the issuer, which redirects to the portal: CSP form-action applies to
	// that redirect too, so the portal's origin must be allowed as well.
	formAction := "'self'"
	if u, err := url.Parse(ar.RedirectURI); err == nil {
		formAction += " " + u.Scheme + "://" + u.Host
	}
	i.render(w, http.StatusOK, formAction, pageData{Banner: Banner, Action: i.issuer + "/authorize", Req: ar, Citizens: i.citizens})
}

func (i *Issuer) renderError(w http.ResponseWriter, status int, msg string) {
	i.render(w, status, "'none'", pageData{Banner: Banner, Error: msg})
}

func (i *Issuer) render(w http.ResponseWriter, status int, formAction string, d pageData) {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		http.Error(w, "devissuer: cannot render page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
