package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestEveryResultCommandTakesJSON: every command that prints a result takes --json (the README says
// so), and every command that prints times takes --utc. Servers (dev, broker, authority, witness serve)
// print no result and are not listed.
func TestEveryResultCommandTakesJSON(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		times bool // prints times, so takes --utc
	}{
		{[]string{"case", "open"}, true},
		{[]string{"case", "show"}, true},
		{[]string{"case", "list"}, true},
		{[]string{"case", "explain"}, true},
		{[]string{"case", "release"}, true},
		{[]string{"case", "complete"}, true},
		{[]string{"case", "close"}, true},
		{[]string{"case", "questions"}, true},
		{[]string{"case", "answer"}, true},
		{[]string{"log"}, true},
		{[]string{"citizen", "switches", "list"}, true},
		{[]string{"citizen", "log"}, true},
		{[]string{"audit", "verify"}, false},
		{[]string{"audit", "prove"}, true},
		{[]string{"audit", "review", "list"}, true},
		{[]string{"audit", "review", "close"}, true},
		{[]string{"authority", "event"}, true},
		{[]string{"bench"}, false},
		{[]string{"policy", "lint"}, false},
		{[]string{"policy", "test"}, false},
		{[]string{"policy", "explain"}, false},
		{[]string{"new", "authority"}, false},
		{[]string{"witness", "keygen"}, false},
		{[]string{"report", "--format", "md"}, false},
		{[]string{"report", "verify"}, false},
	} {
		name := strings.Join(tc.args, " ")
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), append(tc.args, "-h"), &out, &errb); code != 0 {
				t.Fatalf("aperture %s -h: exit %d\n%s%s", name, code, out.String(), errb.String())
			}
			help := out.String() + errb.String()
			if !strings.Contains(help, "-json") {
				t.Errorf("aperture %s has no --json:\n%s", name, help)
			}
			if tc.times && !strings.Contains(help, "-utc") {
				t.Errorf("aperture %s prints times but has no --utc:\n%s", name, help)
			}
		})
	}
}

// TestClockPrintsTheZone: times print in the chosen zone, with its name: local by default, UTC with
// --utc.
func TestClockPrintsTheZone(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 11, 23, 9, 28, 0, 0, time.UTC))
	cph := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name string
		ck   clock
		want string
	}{
		{"UTC", clock{time.UTC}, "2026-11-23 09:28 UTC"},
		{"a local zone", clock{cph}, "2026-11-23 10:28 CET"},
		{"the zero clock is local", clock{}, at.AsTime().Local().Format("2006-01-02 15:04 MST")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.ck.ts(at); got != tc.want {
				t.Errorf("ts = %q, want %q", got, tc.want)
			}
		})
	}
	if got := (clock{time.UTC}).ts(nil); got != "" {
		t.Errorf("ts(nil) = %q, want empty", got)
	}
	for _, tc := range []struct {
		utc  bool
		want *time.Location
	}{{false, time.Local}, {true, time.UTC}} {
		cf := clientFlags{utc: tc.utc}
		if got := cf.clock().loc; got != tc.want {
			t.Errorf("--utc=%v: clock in %v, want %v", tc.utc, got, tc.want)
		}
	}
}

// TestJSONOutputs: the commands that gained --json print one JSON object, not text.
func TestJSONOutputs(t *testing.T) {
	b, err := loadPolicyTree(os.DirFS(filepath.Join("..", "..", "policies")), newCatalogDescriptors())
	if err != nil {
		t.Fatal(err)
	}
	journey := b.Journeys()[0].ID
	for _, args := range [][]string{
		{"witness", "keygen", "--name", "dpa.example/witness", "--key", filepath.Join(t.TempDir(), "w.key"), "--json"},
		{"policy", "explain", "--dir", filepath.Join("..", "..", "policies"), "--json", journey},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("aperture %s: exit %d\n%s", strings.Join(args, " "), code, errb.String())
		}
		var v map[string]any
		if err := json.Unmarshal(out.Bytes(), &v); err != nil || len(v) == 0 {
			t.Errorf("aperture %s does not print one JSON object (%v):\n%s", strings.Join(args, " "), err, out.String())
		}
	}
}
