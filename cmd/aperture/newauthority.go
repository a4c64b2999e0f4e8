package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// authorityNameRE is what an authority slug must look like to be a policy id, a proto package
// segment and a Go package name at once.
var authorityNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,31}$`)

var datasetNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// runNew scaffolds new parts of the repository; `new authority` is the only kind so far.
func runNew(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	const usage = "usage: aperture new authority NAME --name-en 'English name' --name-da 'Danish name' [--dataset DATASET] [--port PORT] [--repo DIR] [--no-generate]"
	if len(args) == 0 || args[0] != "authority" {
		return usagef("%s", usage)
	}
	fs := flag.NewFlagSet("new authority", flag.ContinueOnError)
	dataset := fs.String("dataset", "record", "name of the authority's first dataset")
	port := fs.Int("port", 7199, "port the development stack lists for the authority in the registry")
	repo := fs.String("repo", ".", "root of the Aperture repository")
	nameEN := fs.String("name-en", "", "the authority's name in English, as citizens read it (required)")
	nameDA := fs.String("name-da", "", "the authority's name in Danish, as citizens read it (required)")
	noGenerate := fs.Bool("no-generate", false, "do not run `go tool buf generate` for the new proto")
	asJSON := fs.Bool("json", false, "print the files written as JSON for machines")
	pos, err := parseFlags(fs, args[1:], stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s", usage)
	}
	if strings.TrimSpace(*nameEN) == "" || strings.TrimSpace(*nameDA) == "" {
		return usagef("the citizen portal shows the authority's name in English and Danish: give --name-en and --name-da\n%s", usage)
	}
	sc := scaffold{Name: pos[0], Dataset: *dataset, Port: *port, NameEN: yamlQuote(*nameEN), NameDA: yamlQuote(*nameDA), GoNameEN: strconv.Quote(*nameEN)}
	files, err := sc.write(*repo)
	if *asJSON {
		// Machines get one object at the end; the steps' lines are for people.
		out := stdout
		stdout = io.Discard
		defer func() {
			if err == nil {
				err = writeJSON(out, struct {
					Files []string `json:"files"`
				}{files})
			}
		}()
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	if err != nil {
		return err
	}
	if !*noGenerate {
		// The service imports the generated package, so nothing builds until it exists.
		cmd := exec.CommandContext(ctx, "go", "tool", "buf", "generate", "--path", filepath.Join("proto", "aperture", sc.Name))
		cmd.Dir = *repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go tool buf generate failed (%v); the new service does not build until it succeeds: fix the proto and run, in %s,\n  go tool buf generate --path proto/aperture/%s\n%s", err, *repo, sc.Name, out)
		}
		fmt.Fprintf(stdout, "generated proto/aperture/%[1]s/v1/%[1]s.pb.go (go tool buf generate)\n", sc.Name)
	}
	fmt.Fprintf(stdout, `
It builds and go test ./... passes now. Next:
  1. describe the dataset in proto/aperture/%[1]s/v1/%[1]s.proto, with a label in English and
     Danish on the message, every field and every enum value (what citizens read), then
       go tool buf lint && go tool buf generate
  2. connect the lookup in services/%[1]s/%[1]s.go to the data (it answers Unimplemented until then;
     services/catalog already lists it)
  3. release %[1]s.%[2]s fields or facts in a journey under policies/journeys/, and write its policy
     tests and fact truth tables in policies/tests/, then
       go run ./cmd/aperture policy lint && go run ./cmd/aperture policy test && go test ./...
  The guide: services/ADDING_AN_AUTHORITY.md
`, sc.Name, sc.Dataset)
	return nil
}

// scaffold is one authority to generate.
type scaffold struct {
	Name, Dataset string
	Port          int
	// NameEN and NameDA are the display names, quoted for YAML; GoNameEN the English one for Go.
	NameEN, NameDA, GoNameEN string
	// Message is the dataset's message name (CamelCase of Dataset); Journey, Step and Agency are
	// an existing step at which the policy test proves the new dataset is not released yet.
	Message, Journey, Step, Agency string
}

// write generates the files under repo and returns their paths. It refuses to overwrite anything.
func (sc *scaffold) write(repo string) ([]string, error) {
	if !authorityNameRE.MatchString(sc.Name) {
		return nil, usagef("authority name %q: want lower-case letters and digits, starting with a letter (it is the policy id, proto package and Go package)", sc.Name)
	}
	if !datasetNameRE.MatchString(sc.Dataset) {
		return nil, usagef("dataset name %q: want lower-case letters, digits and underscores", sc.Dataset)
	}
	sc.Message = camel(sc.Dataset)
	policiesDir := filepath.Join(repo, "policies")
	registry := filepath.Join(policiesDir, registryFile)
	reg, err := os.ReadFile(registry)
	if err != nil {
		return nil, fmt.Errorf("read the registry (is --repo the repository root?): %w", err)
	}
	if bytes.Contains(reg, []byte("\n  - id: "+sc.Name+"\n")) {
		return nil, fmt.Errorf("authority %q is already in %s", sc.Name, registry)
	}
	if err := sc.pickStep(policiesDir); err != nil {
		return nil, err
	}
	files := []struct{ path, tmpl string }{
		{filepath.Join(repo, "proto", "aperture", sc.Name, "v1", sc.Name+".proto"), protoTemplate},
		{filepath.Join(repo, "services", sc.Name, sc.Name+".go"), serviceTemplate},
		{filepath.Join(repo, "services", sc.Name, sc.Name+"_test.go"), serviceTestTemplate},
		{filepath.Join(policiesDir, "tests", sc.Name+".yaml"), policyTestTemplate},
	}
	for _, f := range files {
		if _, err := os.Stat(f.path); err == nil {
			return nil, fmt.Errorf("%s exists; nothing was written", f.path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var written []string
	for _, f := range files {
		var b bytes.Buffer
		if err := template.Must(template.New(filepath.Base(f.path)).Parse(f.tmpl)).Execute(&b, sc); err != nil {
			return written, fmt.Errorf("render %s: %w", f.path, err)
		}
		if strings.HasSuffix(f.path, ".go") {
			src, err := format.Source(b.Bytes())
			if err != nil {
				return written, fmt.Errorf("format %s: %w", f.path, err)
			}
			b.Reset()
			b.Write(src)
		}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return written, err
		}
		if err := os.WriteFile(f.path, b.Bytes(), 0o644); err != nil {
			return written, err
		}
		written = append(written, f.path)
	}
	// The registry entry goes after the last authority, i.e. before the agencies.
	var entry bytes.Buffer
	if err := template.Must(template.New("registry").Parse(registryTemplate)).Execute(&entry, sc); err != nil {
		return written, err
	}
	i := bytes.Index(reg, []byte("\nagencies:"))
	if i < 0 {
		return written, fmt.Errorf("%s has no top-level \"agencies:\"; add this entry under authorities yourself:\n%s", registry, entry.String())
	}
	out := append(append(append([]byte{}, reg[:i+1]...), entry.Bytes()...), reg[i+1:]...)
	if err := os.WriteFile(registry, out, 0o644); err != nil {
		return written, err
	}
	written = append(written, registry+" (entry added)")
	catalogFile := filepath.Join(repo, "services", "catalog", "catalog.go")
	if err := sc.addToCatalog(catalogFile); err != nil {
		return written, err
	}
	written = append(written, catalogFile+" (listed)")
	deployed, err := sc.addToDeploy(filepath.Join(repo, "deploy", "k8s"))
	return append(written, deployed...), err
}

// addToDeploy adds the authority to the Kubernetes manifests, the way the example authorities are
// there: a Service and Deployment like the first authority's, its TLS Secret in the example Secrets,
// and its address in the broker's --authority-addresses. A repository without deploy/k8s is left be.
func (sc *scaffold) addToDeploy(dir string) ([]string, error) {
	authFile, brokerFile, secretsFile := filepath.Join(dir, "authorities.yaml"), filepath.Join(dir, "broker.yaml"), filepath.Join(dir, "secrets.example.yaml")
	auth, err := os.ReadFile(authFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	brk, err := os.ReadFile(brokerFile)
	if err != nil {
		return nil, err
	}
	secrets, err := os.ReadFile(secretsFile)
	if err != nil {
		return nil, err
	}
	docs := strings.Split(string(auth), "\n---\n")
	m := firstAuthorityRE.FindStringSubmatch(string(auth))
	if m == nil || len(docs) < 2 {
		return nil, fmt.Errorf("%s does not look as expected: add a Service and Deployment for authority %s yourself", authFile, sc.Name)
	}
	model := m[1]
	rename := strings.NewReplacer("authority-"+model, "authority-"+sc.Name, "- "+model+"\n", "- "+sc.Name+"\n", "authority/"+model, "authority/"+sc.Name)
	var pair []string
	for _, d := range docs {
		if strings.Contains(d, "name: authority-"+model+"\n") {
			pair = append(pair, rename.Replace(d[strings.Index(d, "apiVersion:"):])) // not the file's header comment
		}
	}
	auth = append(bytes.TrimRight(auth, "\n"), []byte("\n---\n"+strings.Join(pair, "\n---\n")+"\n")...)
	const flag = "--authority-addresses="
	i := bytes.Index(brk, []byte(flag))
	if i < 0 {
		return nil, fmt.Errorf("%s has no %s: add %s=authority-%s:8443 to the broker's flags yourself", brokerFile, flag, sc.Name, sc.Name)
	}
	end := i + bytes.IndexByte(brk[i:], '\n')
	brk = slices.Concat(brk[:end], []byte(","+sc.Name+"=authority-"+sc.Name+":8443"), brk[end:])
	for _, d := range strings.Split(string(secrets), "\n---\n") {
		if strings.Contains(d, "name: authority-"+model+"-tls\n") {
			secrets = append(bytes.TrimRight(secrets, "\n"), []byte("\n---\n"+rename.Replace(d[strings.Index(d, "apiVersion:"):])+"\n")...)
			break
		}
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{authFile, auth}, {brokerFile, brk}, {secretsFile, secrets}} {
		if err := os.WriteFile(f.name, f.b, 0o644); err != nil {
			return nil, err
		}
	}
	return []string{authFile + " (Service and Deployment added)", brokerFile + " (--authority-addresses)", secretsFile + " (TLS Secret)"}, nil
}

// firstAuthorityRE finds the id of the first authority in deploy/k8s/authorities.yaml.
var firstAuthorityRE = regexp.MustCompile(`(?m)^  name: authority-([a-z][a-z0-9]*)$`)

// addToCatalog lists the authority in services/catalog, so that `aperture dev` serves it and the policy
// tools know its schema: the import and one line in Examples, which passes the demo population.
func (sc *scaffold) addToCatalog(name string) error {
	src, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("read the catalog: %w", err)
	}
	imp := fmt.Sprintf("\t\"github.com/aperture-gov/aperture/services/%s\"\n", sc.Name)
	const importMarker, listMarker = "\t\"github.com/aperture-gov/aperture/services/kit\"\n", ".New(pop),\n"
	i, j := bytes.Index(src, []byte(importMarker)), bytes.LastIndex(src, []byte(listMarker))
	if i < 0 || j < 0 {
		return fmt.Errorf("%s does not look as expected: add the import %s and the line %s.New(pop), to Examples yourself", name, strings.TrimSpace(imp), sc.Name)
	}
	j += len(listMarker)
	out := slices.Concat(src[:i], []byte(imp), src[i:j], []byte("\t\t"+sc.Name+".New(pop),\n"), src[j:])
	formatted, err := format.Source(out)
	if err != nil {
		return fmt.Errorf("format %s: %w", name, err)
	}
	return os.WriteFile(name, formatted, 0o644)
}

// yamlQuote quotes s as a YAML double-quoted scalar (JSON strings are valid YAML).
func yamlQuote(s string) string { return strconv.Quote(s) }

// pickStep finds the first step of the first journey, for the policy test that proves the new
// dataset is released nowhere until a journey names it.
func (sc *scaffold) pickStep(policiesDir string) error {
	b, err := loadPolicyTree(os.DirFS(policiesDir), newCatalogDescriptors())
	if err != nil {
		return fmt.Errorf("the policies must load before an authority is added (run `aperture policy lint`):\n%w", err)
	}
	js := b.Journeys()
	if len(js) == 0 || len(js[0].Steps) == 0 {
		return errors.New("the policies have no journey")
	}
	sc.Journey, sc.Step, sc.Agency = js[0].ID, js[0].Steps[0].ID, js[0].Steps[0].Agency
	return nil
}

// camel turns a snake_case name into CamelCase ("school_enrolment" → "SchoolEnrolment").
func camel(s string) string {
	var b strings.Builder
	for _, part := range strings.Split(s, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

const protoTemplate = `syntax = "proto3";

// Package aperture.{{.Name}}.v1 holds the datasets of the {{.Name}} authority.
// TODO: say what the authority holds and what it never releases.
package aperture.{{.Name}}.v1;

import "aperture/authority/v1/labels.proto";

option go_package = "github.com/aperture-gov/aperture/proto/aperture/{{.Name}}/v1;{{.Name}}v1";

// {{.Message}} is dataset "{{.Name}}.{{.Dataset}}": the full record of one citizen. Journeys release
// single fields of it by path, so give every field a comment that says what it means, and a label in
// English and Danish: that label, never the field name, is what the citizen reads in the portal
// (aperture policy lint warns about a released field without one).
message {{.Message}} {
  // TODO: name the dataset the way a citizen would ("Registered vehicles").
  option (aperture.authority.v1.message_label) = {
    en: {{.NameEN}}
    da: {{.NameDA}}
  };
  // National identity number (10 digits).
  string citizen_id = 1 [(aperture.authority.v1.field_label) = {
    en: "CPR number"
    da: "CPR-nummer"
  }];
}
`

const serviceTemplate = `// Package {{.Name}} is the {{.Name}} authority. It serves dataset "{{.Dataset}}".
//
// Scaffolded by ` + "`aperture new authority {{.Name}}`" + `: the lookup has no data source yet and answers
// Unimplemented. Connect it to the authority's data, then list New in services/catalog.
package {{.Name}}

import (
	"context"
	"fmt"

	{{.Name}}v1 "github.com/aperture-gov/aperture/proto/aperture/{{.Name}}/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug, as policies and certificates name it.
const ID = "{{.Name}}"

// New returns the authority serving pop, the development population that services/catalog passes to
// every authority (a deployment connects the lookup to the authority's own data instead).
func New(pop *demo.Population) *kit.Authority {
	_ = pop // TODO: derive each citizen's record from pop, or read the authority's data
	return &kit.Authority{ID: ID, DisplayName: {{.GoNameEN}}, Datasets: []kit.Dataset{
		kit.NewDataset("{{.Dataset}}", "TODO: say in one sentence what the dataset holds.",
			func(_ context.Context, citizenID string) (*{{.Name}}v1.{{.Message}}, error) {
				// Return the full record; the kit masks it to what the step may see. Return
				// kit.ErrNotFound when the authority holds nothing on the citizen. Errors must
				// not contain the citizen id or field values.
				return nil, fmt.Errorf("%s.%s: %w", ID, "{{.Dataset}}", kit.ErrUnimplemented)
			}),
	}}
}
`

const serviceTestTemplate = `package {{.Name}}_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/{{.Name}}"
)

// TestLookupIsUnimplemented: until the lookup is connected, the authority says so. Replace this test
// with one that fetches a known citizen's record through kittest.
func TestLookupIsUnimplemented(t *testing.T) {
	srv := kittest.Start(t, {{.Name}}.New(demo.New(10, time.Now())))
	_, err := srv.Client.Fetch(context.Background(), kittest.Request("0101010101", "{{.Dataset}}"))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Fetch: %v, want Unimplemented", err)
	}
}
`

const registryTemplate = `  - id: {{.Name}}
    name:
      en: {{.NameEN}}
      da: {{.NameDA}}
    address: 127.0.0.1:{{.Port}}
    identity: spiffe://aperture.local/authority/{{.Name}}
    datasets:
      - {{.Dataset}} # aperture.{{.Name}}.v1.{{.Message}}

`

const policyTestTemplate = `# Policy tests for the {{.Name}} authority. Until a journey releases {{.Name}}.{{.Dataset}}, no step may
# see it; when a journey does, add tests that it releases exactly the fields it should, and refuses the
# rest, to the wrong agency and without consent where consent is needed.
journey: {{.Journey}}
tests:
  - name: {{.Name}}.{{.Dataset}} is released nowhere until a journey names it
    step: {{.Step}}
    agency: {{.Agency}}
    request: {dataset: {{.Name}}.{{.Dataset}}}
    expect:
      refused: {code: PermissionDenied, reason: is not released at step}
`
