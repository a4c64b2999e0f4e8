package kit_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

const (
	citizen   = "1403871237"
	noCitizen = "0101010000"
	failing   = "0202020000"
	panicking = "0303030000"
)

var (
	now   = time.Date(2026, time.March, 10, 12, 0, 0, 0, time.UTC)
	birth = timestamppb.New(time.Date(1987, time.March, 14, 0, 0, 0, 0, time.UTC))
)

func person() *populationv1.Person {
	return &populationv1.Person{
		CitizenId:   citizen,
		Name:        &populationv1.Name{GivenNames: "Lars Nørgaard", FamilyName: "Møller"},
		BirthDate:   birth,
		Address:     &populationv1.Address{Street: "Guldbergsgade", HouseNumber: "29", PostalCode: "2200", City: "København N", MunicipalityCode: "0101", MunicipalityName: "København"},
		CivilStatus: populationv1.CivilStatus_CIVIL_STATUS_MARRIED,
		Household: []*populationv1.HouseholdMember{
			{CitizenId: "2501882716", GivenNames: "Maria", Relation: populationv1.Relation_RELATION_SPOUSE},
			{CitizenId: "2702174795", GivenNames: "Emil", Relation: populationv1.Relation_RELATION_CHILD},
		},
	}
}

func services() *municipalityv1.Services {
	return &municipalityv1.Services{
		CitizenId:        citizen,
		MunicipalityCode: "0101",
		BenefitCases: map[string]*municipalityv1.BenefitCase{
			"2025-100001": {Kind: municipalityv1.BenefitKind_BENEFIT_KIND_HOUSING, Status: "granted", MonthlyAmountDkk: 2100, Notes: "internal"},
			"2026-100002": {Kind: municipalityv1.BenefitKind_BENEFIT_KIND_SICKNESS, Status: "open", Notes: "internal"},
		},
	}
}

// testAuthority serves one citizen; a lookup of `failing` fails with an internal error, one of
// `panicking` panics.
func testAuthority() *kit.Authority {
	return &kit.Authority{ID: "testauth", DisplayName: "Test authority", Datasets: []kit.Dataset{
		kit.NewDataset("person", "A person.", func(_ context.Context, id string) (*populationv1.Person, error) {
			switch id {
			case citizen:
				return person(), nil
			case failing:
				return nil, errors.New("register offline")
			case panicking:
				panic("no record layout for " + id) // an architect's bug
			}
			return nil, kit.ErrNotFound
		}),
		kit.NewDataset("services", "Municipal services.", func(_ context.Context, id string) (*municipalityv1.Services, error) {
			if id != citizen {
				return nil, nil // a nil record counts as none
			}
			return services(), nil
		}),
	}}
}

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T) (*kittest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	srv := kittest.Start(t, testAuthority(),
		kit.WithClock(func() time.Time { return now }),
		kit.WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
	return srv, logs
}

func TestDescribe(t *testing.T) {
	srv, _ := start(t)
	resp, err := srv.Client.Describe(context.Background(), &authorityv1.DescribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAuthority() != "testauth" || resp.GetDisplayName() != "Test authority" {
		t.Fatalf("Describe = %s / %s", resp.GetAuthority(), resp.GetDisplayName())
	}
	want := map[string]string{"person": "aperture.population.v1.Person", "services": "aperture.municipality.v1.Services"}
	if len(resp.GetDatasets()) != len(want) {
		t.Fatalf("%d datasets, want %d", len(resp.GetDatasets()), len(want))
	}
	files, err := protodesc.NewFiles(resp.GetDescriptors())
	if err != nil {
		t.Fatalf("descriptor set does not resolve: %v", err)
	}
	for _, d := range resp.GetDatasets() {
		if want[d.GetName()] != d.GetMessage() || d.GetDescription() == "" {
			t.Errorf("dataset %+v", d)
		}
		desc, err := files.FindDescriptorByName(protoreflect.FullName(d.GetMessage()))
		if err != nil {
			t.Fatalf("dataset %s: message %s not in descriptor set: %v", d.GetName(), d.GetMessage(), err)
		}
		if md, ok := desc.(protoreflect.MessageDescriptor); !ok || md.Fields().ByName("citizen_id") == nil {
			t.Errorf("dataset %s: %s is not the record message", d.GetName(), d.GetMessage())
		}
	}
}

func TestFetch(t *testing.T) {
	srv, _ := start(t)
	tests := []struct {
		name    string
		dataset string
		paths   []string
		derived map[string]string // name → expression
		want    proto.Message
		values  map[string]any
	}{
		{
			name: "nested", dataset: "person", paths: []string{"name.given_names", "address.municipality_code", "civil_status"},
			want: &populationv1.Person{
				Name:        &populationv1.Name{GivenNames: "Lars Nørgaard"},
				Address:     &populationv1.Address{MunicipalityCode: "0101"},
				CivilStatus: populationv1.CivilStatus_CIVIL_STATUS_MARRIED,
			},
		},
		{
			name: "repeated", dataset: "person", paths: []string{"household.relation"},
			want: &populationv1.Person{Household: []*populationv1.HouseholdMember{
				{Relation: populationv1.Relation_RELATION_SPOUSE}, {Relation: populationv1.Relation_RELATION_CHILD},
			}},
		},
		{
			name: "whole message field", dataset: "person", paths: []string{"name", "birth_date"},
			want: &populationv1.Person{Name: person().GetName(), BirthDate: birth},
		},
		{
			name: "map", dataset: "services", paths: []string{"benefit_cases.status", "municipality_code"},
			want: &municipalityv1.Services{MunicipalityCode: "0101", BenefitCases: map[string]*municipalityv1.BenefitCase{
				"2025-100001": {Status: "granted"}, "2026-100002": {Status: "open"},
			}},
		},
		{
			name: "derived over the full record", dataset: "person", paths: []string{"address.city"},
			derived: map[string]string{
				"lives_in_copenhagen": `record.address.municipality_code == "0101"`,
				"household_size":      `size(record.household) + 1`,
				"age":                 `(now - record.birth_date).getHours() / 8760`,
				"family_name":         `record.name.family_name`,
			},
			want:   &populationv1.Person{Address: &populationv1.Address{City: "København N"}},
			values: map[string]any{"lives_in_copenhagen": true, "household_size": 3.0, "age": 39.0, "family_name": "Møller"},
		},
		{
			name: "empty mask returns no fields", dataset: "services",
			derived: map[string]string{"open_cases": `record.benefit_cases.filter(k, record.benefit_cases[k].status == "open").size()`},
			want:    &municipalityv1.Services{},
			values:  map[string]any{"open_cases": 1.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := kittest.Request(citizen, tt.dataset, tt.paths...)
			var names []string
			for name, expr := range tt.derived {
				req.Derived = append(req.Derived, &authorityv1.DerivedExpression{Name: name, Expression: expr})
				names = append(names, name)
			}
			resp, err := srv.Client.Fetch(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := resp.GetRecord().UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tt.want, got) {
				t.Errorf("record = {%v}, want {%v}", prototext.Format(got), prototext.Format(tt.want))
			}
			if len(resp.GetDerived()) != len(names) {
				t.Fatalf("%d derived values, want %d", len(resp.GetDerived()), len(names))
			}
			for i, d := range resp.GetDerived() {
				if d.GetName() != names[i] {
					t.Errorf("derived[%d] = %s, want request order (%s)", i, d.GetName(), names[i])
				}
				if got := d.GetValue().AsInterface(); got != tt.values[d.GetName()] {
					t.Errorf("derived %s = %v, want %v", d.GetName(), got, tt.values[d.GetName()])
				}
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	srv, logs := start(t)
	agency := srv.Dial(t, mtls.KindAgency, "municipality")
	withDerived := func(req *authorityv1.FetchRequest, name, expr string) *authorityv1.FetchRequest {
		req.Derived = append(req.Derived, &authorityv1.DerivedExpression{Name: name, Expression: expr})
		return req
	}
	noContext := kittest.Request(citizen, "person")
	noContext.Context = nil
	tests := []struct {
		name     string
		client   authorityv1.AuthorityServiceClient
		req      *authorityv1.FetchRequest
		code     codes.Code
		msgParts []string
	}{
		{"malformed path", nil, kittest.Request(citizen, "person", "name..given_names"), codes.InvalidArgument, []string{"name..given_names"}},
		{"unknown field", nil, kittest.Request(citizen, "person", "address.postal_cod"), codes.InvalidArgument, []string{"address.postal_cod", "did you mean \"postal_code\""}},
		{"path below a leaf", nil, kittest.Request(citizen, "person", "civil_status.x"), codes.InvalidArgument, []string{"civil_status.x"}},
		{"unknown dataset", nil, kittest.Request(citizen, "salary", "x"), codes.NotFound, []string{`"salary"`}},
		{"unknown citizen", nil, kittest.Request(noCitizen, "person", "name"), codes.NotFound, []string{"testauth.person"}},
		{"nil record", nil, kittest.Request(noCitizen, "services"), codes.NotFound, []string{"testauth.services"}},
		{"lookup fails", nil, kittest.Request(failing, "person", "name"), codes.Unavailable, []string{"unavailable"}},
		{"malformed citizen id", nil, kittest.Request("12345", "person", "name"), codes.InvalidArgument, []string{"citizen_id"}},
		{"no access context", nil, noContext, codes.InvalidArgument, []string{"context"}},
		{"expression does not compile", nil, withDerived(kittest.Request(citizen, "person"), "bad", "record.salary > 1"), codes.InvalidArgument, []string{`"bad"`}},
		{"expression of wrong type", nil, withDerived(kittest.Request(citizen, "person"), "born", "record.birth_date"), codes.InvalidArgument, []string{`"born"`}},
		{"runtime error", nil, withDerived(kittest.Request(citizen, "person"), "third", "record.household[2].given_names"), codes.InvalidArgument, []string{"index out of range"}},
		{"duplicate derived name", nil, withDerived(withDerived(kittest.Request(citizen, "person"), "x", "true"), "x", "false"), codes.InvalidArgument, []string{`"x"`}},
		{"not the broker", agency, kittest.Request(citizen, "person", "name"), codes.PermissionDenied, []string{"agency/municipality"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := tt.client
			if client == nil {
				client = srv.Client
			}
			_, err := client.Fetch(context.Background(), tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("Fetch error = %v, want code %v", err, tt.code)
			}
			for _, part := range tt.msgParts {
				if !strings.Contains(status.Convert(err).Message(), part) {
					t.Errorf("error %q does not mention %s", status.Convert(err).Message(), part)
				}
			}
			if strings.Contains(err.Error(), tt.req.GetCitizenId()) || strings.Contains(err.Error(), "Lars") {
				t.Errorf("error %q contains citizen data", err)
			}
		})
	}
	if _, err := agency.Describe(context.Background(), &authorityv1.DescribeRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Describe by an agency: %v, want PermissionDenied", err)
	}

	// The log has a line per fetch, and no citizen id or value in any of them.
	out := logs.String()
	for _, secret := range []string{citizen, noCitizen, failing, "Lars", "Møller", "2501882716"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `"access_id":"acc-test-1"`) || !strings.Contains(out, `"case_id":"case-test-1"`) {
		t.Errorf("log does not name the access and case:\n%s", out)
	}
}

func TestFetchLogsNamesNotValues(t *testing.T) {
	srv, logs := start(t)
	req := kittest.Request(citizen, "person", "name.given_names", "household.citizen_id")
	req.Derived = []*authorityv1.DerivedExpression{{Name: "married", Expression: "record.civil_status == 2"}}
	if _, err := srv.Client.Fetch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{`"dataset":"person"`, `"fields":["name.given_names","household.citizen_id"]`, `"derived":["married"]`, `"access_id":"acc-test-1"`, `"case_id":"case-test-1"`, `"code":"OK"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{citizen, "Lars", "2501882716", "2702174795", "true"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q:\n%s", secret, out)
		}
	}
}

func TestNewServerRejectsBadAuthorities(t *testing.T) {
	broker := kit.WithAllowedCallers("spiffe://aperture.test/broker")
	lookup := func(context.Context, string) (*populationv1.Person, error) { return nil, kit.ErrNotFound }
	good := kit.NewDataset("person", "A person.", lookup)
	tests := []struct {
		name string
		a    *kit.Authority
		opts []kit.Option
	}{
		{"nil", nil, []kit.Option{broker}},
		{"bad id", &kit.Authority{ID: "Tax", Datasets: []kit.Dataset{good}}, []kit.Option{broker}},
		{"no datasets", &kit.Authority{ID: "tax"}, []kit.Option{broker}},
		{"no allowed callers", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{good}}, nil},
		{"bad caller id", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{good}}, []kit.Option{kit.WithAllowedCallers("broker")}},
		{"duplicate dataset", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{good, good}}, []kit.Option{broker}},
		{"bad dataset name", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{{Name: "Income", Message: &populationv1.Person{}, Lookup: good.Lookup}}}, []kit.Option{broker}},
		{"no message", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{{Name: "income", Lookup: good.Lookup}}}, []kit.Option{broker}},
		{"interface type", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{kit.NewDataset("income", "x", func(context.Context, string) (proto.Message, error) { return nil, nil })}}, []kit.Option{broker}},
		{"no lookup", &kit.Authority{ID: "tax", Datasets: []kit.Dataset{{Name: "income", Message: &populationv1.Person{}}}}, []kit.Option{broker}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := kit.NewServer(tt.a, tt.opts...); err == nil {
				t.Fatal("NewServer succeeded")
			}
		})
	}
	if _, err := kit.NewServer(&kit.Authority{ID: "tax", Datasets: []kit.Dataset{good}}, broker); err != nil {
		t.Fatalf("NewServer of a good authority: %v", err)
	}
}

func TestWrongRecordType(t *testing.T) {
	a := &kit.Authority{ID: "confused", Datasets: []kit.Dataset{{
		Name: "person", Message: &populationv1.Person{},
		Lookup: func(context.Context, string) (proto.Message, error) { return services(), nil },
	}}}
	srv := kittest.Start(t, a)
	_, err := srv.Client.Fetch(context.Background(), kittest.Request(citizen, "person", "name"))
	if status.Code(err) != codes.Internal {
		t.Fatalf("Fetch = %v, want Internal", err)
	}
}

func TestHealthAndShutdown(t *testing.T) {
	srv, _ := start(t)
	conn := srv.Conn(t, mtls.KindAgency, "monitoring")
	for _, service := range []string{"", "aperture.authority.v1.AuthorityService"} {
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, %v; want SERVING", service, resp.GetStatus(), err)
		}
	}
}

func TestServeStopsWhenContextEnds(t *testing.T) {
	ca, err := mtls.OpenDevCA(t.TempDir(), kittest.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(mtls.KindAuthority, "testauth")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kit.NewServer(testAuthority(), kit.WithAllowedCallers(mtls.ID(kittest.TrustDomain, mtls.KindBroker, "")), kit.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, mtls.ServerConfig(src)) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if err := srv.Serve(context.Background(), lis, nil); err == nil {
		t.Fatal("Serve without TLS configuration succeeded")
	}
}

// A panic in an architect's lookup answers that call Internal, shows and logs nothing of the panic's
// value, and the authority goes on serving.
func TestLookupPanicIsInternal(t *testing.T) {
	srv, logs := start(t)
	_, err := srv.Client.Fetch(context.Background(), kittest.Request(panicking, "person", "name"))
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("Fetch with a panicking lookup = %v %q, want Internal \"internal error\"", st.Code(), st.Message())
	}
	if _, err := srv.Client.Fetch(context.Background(), kittest.Request(citizen, "person", "name")); err != nil {
		t.Fatalf("after the panic the authority does not serve: %v", err)
	}
	out := logs.String()
	for _, want := range []string{"panic in a call", `"panic_type":"string"`, "testAuthority", `"code":"Internal"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, panicking) {
		t.Errorf("log shows the citizen id from the panic:\n%s", out)
	}
}
