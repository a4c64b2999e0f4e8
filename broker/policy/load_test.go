package policy_test

import (
	"errors"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
)

// marker marks the line a fixture expects its finding on ("// <-" inside a CEL expression).
const marker = "# <-"

const header = `id: fixture
title: {en: Fixture}
description: {en: A journey for tests.}
steps:
`

// step is a valid step; fixtures append to it or replace parts of it.
const step = `  - id: one
    title: {en: One}
    agency: municipality
    role: caseworker
    purpose: {en: Because.}
    legal_basis: Testloven § 1
    releases:
      - dataset: population.person
        fields: [name]
`

func realRegistryFS(t testing.TB) fstest.MapFS {
	t.Helper()
	data, err := fs.ReadFile(policies.Files(), "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return fstest.MapFS{"registry.yaml": {Data: data}}
}

// markedLine returns the 1-based line of the marker in text, and the 1-based column of at on it.
func markedLine(t *testing.T, text, at string) (line, col int) {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, marker) || strings.Contains(l, "// <-") {
			if at != "" {
				col = strings.Index(l, at) + 1
				if col == 0 {
					t.Fatalf("%q is not on the marked line %q", at, l)
				}
			}
			return i + 1, col
		}
	}
	t.Fatal("fixture has no marker")
	return 0, 0
}

var findingLine = regexp.MustCompile(`^[a-z/._-]+\.yaml:\d+:\d+: \S.*$`)

// loadFixture loads journeys/fixture.yaml with the real registry and returns the load error.
func loadFixture(t *testing.T, journey string, descs policy.Descriptors) *policy.LoadError {
	t.Helper()
	fsys := realRegistryFS(t)
	fsys["journeys/fixture.yaml"] = &fstest.MapFile{Data: []byte(journey)}
	reg, err := policy.LoadRegistry(fsys, "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = policy.LoadBundle(fsys, reg, descs)
	if err == nil {
		t.Fatalf("fixture loaded without findings:\n%s", journey)
	}
	var le *policy.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %T is not a *LoadError: %v", err, err)
	}
	for _, l := range strings.Split(err.Error(), "\n") {
		if !findingLine.MatchString(l) {
			t.Errorf("finding %q is not file:line:col: message", l)
		}
	}
	return le
}

func TestJourneyFindings(t *testing.T) {
	withoutTax := exampleDescriptors()
	delete(withoutTax, "tax.income")
	tests := []struct {
		name    string
		yaml    string
		want    string
		at      string // when set, the finding's column is where this text starts on the marked line
		descs   policy.Descriptors
		atCount int // number of findings expected in the file; 0 = not checked
	}{
		{
			name: "id does not match file name",
			yaml: strings.Replace(header, "id: fixture", "id: other "+marker, 1) + step,
			want: `journey id "other" does not match the file name: want "fixture"`, at: "other",
		},
		{
			name: "duplicate step id",
			yaml: header + step + strings.Replace(step, "- id: one", "- id: one "+marker, 1),
			want: `step id "one" is used twice (first at line 5)`, at: "one",
		},
		{
			name: "unknown agency",
			yaml: header + strings.Replace(step, "agency: municipality", "agency: municipalty "+marker, 1),
			want: `agency "municipalty" is not in the registry (did you mean "municipality"?)`, at: "municipalty",
		},
		{
			name: "unknown authority",
			yaml: header + strings.Replace(step, "dataset: population.person", "dataset: popluation.person "+marker, 1),
			want: `authority "popluation" is not in the registry (did you mean "population"?)`, at: "popluation",
		},
		{
			name: "unknown dataset",
			yaml: header + strings.Replace(step, "dataset: population.person", "dataset: population.persons "+marker, 1),
			want: `authority "population" serves no dataset "persons" (it serves person) (did you mean "person"?)`,
		},
		{
			name: "dataset not described by the authority",
			yaml: header + strings.Replace(step, "dataset: population.person\n        fields: [name]",
				"dataset: tax.income "+marker+"\n        fields: [citizen_id]", 1),
			descs: withoutTax,
			want:  `dataset tax.income: authority "tax" does not describe dataset "income"`,
		},
		{
			name: "field path typo",
			yaml: header + strings.Replace(step, "fields: [name]", "fields:\n          - name\n          - adress.city "+marker, 1),
			want: `population.person: field path "adress.city": no field "adress" in aperture.population.v1.Person (did you mean "address"?)`,
			at:   "adress.city",
		},
		{
			name: "field path into a timestamp",
			yaml: header + strings.Replace(step, "fields: [name]", "fields:\n          - birth_date.seconds "+marker, 1),
			want: `field "birth_date" of aperture.population.v1.Person is a well-known type (google.protobuf.Timestamp) and has no sub-field "seconds"`,
		},
		{
			name: "field path in a flow list",
			yaml: header + strings.Replace(step, "fields: [name]", "fields: [name, household.relaton] "+marker, 1),
			want: `no field "relaton" in aperture.population.v1.HouseholdMember (did you mean "relation"?)`,
			at:   "household.relaton",
		},
		{
			name: "duplicate derived name",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: adult
            description: {en: Adult.}
            expression: record.birth_date < now - duration('157680h')
          - name: adult `+marker+`
            description: {en: Adult again.}
            expression: "true"`, 1),
			want: `derived fact "adult" is defined twice for population.person (first at line 14)`, at: "adult",
		},
		{
			name: "CEL error in a plain scalar",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            expression: record.nmae.given_names != "" `+marker, 1),
			want: `derived fact "f": undefined field 'nmae'`, at: ".nmae",
		},
		{
			name: "CEL error in a quoted scalar",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            expression: "size(record.household) > 1 && record.adress.city == 'x'" `+marker, 1),
			want: `derived fact "f": undefined field 'adress'`, at: ".adress",
		},
		{
			name: "CEL error on the second line of a literal block",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            expression: |
              record.household.size() > 0 &&
                record.household.exists(h, h.relashun == 3) // <-`, 1),
			want: `derived fact "f": undefined field 'relashun'`, at: ".relashun",
		},
		{
			name: "did you mean on a misspelt field",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: bool
            expression: record.household.exists(h, h.relaton == 3) `+marker, 1),
			want: `derived fact "f": undefined field 'relaton' (did you mean "relation"?)`,
		},
		{
			name: "a fact without a type",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            expression: record.household `+marker, 1),
			want: `derived fact "f" has no type: its expression yields list(aperture.population.v1.HouseholdMember)`,
		},
		{
			name: "a bool fact without a type",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            expression: record.household.size() > 1 `+marker, 1),
			want: `derived fact "f" has no type: its expression yields bool; declare type: bool`,
		},
		{
			name: "declared bool, yields int",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: bool `+marker+`
            expression: record.household.size()`, 1),
			want: `derived fact "f" is declared bool, but its expression yields int`,
		},
		{
			name: "an int without a range",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: int `+marker+`
            expression: record.household.size()`, 1),
			want: `derived fact "f" is an int without a range`,
		},
		{
			name: "an enum without values",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: enum `+marker+`
            expression: record.name.family_name`, 1),
			want: `derived fact "f" is an enum without values`,
		},
		{
			name: "a string fact without a reason",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: string `+marker+`
            expression: record.name.family_name`, 1),
			want: `derived fact "f" is string-valued: it discloses a value, not a fact`,
		},
		{
			name: "a record fact without a reason",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: record `+marker+`
            expression: record.household`, 1),
			want: `derived fact "f" is record-valued: it discloses a value, not a fact`,
		},
		{
			name: "a reason on a bool",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: bool
            value_reason: {en: Because.} `+marker+`
            expression: record.household.size() > 1`, 1),
			want: `derived fact "f" has a value_reason but is a bool`,
		},
		{
			name: "an unknown type",
			yaml: header + strings.Replace(step, "fields: [name]", `derived:
          - name: f
            description: {en: F.}
            type: text `+marker+`
            expression: record.name.family_name`, 1),
			want: `type: must be in list [bool, int, enum, string, record]`,
		},
		{
			name: "consent required without days",
			yaml: header + step + "    consent: {required: true} " + marker + "\n",
			want: `steps[0].consent.default_days: must be greater than or equal to 1`,
		},
		{
			name: "consent default longer than max",
			yaml: header + step + "    consent: {required: true, default_days: 100, max_days: 90} " + marker + "\n",
			want: `steps[0].consent: default_days must not exceed max_days (consent.days)`,
		},
		{
			name: "covert step that asks for consent",
			yaml: header + step + "    consent: {required: true, default_days: 10, max_days: 20}\n    covert: {reason: {en: R.}, max_days: 30} " + marker + "\n",
			want: `step "one" is covert and requires consent: asking the citizen would reveal it`,
		},
		{
			name: "covert step without a delay",
			yaml: header + step + "    covert: {reason: {en: R.}} " + marker + "\n",
			want: `steps[0].covert.max_days: must be greater than or equal to 1`,
		},
		{
			name: "covert step hidden for more than a year",
			yaml: header + step + "    covert: {reason: {en: R.}, max_days: 400} " + marker + "\n",
			want: `steps[0].covert.max_days: must be greater than or equal to 1 and less than or equal to 366`,
		},
		{
			name: "covert step that is optional",
			yaml: header + step + "    covert: {reason: {en: R.}, max_days: 30}\n    optional: {why: {en: W.}} " + marker + "\n",
			want: `step "one" is covert and optional`,
		},
		{
			name: "optional journey with a covert step",
			yaml: strings.Replace(header, "steps:\n", "optional: {why: {en: W.}}\nsteps:\n", 1) + step + "    covert: {reason: {en: R.}, max_days: 30} " + marker + "\n",
			want: `journey "fixture" is optional and step "one" is covert`,
		},
		{
			name: "optional step without a reason",
			yaml: header + step + "    optional: {} " + marker + "\n",
			want: `steps[0].optional.why: value is required`,
		},
		{
			name: "break-glass for an unknown agency",
			yaml: header + step + breakGlass("agency: helth "+marker, ""),
			want: `agency "helth" is not in the registry (did you mean "health"?)`,
			at:   "helth",
		},
		{
			name: "break-glass field outside the schema",
			yaml: header + step + breakGlass("agency: health", "fields: [name, adress] "+marker),
			want: `field path "adress": no field "adress"`,
		},
		{
			name: "break-glass without a limit",
			yaml: header + step + strings.Replace(breakGlass("agency: health "+marker, ""), "    max_per_caseworker: 3\n", "", 1),
			want: `break_glass[0].max_per_caseworker: must be greater than or equal to 1`,
		},
		{
			name: "two break-glass rules for one agency",
			yaml: header + step + breakGlass("agency: health", "") + strings.TrimPrefix(breakGlass("agency: health "+marker, ""), "break_glass:\n"),
			want: `agency "health" has two break-glass rules (first at line`,
		},
		{
			name: "break-glass reason code used twice",
			yaml: header + step + strings.Replace(breakGlass("agency: health", ""), "      - code: urgent\n", "      - code: urgent\n        title: {en: U.}\n      - code: urgent "+marker+"\n", 1),
			want: `reason code "urgent" is used twice`,
		},
		{
			name: "rule releases nothing",
			yaml: header + step + "      - dataset: tax.income " + marker + "\n",
			want: `the rule for tax.income releases nothing: list fields or derived facts, or remove it`,
		},
		{
			name: "duplicate dataset in a step",
			yaml: header + step + "      - dataset: population.person " + marker + "\n        fields: [address]\n",
			want: `dataset population.person has two rules in step "one" (first at line 12): merge them`, at: "population.person",
		},
		{
			name: "unknown key",
			yaml: header + strings.Replace(step, "title: {en: One}", "titel: {en: One} "+marker, 1),
			want: `unknown field "titel"`, at: "titel",
		},
		{
			name: "step id pattern",
			yaml: header + strings.Replace(step, "- id: one", "- id: Step_One "+marker, 1),
			want: "steps[0].id: does not match regex pattern",
		},
		{
			name: "schema and semantic findings together",
			yaml: header + strings.Replace(step, "    purpose: {en: Because.}\n", "", 1) + "      - dataset: tax.income " + marker + "\n",
			want: "the rule for tax.income releases nothing",
		},
		{
			name: "YAML syntax error",
			yaml: header + step + "    role: [unclosed " + marker + "\n  - id: two\n",
			want: "invalid YAML",
		},
		{
			name: "all findings of a file are reported",
			yaml: header + strings.Replace(strings.Replace(step, "agency: municipality", "agency: nobody", 1),
				"fields: [name]", "fields: [name, nope] "+marker, 1) + "      - dataset: tax.nothing\n        fields: [x]\n",
			want: `field path "nope"`, atCount: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			descs := tt.descs
			if descs == nil {
				descs = exampleDescriptors()
			}
			le := loadFixture(t, tt.yaml, descs)
			line, col := markedLine(t, tt.yaml, tt.at)
			found := false
			for _, f := range le.Findings {
				if f.File != "journeys/fixture.yaml" {
					t.Errorf("finding in file %q: %v", f.File, f)
				}
				if strings.Contains(f.Message, tt.want) {
					found = true
					if f.Line != line {
						t.Errorf("finding %q at line %d, want %d", f, f.Line, line)
					}
					if col > 0 && f.Column != col {
						t.Errorf("finding %q at column %d, want %d", f, f.Column, col)
					}
				}
			}
			if !found {
				t.Errorf("no finding contains %q; got:\n%v", tt.want, le)
			}
			if tt.atCount > 0 && len(le.Findings) != tt.atCount {
				t.Errorf("%d findings, want %d:\n%v", len(le.Findings), tt.atCount, le)
			}
		})
	}
}

func TestFindingsAcrossFiles(t *testing.T) {
	fsys := realRegistryFS(t)
	fsys["journeys/a.yaml"] = &fstest.MapFile{Data: []byte(strings.Replace(header, "fixture", "a", 1) + strings.Replace(step, "municipality", "x", 1))}
	fsys["journeys/b.yaml"] = &fstest.MapFile{Data: []byte(strings.Replace(header, "fixture", "bee", 1) + step)}
	fsys["journeys/c.yaml"] = &fstest.MapFile{Data: []byte("")}
	reg, err := policy.LoadRegistry(fsys, "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = policy.LoadBundle(fsys, reg, exampleDescriptors())
	want := strings.Join([]string{
		`journeys/a.yaml:7:13: agency "x" is not in the registry`, // no suggestion: nothing is that close
		`journeys/b.yaml:1:5: journey id "bee" does not match the file name: want "b"`,
		`journeys/c.yaml: the file is empty`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("LoadBundle error:\n%v\nwant:\n%s", err, want)
	}
}

func TestNoJourneys(t *testing.T) {
	fsys := realRegistryFS(t)
	reg, err := policy.LoadRegistry(fsys, "registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = policy.LoadBundle(fsys, reg, exampleDescriptors())
	if err == nil || !strings.Contains(err.Error(), "journeys: no journey files") {
		t.Errorf("LoadBundle without journeys = %v", err)
	}
}

const registryBase = `authorities:
  - id: tax
    name: {en: Tax}
    address: 127.0.0.1:7102
    identity: spiffe://aperture.local/authority/tax
    datasets: [income]
agencies:
  - id: municipality
    name: {en: Municipality}
    identity: spiffe://aperture.local/agency/municipality
auditors:
  - id: dpo
    name: {en: DPO}
    identity: spiffe://aperture.local/auditor/dpo
`

func TestRegistryFindings(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{
			"duplicate authority id",
			strings.Replace(registryBase, "agencies:", `  - id: tax `+marker+`
    name: {en: Tax again}
    address: 127.0.0.1:7103
    identity: spiffe://aperture.local/authority/tax2
    datasets: [income]
agencies:`, 1),
			`authority id "tax" is used twice (first at line 2)`,
		},
		{
			"address without port",
			strings.Replace(registryBase, "address: 127.0.0.1:7102", "address: localhost "+marker, 1),
			`address "localhost" is not host:port`,
		},
		{
			"identity without path",
			strings.Replace(registryBase, "identity: spiffe://aperture.local/agency/municipality", "identity: spiffe://aperture.local "+marker, 1),
			`identity "spiffe://aperture.local" is not a SPIFFE id`,
		},
		{
			"identity shared by an agency and an auditor",
			strings.Replace(registryBase, "identity: spiffe://aperture.local/auditor/dpo", "identity: spiffe://aperture.local/agency/municipality "+marker, 1),
			`identity "spiffe://aperture.local/agency/municipality" is already used at line 10`,
		},
		{
			"duplicate agency id",
			strings.Replace(registryBase, "auditors:", `  - id: municipality `+marker+`
    name: {en: Again}
    identity: spiffe://aperture.local/agency/other
auditors:`, 1),
			`id "municipality" is used twice in agencies (first at line 8)`,
		},
		{
			"identity scheme",
			strings.Replace(registryBase, "identity: spiffe://aperture.local/authority/tax", "identity: https://aperture.local/tax "+marker, 1),
			`authorities[0].identity: does not have prefix`,
		},
		{
			"dataset name pattern",
			strings.Replace(registryBase, "datasets: [income]", "datasets: [Income] "+marker, 1),
			`authorities[0].datasets[0]: does not match regex pattern`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.LoadRegistry(fstest.MapFS{"registry.yaml": {Data: []byte(tt.yaml)}}, "registry.yaml")
			var le *policy.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("LoadRegistry = %v, want a *LoadError", err)
			}
			line, _ := markedLine(t, tt.yaml, "")
			found := false
			for _, f := range le.Findings {
				if strings.Contains(f.Message, tt.want) {
					found = true
					if f.Line != line || f.File != "registry.yaml" {
						t.Errorf("finding %q at %s:%d, want registry.yaml:%d", f, f.File, f.Line, line)
					}
				}
			}
			if !found {
				t.Errorf("no finding contains %q; got:\n%v", tt.want, le)
			}
		})
	}
	if _, err := policy.LoadRegistry(fstest.MapFS{"registry.yaml": {Data: []byte(registryBase)}}, "registry.yaml"); err != nil {
		t.Errorf("base registry: %v", err)
	}
	if _, err := policy.LoadRegistry(fstest.MapFS{}, "registry.yaml"); err == nil || !strings.Contains(err.Error(), "read registry") {
		t.Errorf("missing registry: %v", err)
	}
}

func TestVersion(t *testing.T) {
	load := func(fsys fstest.MapFS) string {
		t.Helper()
		reg, err := policy.LoadRegistry(fsys, "registry.yaml")
		if err != nil {
			t.Fatal(err)
		}
		b, err := policy.LoadBundle(fsys, reg, exampleDescriptors())
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^sha256:[0-9a-f]{16}$`).MatchString(b.Version) {
			t.Fatalf("version %q", b.Version)
		}
		return b.Version
	}
	base := func() fstest.MapFS {
		fsys := realRegistryFS(t)
		fsys["journeys/fixture.yaml"] = &fstest.MapFile{Data: []byte(header + step)}
		return fsys
	}
	v1 := load(base())
	if v2 := load(base()); v2 != v1 {
		t.Errorf("same files, versions %s and %s", v1, v2)
	}
	// A comment is policy text too: the version follows the bytes, not the meaning.
	changed := base()
	changed["journeys/fixture.yaml"].Data = append(changed["journeys/fixture.yaml"].Data, "# note\n"...)
	if v := load(changed); v == v1 {
		t.Error("changing a journey kept the version")
	}
	changed = base()
	changed["registry.yaml"].Data = append(changed["registry.yaml"].Data, "# note\n"...)
	if v := load(changed); v == v1 {
		t.Error("changing the registry kept the version")
	}
	// Moving bytes from one file's end to the next file's name must not collide.
	changed = base()
	changed["journeys/other.yaml"] = &fstest.MapFile{Data: []byte(strings.Replace(header, "fixture", "other", 1) + step)}
	if v := load(changed); v == v1 {
		t.Error("adding a journey kept the version")
	}
	// Versions of the real tree are stable across loads.
	if a, b := loadReal(t).Version, loadReal(t).Version; a != b {
		t.Errorf("real policies: versions %s and %s", a, b)
	}
}

// breakGlass is a valid break-glass rule with agency (a YAML "agency: …" line) and, when fields is
// set, that "fields: […]" line instead of the default.
func breakGlass(agency, fields string) string {
	if fields == "" {
		fields = "fields: [name]"
	}
	return `break_glass:
  - ` + agency + `
    purpose: {en: An emergency.}
    legal_basis: Testloven § 2
    reasons:
      - code: urgent
        title: {en: Urgent.}
    releases:
      - dataset: population.person
        ` + fields + `
    max_per_caseworker: 3
    window_hours: 24
`
}
