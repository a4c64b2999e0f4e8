// Package portaltest runs a real headless Chromium for tests of the citizen portal (and of the whole
// stack through the portal), with chromedp.
//
// The browser is /usr/bin/chromium, or the binary named by $APERTURE_CHROMIUM. A missing browser is a
// test failure, not a skip: the CI script installs Debian's chromium package
// (apt-get install chromium).
//
// Screenshots are full-page PNGs written to $APERTURE_ARTIFACTS/<test name>/<name>.png, or, when
// $APERTURE_ARTIFACTS is not set, to $TMPDIR/aperture-artifacts/<test name>/<name>.png (kept after the
// test, so they can be looked at; each run overwrites the previous one). The path is logged.
package portaltest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultChromium is where Debian's chromium package puts the browser.
const DefaultChromium = "/usr/bin/chromium"

// StepTimeout bounds one Do call.
var StepTimeout = 20 * time.Second

type consoleKey struct{}

type console struct {
	mu   sync.Mutex
	errs []string
}

// ChromiumPath returns the browser binary: $APERTURE_CHROMIUM, else /usr/bin/chromium.
func ChromiumPath() string {
	if p := os.Getenv("APERTURE_CHROMIUM"); p != "" {
		return p
	}
	return DefaultChromium
}

// NewBrowser starts a headless Chromium for the test and returns a chromedp context with one tab,
// already started. The browser stops when the test ends. Console errors, uncaught exceptions and
// browser log errors (such as Content-Security-Policy violations) of the tab are collected; see
// ConsoleErrors.
func NewBrowser(t testing.TB) context.Context {
	t.Helper()
	path := ChromiumPath()
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("portaltest: no Chromium at %s (%v). The browser tests need a real browser: install it "+
			"(Debian/Ubuntu: apt-get install chromium) or point APERTURE_CHROMIUM at a Chromium or Chrome binary.", path, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-GB"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	con := &console{}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(con.listen))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	ctx = context.WithValue(ctx, consoleKey{}, con)
	// The first Run starts the browser; it must not have a timeout (that would stop the browser).
	start := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx, start) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("portaltest: starting %s: %v", path, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("portaltest: %s did not start within 30s", path)
	}
	return ctx
}

func (c *console) listen(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil && e.ExceptionDetails.Exception.Description != "" {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var parts []string
		for _, a := range e.Args {
			parts = append(parts, string(a.Value))
		}
		msg = "console.error: " + strings.Join(parts, " ")
	case *cdplog.EventEntryAdded:
		if e.Entry == nil || e.Entry.Level != cdplog.EntryLevelError {
			return
		}
		msg = "log: " + e.Entry.Text
		if e.Entry.URL != "" {
			msg += " (" + e.Entry.URL + ")"
		}
	default:
		return
	}
	c.mu.Lock()
	c.errs = append(c.errs, msg)
	c.mu.Unlock()
}

// ConsoleErrors returns the errors the tab of a NewBrowser context has reported so far: uncaught
// exceptions, console.error calls and browser log errors (CSP violations, failed loads).
func ConsoleErrors(ctx context.Context) []string {
	c, _ := ctx.Value(consoleKey{}).(*console)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// Do runs browser steps with StepTimeout and fails the test on error, naming what.
func Do(t testing.TB, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, StepTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("browser: %s: %v (page %s)", what, err, loc)
	}
}

// Eval evaluates a JavaScript expression with StepTimeout and returns its value, failing the test on
// error.
func Eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, StepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluate %q: %v", expr, err)
	}
	return v
}

// ArtifactsDir returns (and creates) the directory the test's screenshots go to.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv("APERTURE_ARTIFACTS")
	if base == "" {
		base = filepath.Join(os.TempDir(), "aperture-artifacts")
	}
	dir := filepath.Join(base, safeName(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("portaltest: artifacts: %v", err)
	}
	return dir
}

var unsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return unsafe.ReplaceAllString(s, "_") }

// Screenshot saves a full-page PNG of the tab as <ArtifactsDir>/<name>.png and returns its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, StepTimeout)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	path := filepath.Join(ArtifactsDir(t), safeName(name)+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("portaltest: %v", err)
	}
	t.Logf("screenshot %s", path)
	return path
}

// Desktop and Phone are the viewports the portal is checked in.
var (
	Desktop = Viewport{Width: 1280, Height: 900}
	Phone   = Viewport{Width: 390, Height: 844, Mobile: true}
)

// Viewport is a screen size to emulate.
type Viewport struct {
	Width, Height int64
	Mobile        bool
}

// SetViewport emulates the viewport (a phone also gets touch and a device scale of 3).
func SetViewport(t testing.TB, ctx context.Context, v Viewport) {
	t.Helper()
	var opts []chromedp.EmulateViewportOption
	if v.Mobile {
		opts = append(opts, chromedp.EmulateScale(3), chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	Do(t, ctx, fmt.Sprintf("viewport %dx%d", v.Width, v.Height), chromedp.EmulateViewport(v.Width, v.Height, opts...))
}

// ScreenshotViewport saves a PNG of only what is on the screen now (not the full page) as
// <ArtifactsDir>/<name>.png and returns its path; handy for a phone, whose full page is very tall.
func ScreenshotViewport(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, StepTimeout)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	path := filepath.Join(ArtifactsDir(t), safeName(name)+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("portaltest: %v", err)
	}
	t.Logf("screenshot %s", path)
	return path
}
