package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// copyRepo copies the repository (without .git and the dev stack's state) into dst, so that a test
// may change it freely. Go's build and module caches are the user's, shared with the copy.
func copyRepo(t *testing.T, dst string) {
	t.Helper()
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if name := d.Name(); rel != "." && (strings.HasPrefix(name, ".") || name == "testdata-artifacts") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, ".test") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeHash hashes every file under dir (names and contents), to prove that a change left it alone.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Write([]byte(rel + "\x00"))
		h.Write(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestNewAuthority is the architect's path of services/ADDING_AN_AUTHORITY.md, in a copy of the
// repository, for an authority the repository does not have: a motor-vehicle register with a journey
// that uses a derived fact over the citizen's vehicles. It scaffolds with `aperture new authority`,
// checks that the scaffold alone keeps the tests green, writes the proto, the lookup, the journey, its
// policy tests and truth tables, and then runs buf lint, policy lint, policy test, go vet ./... and
// go test over every package a new authority can affect — with no file under broker/ or cmd/ changed.
//
// (It runs go test over broker/policy, broker/release, broker/citizen, services/ and policies/, not
// ./...: the copy's cmd/aperture holds this test and the browser end-to-end tests, and running them
// again would double `make test`. go vet ./... compiles every package of the copy, tests included.)
func TestNewAuthority(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed to build the scaffolded authority: %v", err)
	}
	repo := t.TempDir()
	copyRepo(t, repo)
	brokerHash, cmdHash := treeHash(t, filepath.Join(repo, "broker")), treeHash(t, filepath.Join(repo, "cmd"))

	// The standard library and the modules come from the shared build cache; the copy's own packages
	// (a new directory) are compiled once, by the first command.
	env := os.Environ()
	run := func(name string, args ...string) string {
		t.Helper()
		start := time.Now()
		defer func() { t.Logf("%s %s: %s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond)) }()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = repo, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	write := func(name, text string) {
		t.Helper()
		if strings.HasSuffix(name, ".go") {
			src, err := format.Source([]byte(text))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			text = string(src)
		}
		if err := os.WriteFile(filepath.Join(repo, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// 0. Scaffold. It generates the Go code, lists the authority in the catalog, and its output is
	// gofmt-clean and passes the tests of what it touched as it stands.
	aperture(t, 2, "new", "authority", "vehicles", "--repo", repo) // the display names are required
	out := aperture(t, 0, "new", "authority", "vehicles", "--dataset", "register", "--port", "7107", "--repo", repo,
		"--name-en", "Motor Vehicle Register (Danish Motor Vehicle Agency)", "--name-da", "Motorregistret (Motorstyrelsen)")
	for _, want := range []string{"proto/aperture/vehicles/v1/vehicles.proto", "services/vehicles/vehicles.go", "policies/tests/vehicles.yaml",
		"registry.yaml (entry added)", "catalog.go (listed)", "generated proto/aperture/vehicles/v1/vehicles.pb.go",
		"deploy/k8s/authorities.yaml (Service and Deployment added)", "deploy/k8s/broker.yaml (--authority-addresses)"} {
		if !strings.Contains(out, want) {
			t.Errorf("new authority output lacks %q:\n%s", want, out)
		}
	}
	if gofmt := run("gofmt", "-l", "services"); gofmt != "" {
		t.Errorf("the scaffold is not gofmt-clean:\n%s", gofmt)
	}
	reg, err := os.ReadFile(filepath.Join(repo, "policies", "registry.yaml"))
	if err != nil || !strings.Contains(string(reg), `da: "Motorregistret (Motorstyrelsen)"`) {
		t.Errorf("registry entry without the Danish name (%v)", err)
	}
	run("go", "test", "-count=1", "./services/vehicles/", "./services/catalog/", "./broker/policy/...")
	out = aperture(t, 0, "policy", "lint", filepath.Join(repo, "policies"))
	if !strings.Contains(out, `warning: authority "vehicles" is used by no step`) || !strings.Contains(out, "0 errors, 1 warning") {
		t.Errorf("lint after scaffolding printed:\n%s", out)
	}
	aperture(t, 1, "new", "authority", "vehicles", "--name-en", "x", "--name-da", "x", "--repo", repo) // nothing is overwritten
	aperture(t, 2, "new", "authority", "Vehi-cles", "--name-en", "x", "--name-da", "x", "--repo", repo)
	aperture(t, 2, "new", "thing", "x")

	// 1. The contract.
	write("proto/aperture/vehicles/v1/vehicles.proto", vehiclesProto)
	run("go", "tool", "buf", "lint")
	run("go", "tool", "buf", "generate", "--path", "proto/aperture/vehicles")
	// 2. The lookup, and its test through the kit over mTLS.
	write("services/vehicles/vehicles.go", vehiclesService)
	write("services/vehicles/vehicles_test.go", vehiclesServiceTest)
	// 3. The journey; 4. its policy tests and the truth tables of its facts.
	write("policies/journeys/vehicle-grant.yaml", vehicleJourney)
	write("policies/tests/vehicle-grant.yaml", vehicleTests)

	// The policy tools know schemas from the catalog compiled into the command, so from here on the
	// copy's own command runs them, as `go run ./cmd/aperture` would for the architect.
	run("go", "build", "-o", "aperture.bin", "./cmd/aperture")
	cli := func(args ...string) string { t.Helper(); return run("./aperture.bin", args...) }
	out = cli("policy", "lint", "policies")
	if !strings.Contains(out, "0 errors, 0 warnings") {
		t.Errorf("policy lint printed:\n%s", out)
	}
	out = cli("policy", "test", "-v", "policies")
	for _, want := range []string{"vehicle-grant: an adapted car", "vehicle-grant: the registration number stays at the register", ", 0 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy test lacks %q:\n%s", want, out)
		}
	}
	out = cli("policy", "explain", "--dir", "policies", "vehicle-grant")
	if !strings.Contains(out, "reads    vehicles.adapted_for_disability, vehicles.deregistered_on") {
		t.Errorf("explain does not show what the fact reads:\n%s", out)
	}
	run("go", "vet", "./...")
	// go test over every package the new authority can affect: each one whose build, tests included,
	// depends on a package the authority added or changed (computed, not listed). The others are
	// byte-for-byte the packages this repository's own `go test ./...` runs. Of cmd/aperture, whose
	// whole suite includes this test, the end-to-end tests that walk every journey and refusal run.
	affected := affectedPackages(t, run, "github.com/aperture-gov/aperture/services/vehicles",
		"github.com/aperture-gov/aperture/proto/aperture/vehicles/v1", "github.com/aperture-gov/aperture/services/catalog",
		"github.com/aperture-gov/aperture/policies")
	if !slices.Contains(affected, "github.com/aperture-gov/aperture/broker/citizen") || !slices.Contains(affected, "github.com/aperture-gov/aperture/cmd/aperture") {
		t.Fatalf("the affected packages miss ones that describe every authority: %v", affected)
	}
	affected = slices.DeleteFunc(affected, func(p string) bool { return p == "github.com/aperture-gov/aperture/cmd/aperture" })
	t.Logf("%d packages depend on the new authority", len(affected)+1)
	run("go", append([]string{"test", "-count=1"}, affected...)...)
	run("go", "test", "-count=1", "-run", "^(TestJourneysEndToEnd|TestMinimalDisclosureExhaustive|TestRefusals|TestCLIWalkthrough)$", "./cmd/aperture/")

	if err := os.Remove(filepath.Join(repo, "aperture.bin")); err != nil {
		t.Fatal(err)
	}
	if treeHash(t, filepath.Join(repo, "broker")) != brokerHash || treeHash(t, filepath.Join(repo, "cmd")) != cmdHash {
		t.Error("adding an authority changed a file under broker/ or cmd/")
	}
}

const vehiclesProto = `syntax = "proto3";

// Package aperture.vehicles.v1 holds the datasets of the motor vehicle register: the vehicles a
// citizen owns. Registration numbers identify a car and its owner, so journeys ask facts about them.
package aperture.vehicles.v1;

import "aperture/authority/v1/labels.proto";
import "google/protobuf/timestamp.proto";

option go_package = "github.com/aperture-gov/aperture/proto/aperture/vehicles/v1;vehiclesv1";

// Register is dataset "vehicles.register": the vehicles registered to one citizen.
message Register {
  option (aperture.authority.v1.message_label) = {
    en: "Registered vehicles"
    da: "Registrerede køretøjer"
  };
  // National identity number (10 digits) of the owner.
  string citizen_id = 1 [(aperture.authority.v1.field_label) = {
    en: "CPR number"
    da: "CPR-nummer"
  }];
  // The vehicles the citizen owns or has owned.
  repeated Vehicle vehicles = 2 [(aperture.authority.v1.field_label) = {
    en: "Vehicles"
    da: "Køretøjer"
  }];
}

// Vehicle is one registered vehicle.
message Vehicle {
  // The number plate, e.g. "AB 12 345".
  string registration_number = 1 [(aperture.authority.v1.field_label) = {
    en: "Registration number"
    da: "Registreringsnummer"
  }];
  // Make and model, e.g. "Volkswagen Caddy".
  string make_and_model = 2 [(aperture.authority.v1.field_label) = {
    en: "Make and model"
    da: "Mærke og model"
  }];
  // The first registration in Denmark.
  google.protobuf.Timestamp first_registered = 3 [(aperture.authority.v1.field_label) = {
    en: "First registered"
    da: "Første registrering"
  }];
  // Set when the vehicle left the register (sold abroad, scrapped); unset while registered.
  google.protobuf.Timestamp deregistered_on = 4 [(aperture.authority.v1.field_label) = {
    en: "Deregistered on"
    da: "Afmeldt den"
  }];
  // The vehicle is adapted for a driver or passenger with a disability.
  bool adapted_for_disability = 5 [(aperture.authority.v1.field_label) = {
    en: "Adapted for a disability"
    da: "Indrettet til et handicap"
  }];
}
`

const vehiclesService = `// Package vehicles is the motor vehicle register. It serves dataset "register": the vehicles a
// citizen owns, derived from the demo population in development.
package vehicles

import (
	"context"
	"fmt"
	"hash/fnv"

	vehiclesv1 "github.com/aperture-gov/aperture/proto/aperture/vehicles/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug, as policies and certificates name it.
const ID = "vehicles"

// New returns the register serving pop. Every citizen has a record; one without a car has none in it.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "Motor Vehicle Register (Danish Motor Vehicle Agency)", Datasets: []kit.Dataset{
		kit.NewDataset("register", "The vehicles registered to the citizen: plate, make and model, registration dates, adaptation.",
			func(_ context.Context, id string) (*vehiclesv1.Register, error) {
				c, ok := pop.Citizen(id)
				if !ok {
					return nil, kit.ErrNotFound
				}
				r := &vehiclesv1.Register{CitizenId: c.ID}
				h := fnv.New32a()
				h.Write([]byte(c.ID))
				n := h.Sum32()
				for i := range n % 3 {
					r.Vehicles = append(r.Vehicles, &vehiclesv1.Vehicle{
						RegistrationNumber:   fmt.Sprintf("A%c %02d %03d", 'A'+rune(n%26), n%100, (n>>8+uint32(i))%1000),
						MakeAndModel:         "Volkswagen Caddy",
						FirstRegistered:      kit.Timestamp(pop.Ref().AddDate(-int(i)-2, 0, 0)),
						AdaptedForDisability: n%7 == 0,
					})
				}
				return r, nil
			}),
	}}
}
`

const vehiclesServiceTest = `package vehicles_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vehiclesv1 "github.com/aperture-gov/aperture/proto/aperture/vehicles/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/vehicles"
)

// TestRegister fetches through the kit over mTLS: only the masked field comes back, and an unknown
// citizen is NotFound.
func TestRegister(t *testing.T) {
	pop := demo.New(30, time.Now())
	srv := kittest.Start(t, vehicles.New(pop))
	for _, id := range pop.IDs() {
		_, rec := srv.Fetch(t, kittest.Request(id, "register", "vehicles.make_and_model"))
		r := rec.(*vehiclesv1.Register)
		for _, v := range r.GetVehicles() {
			if v.GetRegistrationNumber() != "" || v.GetMakeAndModel() == "" || r.GetCitizenId() != "" {
				t.Fatalf("masked record %v", r)
			}
		}
	}
	_, err := srv.Client.Fetch(context.Background(), kittest.Request("3112999999", "register"))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown citizen: %v, want NotFound", err)
	}
}
`

const vehicleJourney = `# Grant towards an adapted car (støtte til handicapbil): the municipality checks whether the citizen
# already has an adapted car, assesses the application, and Udbetaling Danmark pays.
id: vehicle-grant
title:
  en: Grant towards an adapted car
  da: Støtte til handicapbil
description:
  en: You apply for a grant towards a car adapted to your disability. Your municipality checks the cars you own and decides.
  da: Du søger om støtte til en bil, der er indrettet til dit handicap. Din kommune tjekker de biler, du ejer, og træffer afgørelse.
steps:
  - id: apply
    title: {en: Apply, da: Ansøg}
    agency: municipality
    role: disability-caseworker
    purpose:
      en: The municipality learns only whether you already own an adapted car and how many cars you own — not which.
      da: Kommunen får kun at vide, om du allerede ejer en handicapbil, og hvor mange biler du ejer — ikke hvilke.
    legal_basis: Serviceloven § 114
    releases:
      - dataset: vehicles.register
        derived:
          - name: owns_adapted_vehicle
            description:
              en: The citizen owns a registered vehicle adapted for a disability.
              da: Borgeren ejer et indregistreret køretøj, der er indrettet til et handicap.
            type: bool
            expression: record.vehicles.exists(v, v.adapted_for_disability && !has(v.deregistered_on))
          - name: vehicles_owned
            description:
              en: How many registered vehicles the citizen owns (at most 20 is reported as 20).
              da: Hvor mange indregistrerede køretøjer borgeren ejer (over 20 angives som 20).
            type: int
            range: {min: 0, max: 20}
            expression: >-
              record.vehicles.filter(v, !has(v.deregistered_on)).size() > 20 ? 20
                : record.vehicles.filter(v, !has(v.deregistered_on)).size()
      - dataset: population.person
        fields: [name.given_names, name.family_name]
  - id: assess
    title: {en: Assess the application, da: Vurdér ansøgningen}
    agency: municipality
    role: disability-caseworker
    purpose:
      en: To assess the application, the municipality sees the make and age of the cars you own, with your consent.
      da: For at vurdere ansøgningen ser kommunen mærke og alder på de biler, du ejer, med dit samtykke.
    legal_basis: Serviceloven § 114 og bekendtgørelse om støtte til køb af bil
    consent: {required: true, default_days: 30, max_days: 90}
    releases:
      - dataset: vehicles.register
        fields: [vehicles.make_and_model, vehicles.first_registered]
  - id: pay
    title: {en: Pay the grant, da: Udbetal støtten}
    agency: payments
    role: payments-officer
    purpose:
      en: Udbetaling Danmark pays the grant and sees your name, nothing about your cars.
      da: Udbetaling Danmark udbetaler støtten og ser dit navn, intet om dine biler.
    legal_basis: Lov om Udbetaling Danmark § 2
    releases:
      - dataset: population.person
        fields: [name.given_names, name.family_name]
`

const vehicleTests = `journey: vehicle-grant
tests:
  - name: the facts, not the cars
    step: apply
    agency: municipality
    request: {dataset: vehicles.register}
    expect:
      released: {derived: [owns_adapted_vehicle, vehicles_owned]}
  - name: the registration number stays at the register
    step: apply
    agency: municipality
    request: {dataset: vehicles.register, fields: [vehicles.registration_number]}
    expect:
      refused: {code: PermissionDenied, reason: 'field "vehicles.registration_number" of vehicles.register is not released'}
  - name: the cars only with consent
    step: assess
    agency: municipality
    request: {dataset: vehicles.register}
    expect:
      refused: {code: FailedPrecondition, reason: needs the citizen's consent}
  - name: with consent, make and age
    step: assess
    agency: municipality
    consent: given
    request: {dataset: vehicles.register}
    expect:
      released: {fields: [vehicles.first_registered, vehicles.make_and_model]}
  - name: the payer sees no car
    step: pay
    agency: payments
    request: {dataset: vehicles.register}
    expect:
      refused: {code: PermissionDenied, reason: 'dataset vehicles.register is not released at step "pay"'}
now: 2026-03-10T12:00:00Z
facts:
  - name: an adapted car
    fact: owns_adapted_vehicle
    record: {vehicles: [{make_and_model: Ford Focus}, {adapted_for_disability: true}]}
    want: true
  - name: an adapted car, deregistered
    fact: owns_adapted_vehicle
    record: {vehicles: [{adapted_for_disability: true, deregistered_on: "2025-01-01T00:00:00Z"}]}
    want: false
  - name: no car
    fact: owns_adapted_vehicle
    record: {}
    want: false
  - name: two cars, one deregistered
    fact: vehicles_owned
    record: {vehicles: [{}, {}, {deregistered_on: "2025-01-01T00:00:00Z"}]}
    want: 2
`

// affectedPackages lists the packages of the module whose build or tests depend on any of changed.
func affectedPackages(t *testing.T, run func(string, ...string) string, changed ...string) []string {
	t.Helper()
	// -test lists each package's test variants with their transitive dependencies, test imports included.
	out := run("go", "list", "-test", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "./...")
	seen := map[string]bool{}
	var pkgs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		// "p", "p [p.test]", "p_test [p.test]" (external tests) and "p.test" all stand for package p.
		pkg := strings.TrimSuffix(strings.TrimSuffix(fields[0], ".test"), "_test")
		hit := slices.Contains(changed, pkg)
		for _, d := range fields[1:] {
			if slices.Contains(changed, d) {
				hit = true
				break
			}
		}
		if hit && !seen[pkg] {
			seen[pkg] = true
			pkgs = append(pkgs, pkg)
		}
	}
	slices.Sort(pkgs)
	return pkgs
}
