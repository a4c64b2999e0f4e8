package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/policy/policytest"
	"github.com/aperture-gov/aperture/services/catalog"
)

const policyUsage = `usage:
  aperture policy lint [--json] [DIR]        check the registry and journeys (DIR defaults to policies)
  aperture policy test [--json] [DIR]        run the policy tests in DIR/tests/*.yaml
  aperture policy explain [--format text|markdown|json] [--dir DIR] JOURNEY
  aperture policy explain --diff [--format text|markdown|json] OLD NEW
                                             what a policy change newly discloses and withdraws`

// runPolicy is the architect's tool for policy files: it needs no running broker or authority; the
// datasets' schemas come from the example authorities compiled into this binary.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("%s", policyUsage)
	}
	switch args[0] {
	case "lint":
		return runPolicyLint(args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(args[1:], stdout, stderr)
	case "explain":
		return runPolicyExplain(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, policyUsage)
		return nil
	}
	return usagef("unknown subcommand %q\n%s", args[0], policyUsage)
}

// registryFile is the registry's name within a policy tree.
const registryFile = "registry.yaml"

// catalogDescriptors resolves datasets to the message types of the authorities in services/catalog,
// read from the compiled-in descriptors, so that linting needs neither network nor running services.
type catalogDescriptors map[string]protoreflect.MessageDescriptor

func newCatalogDescriptors() catalogDescriptors {
	d := catalogDescriptors{}
	// The lookups are never called, so the authorities need no population.
	for _, a := range catalog.Examples(nil) {
		for _, ds := range a.Datasets {
			if ds.Message != nil {
				d[a.ID+"."+ds.Name] = ds.Message.ProtoReflect().Descriptor()
			}
		}
	}
	return d
}

func (d catalogDescriptors) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	md, ok := d[authority+"."+dataset]
	if !ok {
		return nil, fmt.Errorf("no authority in services/catalog describes %s.%s (list the authority in services/catalog)", authority, dataset)
	}
	return md, nil
}

// policyDir returns the one optional DIR argument, "policies" by default.
func policyDir(pos []string, usage string) (string, error) {
	switch len(pos) {
	case 0:
		return "policies", nil
	case 1:
		return pos[0], nil
	}
	return "", usagef("%s", usage)
}

// lintJSON is the --json form of `policy lint`.
type lintJSON struct {
	Findings []lintFindingJSON `json:"findings"`
	Errors   int               `json:"errors"`
	Warnings int               `json:"warnings"`
}

type lintFindingJSON struct {
	File     string `json:"file"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
	Severity string `json:"severity"`
	// Check names the check of a warning (e.g. "unused-authority"), so CI can allow some.
	Check   string `json:"check,omitempty"`
	Message string `json:"message"`
}

func runPolicyLint(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy lint", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	dir, err := policyDir(pos, "usage: aperture policy lint [--json] [DIR]")
	if err != nil {
		return err
	}
	findings, err := policy.Lint(os.DirFS(dir), registryFile, newCatalogDescriptors())
	if err != nil {
		return fmt.Errorf("lint %s: %w", dir, err)
	}
	out := lintJSON{Findings: []lintFindingJSON{}}
	for _, f := range findings {
		f.File = filepath.Join(dir, f.File)
		out.Findings = append(out.Findings, lintFindingJSON{
			File: f.File, Line: f.Line, Column: f.Column, Severity: string(f.Severity), Check: f.Check, Message: f.Message,
		})
		if f.Severity == policy.SeverityError {
			out.Errors++
		} else {
			out.Warnings++
		}
		if !*asJSON {
			fmt.Fprintln(stdout, f)
		}
	}
	if *asJSON {
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s: %s, %s\n", dir, plural(out.Errors, "error"), plural(out.Warnings, "warning"))
	}
	if out.Errors > 0 {
		return fmt.Errorf("%s in %s", plural(out.Errors, "error"), dir)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// loadPolicyTree loads and checks a policy tree as the broker would.
func loadPolicyTree(fsys fs.FS, descs policy.Descriptors) (*policy.Bundle, error) {
	reg, err := policy.LoadRegistry(fsys, registryFile)
	if err != nil {
		return nil, err
	}
	return policy.LoadBundle(fsys, reg, descs)
}

func runPolicyTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	verbose := fs.Bool("v", false, "list passing tests too")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	dir, err := policyDir(pos, "usage: aperture policy test [--json] [-v] [DIR]")
	if err != nil {
		return err
	}
	results, err := policytest.Run(os.DirFS(dir), newCatalogDescriptors(), time.Now())
	if err != nil {
		return fmt.Errorf("policy test %s: %w", dir, err)
	}
	failed := 0
	for i := range results {
		results[i].File = filepath.Join(dir, results[i].File)
		if !results[i].Pass {
			failed++
		}
	}
	if *asJSON {
		if err := writeJSON(stdout, map[string]any{"results": results, "passed": len(results) - failed, "failed": failed}); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			switch {
			case !r.Pass:
				fmt.Fprintf(stdout, "FAIL  %s  %s: %s\n        got:  %s\n        want: %s\n", filePos(r.File, r.Line), r.Journey, r.Name, r.Got, r.Problem)
			case *verbose:
				fmt.Fprintf(stdout, "ok    %s  %s: %s\n", filePos(r.File, r.Line), r.Journey, r.Name)
			}
		}
		fmt.Fprintf(stdout, "%s: %d passed, %d failed\n", dir, len(results)-failed, failed)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d policy tests failed", failed, len(results))
	}
	return nil
}

// filePos is "file:line", or the file alone when the result has no line (a fact without a truth table).
func filePos(file string, line int) string {
	if line <= 0 {
		return file
	}
	return fmt.Sprintf("%s:%d", file, line)
}
