package broker_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/aperture-gov/aperture/"

// TestImportRules keeps the seams of the design: authorities never depend on the broker (an authority
// is built with the kit alone), the broker depends on no example authority (adding an authority touches
// only proto/, services/ and policies/), and nothing depends on cmd/.
func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		checked++
		pkg := strings.TrimPrefix(p.ImportPath, module)
		for i, imp := range append(append(p.Imports, p.TestImports...), p.XTestImports...) {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if msg := violates(pkg, dep, i >= len(p.Imports)); msg != "" {
				t.Errorf("%s imports %s: %s", pkg, dep, msg)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("go list returned only %d packages", checked)
	}
}

// violates says why pkg may not import dep. A broker test may import services/catalog, and only that:
// tests derive their world from the catalog (every authority in it), so adding an authority never
// means editing a broker test, and no broker test names one example authority.
func violates(pkg, dep string, test bool) string {
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	switch {
	case test && under(pkg, "broker") && dep == "services/catalog":
		return ""
	case under(dep, "cmd"):
		return "nothing may import the command"
	case under(pkg, "services") && under(dep, "broker"):
		return "authority services must not depend on the broker"
	case under(pkg, "broker") && under(dep, "services") && !under(dep, "services/kit"):
		return "the broker may use the authority kit but no example authority"
	case under(pkg, "proto") && !under(dep, "proto"):
		return "generated code depends only on other generated code"
	case under(pkg, "policies") && dep != "":
		return "policies are data"
	}
	return ""
}

func TestViolates(t *testing.T) {
	for _, tc := range []struct {
		pkg, dep string
		test     bool
		bad      bool
	}{
		{"services/tax", "broker/policy", false, true},
		{"services/kit", "services/kit/fieldmask", false, false},
		{"broker/release", "services/kit/fieldmask", false, false},
		{"broker/release", "services/tax", false, true},
		{"broker/release", "services/tax", true, true},
		{"broker/release", "services/catalog", false, true},
		{"broker/release", "services/catalog", true, false},
		{"broker", "cmd/aperture", false, true},
		{"cmd/aperture", "services/catalog", false, false},
		{"proto/aperture/broker/v1", "broker/policy", false, true},
	} {
		if got := violates(tc.pkg, tc.dep, tc.test) != ""; got != tc.bad {
			t.Errorf("violates(%q, %q, test %v) = %v, want %v", tc.pkg, tc.dep, tc.test, got, tc.bad)
		}
	}
}
