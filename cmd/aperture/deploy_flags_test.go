package main

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	k8sdeploy "github.com/aperture-gov/aperture/deploy/k8s"
)

// TestDeployFlags: every flag and APERTURE_ variable that deploy/k8s gives the aperture binary is one
// the command defines, so a renamed or removed flag fails here and not at a rollout.
func TestDeployFlags(t *testing.T) {
	m, err := k8sdeploy.Load("../../deploy/k8s")
	if err != nil {
		t.Fatal(err)
	}
	invs := m.Invocations("aperture")
	if len(invs) == 0 {
		t.Fatal("no container runs aperture")
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, inv := range invs {
		var words []string // the command and its positional arguments
		for _, a := range inv.Args {
			if strings.HasPrefix(a, "-") {
				break
			}
			words = append(words, a)
		}
		var help bytes.Buffer
		if code := run(context.Background(), append(slices.Clone(words), "-h"), &help, &help); code != 0 {
			t.Fatalf("%s: aperture %s -h exited %d: %s", inv.Workload, strings.Join(words, " "), code, help.String())
		}
		defined := map[string]bool{}
		for _, f := range flagLine.FindAllStringSubmatch(help.String(), -1) {
			defined[f[1]] = true
		}
		if len(defined) == 0 {
			t.Fatalf("aperture %s -h lists no flags", strings.Join(words, " "))
		}
		for _, a := range inv.Args[len(words):] {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !strings.HasPrefix(a, "-") || !defined[name] {
				t.Errorf("%s runs aperture %s with %q, which is not one of its flags", inv.Workload, strings.Join(words, " "), a)
			}
		}
		for _, e := range inv.Env {
			name, ok := strings.CutPrefix(e, "APERTURE_")
			if ok && !defined[strings.ReplaceAll(strings.ToLower(name), "_", "-")] {
				t.Errorf("%s sets %s, which names no flag of aperture %s", inv.Workload, e, strings.Join(words, " "))
			}
		}
	}
}

func TestAuthorityAddressesFlag(t *testing.T) {
	tests := []struct {
		in   string
		want string // String() of the result, or "error"
	}{
		{"tax=authority-tax:8443", "tax=authority-tax:8443"},
		{"tax=a:1, population=b:2,", "population=b:2,tax=a:1"},
		{"tax", "error"},
		{"=a:1", "error"},
		{"tax=no-port", "error"},
	}
	for _, tc := range tests {
		var a authorityAddresses
		err := a.Set(tc.in)
		got := a.String()
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("Set(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
}
