package portal

import (
	"net/http/httptest"
	"testing"
)

// TestSelfReturn: the page to come back to after acting for oneself again is always a page of the
// portal, never another site, and for a form the page the form was on.
func TestSelfReturn(t *testing.T) {
	for _, c := range []struct{ method, target, want string }{
		{"GET", "/data?lang=da", "/data?lang=da"},
		{"GET", "/journeys/moving", "/journeys/moving"},
		{"POST", "/switches?x=1", "/switches"},
	} {
		if got := selfReturn(httptest.NewRequest(c.method, c.target, nil)); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.method, c.target, got, c.want)
		}
	}
	for _, to := range []string{"//evil.example/", "/\\evil.example", "https://evil.example/", "", "data"} {
		if got := localPath(to); got != "/" {
			t.Errorf("localPath(%q) = %q, want /", to, got)
		}
	}
}
