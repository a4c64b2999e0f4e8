package fieldmask_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	healthv1 "github.com/aperture-gov/aperture/proto/aperture/health/v1"
	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
)

var (
	personMD   = (&populationv1.Person{}).ProtoReflect().Descriptor()
	servicesMD = (&municipalityv1.Services{}).ProtoReflect().Descriptor()
	patientMD  = (&healthv1.Patient{}).ProtoReflect().Descriptor()
)

func ts(y int, m time.Month, d int) *timestamppb.Timestamp {
	return timestamppb.New(time.Date(y, m, d, 0, 0, 0, 0, time.UTC))
}

func person() *populationv1.Person {
	return &populationv1.Person{
		CitizenId: "0101901234",
		Name:      &populationv1.Name{GivenNames: "Freja", FamilyName: "Jensen"},
		BirthDate: ts(1990, 1, 1),
		Address: &populationv1.Address{
			Street: "Vesterbrogade", HouseNumber: "12", Unit: "2. tv.", PostalCode: "1620",
			City: "København V", MunicipalityCode: "0101", MunicipalityName: "København", MovedInOn: ts(2020, 5, 1),
		},
		CivilStatus: populationv1.CivilStatus_CIVIL_STATUS_MARRIED,
		Household: []*populationv1.HouseholdMember{
			{CitizenId: "0202851234", GivenNames: "Mads", Relation: populationv1.Relation_RELATION_SPOUSE, BirthDate: ts(1985, 2, 2)},
			{CitizenId: "0303151234", GivenNames: "Ida", Relation: populationv1.Relation_RELATION_CHILD, BirthDate: ts(2015, 3, 3)},
		},
		PreviousAddresses: []*populationv1.Address{{Street: "Nørrebrogade", City: "København N"}},
	}
}

func services() *municipalityv1.Services {
	return &municipalityv1.Services{
		CitizenId:        "0101901234",
		MunicipalityCode: "0101",
		BenefitCases: map[string]*municipalityv1.BenefitCase{
			"2024-0001": {Kind: municipalityv1.BenefitKind_BENEFIT_KIND_SICKNESS, OpenedOn: ts(2024, 3, 1), Status: "open", MonthlyAmountDkk: 19000, Notes: "internal"},
			"2023-0042": {Kind: municipalityv1.BenefitKind_BENEFIT_KIND_HOUSING, Status: "closed"},
		},
		Daycare: []*municipalityv1.DaycarePlacement{{ChildCitizenId: "0303151234", InstitutionName: "Solstrålen", WeeklyHours: 35}},
		Schools: []*municipalityv1.SchoolEnrolment{{ChildCitizenId: "0303151234", SchoolName: "Vesterbro Skole", Grade: 3}},
	}
}

func patient() *healthv1.Patient {
	return &healthv1.Patient{
		CitizenId: "0101901234",
		Gp:        &healthv1.GeneralPractitioner{ClinicId: "C1", ClinicName: "Lægehuset", MunicipalityCode: "0101"},
		SickNotes: []*healthv1.SickNote{
			{Id: "n1", IssuedOn: ts(2024, 3, 1), DiagnosisCode: "M54.5", ExpectedDurationDays: 30, WorkCapacityPercent: 0, ClinicId: "C1"},
			{Id: "n2", IssuedOn: ts(2023, 1, 1), DiagnosisCode: "J06.9", ExpectedDurationDays: 5, WorkCapacityPercent: 50, ClinicId: "C1"},
		},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		md      protoreflect.MessageDescriptor
		path    string
		wantErr string // substring; "" = valid
		suggest string
		segment string
	}{
		{personMD, "citizen_id", "", "", ""},
		{personMD, "address", "", "", ""},
		{personMD, "address.city", "", "", ""},
		{personMD, "address.moved_in_on", "", "", ""},
		{personMD, "birth_date", "", "", ""},
		{personMD, "household.relation", "", "", ""},
		{personMD, "household.birth_date", "", "", ""},
		{personMD, "previous_addresses.municipality_code", "", "", ""},
		{servicesMD, "benefit_cases", "", "", ""},
		{servicesMD, "benefit_cases.status", "", "", ""},
		{servicesMD, "benefit_cases.opened_on", "", "", ""},
		{patientMD, "sick_notes.work_capacity_percent", "", "", ""},
		{patientMD, "gp.clinic_name", "", "", ""},

		{personMD, "", "empty path", "", ""},
		{personMD, "address.", "empty segment", "", ""},
		{personMD, ".address", "empty segment", "", ""},
		{personMD, "adress", `no field "adress" in aperture.population.v1.Person`, "address", "adress"},
		{personMD, "address.cty", `no field "cty" in aperture.population.v1.Address`, "city", "cty"},
		{personMD, "address.municipalityCode", `no field "municipalityCode"`, "municipality_code", "municipalityCode"},
		{personMD, "household.relations", `no field "relations" in aperture.population.v1.HouseholdMember`, "relation", "relations"},
		{personMD, "xyzzy_plugh", `no field "xyzzy_plugh"`, "", "xyzzy_plugh"},
		{personMD, "birth_date.seconds", `field "birth_date" of aperture.population.v1.Person is a well-known type (google.protobuf.Timestamp) and has no sub-field "seconds"`, "", "seconds"},
		{personMD, "citizen_id.x", `field "citizen_id" of aperture.population.v1.Person is a string and has no sub-field "x"`, "", "x"},
		{personMD, "civil_status.x", "is a enum", "", "x"},
		{servicesMD, "benefit_cases.kind.x", "is a enum", "", "x"},
		{servicesMD, "benefit_cases.opened_on.nanos", "well-known type", "", "nanos"},
		{patientMD, "sick_notes.diagnosis", `no field "diagnosis" in aperture.health.v1.SickNote`, "diagnosis_code", "diagnosis"},
		{patientMD, "sick_notes.issued", `no field "issued"`, "issued_on", "issued"},
		{patientMD, "sick", `no field "sick"`, "sick_notes", "sick"},
		{patientMD, "gp.clinic", `no field "clinic"`, "clinic_id", "clinic"},
	}
	for _, tt := range tests {
		t.Run(string(tt.md.Name())+"/"+tt.path, func(t *testing.T) {
			err := fieldmask.Validate(tt.md, tt.path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate(%q) = %v, want nil", tt.path, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%q) = nil, want error containing %q", tt.path, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate(%q) = %q, want it to contain %q", tt.path, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), `"`+tt.path+`"`) {
				t.Errorf("Validate(%q) = %q, want it to name the path", tt.path, err)
			}
			var pe *fieldmask.PathError
			if !errors.As(err, &pe) {
				t.Fatalf("Validate(%q) error %T is not a *PathError", tt.path, err)
			}
			if pe.Suggestion != tt.suggest {
				t.Errorf("Suggestion = %q, want %q", pe.Suggestion, tt.suggest)
			}
			if tt.suggest != "" && !strings.Contains(err.Error(), `did you mean "`+tt.suggest+`"?`) {
				t.Errorf("error %q does not suggest %q", err, tt.suggest)
			}
			if pe.Segment != tt.segment {
				t.Errorf("Segment = %q, want %q", pe.Segment, tt.segment)
			}
		})
	}
}

func TestLeaves(t *testing.T) {
	tests := []struct {
		md   protoreflect.MessageDescriptor
		want []string
	}{
		{personMD, []string{
			"citizen_id", "name.given_names", "name.family_name", "birth_date",
			"address.street", "address.house_number", "address.unit", "address.postal_code", "address.city",
			"address.municipality_code", "address.municipality_name", "address.moved_in_on",
			"civil_status",
			"household.citizen_id", "household.given_names", "household.relation", "household.birth_date",
			"previous_addresses.street", "previous_addresses.house_number", "previous_addresses.unit",
			"previous_addresses.postal_code", "previous_addresses.city", "previous_addresses.municipality_code",
			"previous_addresses.municipality_name", "previous_addresses.moved_in_on",
			"children_in_custody.citizen_id", "children_in_custody.given_names", "children_in_custody.birth_date",
		}},
		{servicesMD, []string{
			"citizen_id", "municipality_code",
			"benefit_cases.kind", "benefit_cases.opened_on", "benefit_cases.status", "benefit_cases.monthly_amount_dkk", "benefit_cases.notes",
			"daycare.child_citizen_id", "daycare.institution_name", "daycare.start_date", "daycare.weekly_hours",
			"schools.child_citizen_id", "schools.school_name", "schools.grade",
		}},
		{patientMD, []string{
			"citizen_id", "gp.clinic_id", "gp.clinic_name", "gp.municipality_code",
			"sick_notes.id", "sick_notes.issued_on", "sick_notes.diagnosis_code", "sick_notes.expected_duration_days",
			"sick_notes.work_capacity_percent", "sick_notes.clinic_id",
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.md.Name()), func(t *testing.T) {
			got := fieldmask.Leaves(tt.md)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Leaves =\n%q\nwant\n%q", got, tt.want)
			}
			for _, p := range got {
				if err := fieldmask.Validate(tt.md, p); err != nil {
					t.Errorf("leaf %q does not validate: %v", p, err)
				}
			}
		})
	}
}

// recursiveMD builds a self-referencing message type (Node { string name = 1; Node child = 2;
// repeated Node kids = 3; map<string, Node> by_name = 4; }) as a dynamic descriptor.
func recursiveMD(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("test/node.proto"),
		Package: proto.String("test"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Node"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("name"), Number: proto.Int32(1), Label: opt, Type: str, JsonName: proto.String("name")},
				{Name: proto.String("child"), Number: proto.Int32(2), Label: opt, Type: msg, TypeName: proto.String(".test.Node"), JsonName: proto.String("child")},
				{Name: proto.String("kids"), Number: proto.Int32(3), Label: rep, Type: msg, TypeName: proto.String(".test.Node"), JsonName: proto.String("kids")},
				{Name: proto.String("by_name"), Number: proto.Int32(4), Label: rep, Type: msg, TypeName: proto.String(".test.Node.ByNameEntry"), JsonName: proto.String("byName")},
			},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name:    proto.String("ByNameEntry"),
				Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				Field: []*descriptorpb.FieldDescriptorProto{
					{Name: proto.String("key"), Number: proto.Int32(1), Label: opt, Type: str, JsonName: proto.String("key")},
					{Name: proto.String("value"), Number: proto.Int32(2), Label: opt, Type: msg, TypeName: proto.String(".test.Node"), JsonName: proto.String("value")},
				},
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatalf("build descriptor: %v", err)
	}
	return fd.Messages().ByName("Node")
}

func TestLeavesRecursionBounded(t *testing.T) {
	md := recursiveMD(t)
	got := fieldmask.Leaves(md)
	// 3 message fields fan out per level: 1 + 3 + 9 + … names, bounded by depth 8.
	if len(got) == 0 || len(got) > 10000 {
		t.Fatalf("Leaves returned %d paths", len(got))
	}
	deepest := 0
	for _, p := range got {
		deepest = max(deepest, strings.Count(p, ".")+1)
		if err := fieldmask.Validate(md, p); err != nil {
			t.Errorf("leaf %q does not validate: %v", p, err)
		}
	}
	if deepest != 8 {
		t.Errorf("deepest leaf has %d segments, want 8", deepest)
	}
	if got[0] != "name" || got[1] != "child.name" {
		t.Errorf("Leaves starts %q, want name, child.name", got[:2])
	}
}

func TestCovers(t *testing.T) {
	allowed := []string{"address", "household.relation", "sick_notes.issued_on"}
	tests := []struct {
		path string
		want bool
	}{
		{"address", true},
		{"address.city", true},
		{"address.moved_in_on", true},
		{"addresses", false},
		{"address_x", false},
		{"household", false},
		{"household.relation", true},
		{"household.relation_x", false},
		{"household.birth_date", false},
		{"sick_notes.issued_on", true},
		{"sick_notes", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := fieldmask.Covers(allowed, tt.path); got != tt.want {
			t.Errorf("Covers(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
	if fieldmask.Covers(nil, "address") {
		t.Error("empty set covers a path")
	}
	if fieldmask.Covers([]string{""}, "address") {
		t.Error(`"" covers a path`)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{"b", "a", "b"}, []string{"a", "b"}},
		{[]string{"address.city", "address", "address.street"}, []string{"address"}},
		{[]string{"address.city", "address_x", "address.street"}, []string{"address.city", "address.street", "address_x"}},
		{[]string{"a.b.c", "a-b", "a", ""}, []string{"a", "a-b"}},
		{[]string{"sick_notes.issued_on", "sick_notes.work_capacity_percent"}, []string{"sick_notes.issued_on", "sick_notes.work_capacity_percent"}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		got := fieldmask.Normalize(tt.in)
		if !slices.Equal(got, tt.want) {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("Normalize modified its input")
		}
	}
}

func TestApplyAndExtra(t *testing.T) {
	tests := []struct {
		name  string
		msg   func() proto.Message
		paths []string
		want  func() proto.Message
		extra []string // Extra of the original message
	}{
		{
			name: "person/address municipality", msg: func() proto.Message { return person() },
			paths: []string{"address.municipality_code"},
			want: func() proto.Message {
				return &populationv1.Person{Address: &populationv1.Address{MunicipalityCode: "0101"}}
			},
			extra: []string{
				"address.city", "address.house_number", "address.moved_in_on", "address.municipality_name",
				"address.postal_code", "address.street", "address.unit", "birth_date", "citizen_id", "civil_status",
				"household.birth_date", "household.citizen_id", "household.given_names", "household.relation",
				"name.family_name", "name.given_names", "previous_addresses.city", "previous_addresses.street",
			},
		},
		{
			name: "person/whole address and household relations", msg: func() proto.Message { return person() },
			paths: []string{"address", "household.relation", "household.birth_date"},
			want: func() proto.Message {
				p := person()
				return &populationv1.Person{Address: p.Address, Household: []*populationv1.HouseholdMember{
					{Relation: populationv1.Relation_RELATION_SPOUSE, BirthDate: ts(1985, 2, 2)},
					{Relation: populationv1.Relation_RELATION_CHILD, BirthDate: ts(2015, 3, 3)},
				}}
			},
			extra: []string{
				"birth_date", "citizen_id", "civil_status", "household.citizen_id", "household.given_names",
				"name.family_name", "name.given_names", "previous_addresses.city", "previous_addresses.street",
			},
		},
		{
			name: "person/everything", msg: func() proto.Message { return person() },
			paths: fieldmask.Leaves(personMD),
			want:  func() proto.Message { return person() },
		},
		{
			name: "person/nothing", msg: func() proto.Message { return person() },
			paths: nil,
			want:  func() proto.Message { return &populationv1.Person{} },
			extra: []string{
				"address.city", "address.house_number", "address.moved_in_on", "address.municipality_code",
				"address.municipality_name", "address.postal_code", "address.street", "address.unit", "birth_date",
				"citizen_id", "civil_status", "household.birth_date", "household.citizen_id", "household.given_names",
				"household.relation", "name.family_name", "name.given_names", "previous_addresses.city",
				"previous_addresses.street",
			},
		},
		{
			name: "person/path into a timestamp covers nothing", msg: func() proto.Message { return person() },
			paths: []string{"birth_date.seconds", "citizen_id"},
			want:  func() proto.Message { return &populationv1.Person{CitizenId: "0101901234"} },
			extra: []string{
				"address.city", "address.house_number", "address.moved_in_on", "address.municipality_code",
				"address.municipality_name", "address.postal_code", "address.street", "address.unit", "birth_date",
				"civil_status", "household.birth_date", "household.citizen_id", "household.given_names",
				"household.relation", "name.family_name", "name.given_names", "previous_addresses.city",
				"previous_addresses.street",
			},
		},
		{
			name: "services/map values", msg: func() proto.Message { return services() },
			paths: []string{"benefit_cases.kind", "benefit_cases.status", "schools.grade"},
			want: func() proto.Message {
				return &municipalityv1.Services{
					BenefitCases: map[string]*municipalityv1.BenefitCase{
						"2024-0001": {Kind: municipalityv1.BenefitKind_BENEFIT_KIND_SICKNESS, Status: "open"},
						"2023-0042": {Kind: municipalityv1.BenefitKind_BENEFIT_KIND_HOUSING, Status: "closed"},
					},
					Schools: []*municipalityv1.SchoolEnrolment{{Grade: 3}},
				}
			},
			extra: []string{
				"benefit_cases.monthly_amount_dkk", "benefit_cases.notes", "benefit_cases.opened_on", "citizen_id",
				"daycare.child_citizen_id", "daycare.institution_name", "daycare.weekly_hours", "municipality_code",
				"schools.child_citizen_id", "schools.school_name",
			},
		},
		{
			name: "patient/sick notes without diagnosis", msg: func() proto.Message { return patient() },
			paths: []string{"sick_notes.issued_on", "sick_notes.expected_duration_days", "sick_notes.work_capacity_percent"},
			want: func() proto.Message {
				return &healthv1.Patient{SickNotes: []*healthv1.SickNote{
					{IssuedOn: ts(2024, 3, 1), ExpectedDurationDays: 30},
					{IssuedOn: ts(2023, 1, 1), ExpectedDurationDays: 5, WorkCapacityPercent: 50},
				}}
			},
			extra: []string{
				"citizen_id", "gp.clinic_id", "gp.clinic_name", "gp.municipality_code",
				"sick_notes.clinic_id", "sick_notes.diagnosis_code", "sick_notes.id",
			},
		},
		{
			name: "patient/covered sub-message left empty is dropped",
			msg: func() proto.Message {
				return &healthv1.Patient{Gp: &healthv1.GeneralPractitioner{ClinicId: "C1"}}
			},
			paths: []string{"gp.clinic_name"},
			want:  func() proto.Message { return &healthv1.Patient{} },
			extra: []string{"gp.clinic_id"},
		},
		{
			name: "patient/empty message with nothing covered is an over-share",
			msg: func() proto.Message {
				return &healthv1.Patient{Gp: &healthv1.GeneralPractitioner{}, SickNotes: []*healthv1.SickNote{{}}}
			},
			paths: []string{"citizen_id"},
			want:  func() proto.Message { return &healthv1.Patient{} },
			extra: []string{"gp", "sick_notes"},
		},
		{
			name: "patient/empty elements below a covered path are not",
			msg: func() proto.Message {
				return &healthv1.Patient{Gp: &healthv1.GeneralPractitioner{}, SickNotes: []*healthv1.SickNote{{}, {}}}
			},
			paths: []string{"gp.clinic_name", "sick_notes.issued_on"},
			want: func() proto.Message {
				return &healthv1.Patient{SickNotes: []*healthv1.SickNote{{}, {}}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.msg()
			if got := fieldmask.Extra(m.ProtoReflect(), tt.paths); !slices.Equal(got, tt.extra) {
				t.Errorf("Extra before Apply =\n%q\nwant\n%q", got, tt.extra)
			}
			if !proto.Equal(m, tt.msg()) {
				t.Fatal("Extra modified the message")
			}
			src := tt.msg()
			projected := src.ProtoReflect().New()
			fieldmask.Project(projected, src.ProtoReflect(), tt.paths)
			if want := tt.want(); !proto.Equal(projected.Interface(), want) {
				t.Errorf("Project =\n%v\nwant\n%v", projected.Interface(), want)
			}
			if !proto.Equal(src, tt.msg()) {
				t.Fatal("Project modified its source")
			}
			prepared := src.ProtoReflect().New()
			fieldmask.NewMask(tt.paths).Project(prepared, src.ProtoReflect())
			if !proto.Equal(prepared.Interface(), projected.Interface()) {
				t.Errorf("Mask.Project =\n%v\nwant\n%v", prepared.Interface(), projected.Interface())
			}
			fieldmask.Apply(m.ProtoReflect(), tt.paths)
			if want := tt.want(); !proto.Equal(m, want) {
				t.Errorf("Apply =\n%v\nwant\n%v", m, want)
			}
			if got := fieldmask.Extra(m.ProtoReflect(), tt.paths); len(got) != 0 {
				t.Errorf("Extra after Apply = %q, want none", got)
			}
		})
	}
}

// TestApplyDynamic checks that a dynamic message (how the broker sees an authority's answer) is
// reduced exactly like the generated one.
func TestApplyDynamic(t *testing.T) {
	files, err := protodesc.NewFiles(fileSet(personMD.ParentFile()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName(personMD.FullName())
	if err != nil {
		t.Fatal(err)
	}
	md := d.(protoreflect.MessageDescriptor)
	if md == personMD {
		t.Fatal("descriptor is not dynamic")
	}
	raw, err := proto.Marshal(person())
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(raw, dyn); err != nil {
		t.Fatal(err)
	}
	paths := []string{"address.municipality_code", "household.relation", "birth_date"}
	if got, want := fieldmask.Extra(dyn, paths), fieldmask.Extra(person().ProtoReflect(), paths); !slices.Equal(got, want) {
		t.Errorf("Extra(dynamic) = %q, want %q", got, want)
	}
	fieldmask.Apply(dyn, paths)
	gen := person()
	fieldmask.Apply(gen.ProtoReflect(), paths)
	raw, err = proto.MarshalOptions{Deterministic: true}.Marshal(dyn)
	if err != nil {
		t.Fatal(err)
	}
	back := &populationv1.Person{}
	if err := proto.Unmarshal(raw, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, gen) {
		t.Errorf("dynamic Apply = %v, want %v", back, gen)
	}
}

func TestApplyDropsUnknownFields(t *testing.T) {
	p := &populationv1.Person{CitizenId: "0101901234", Address: &populationv1.Address{City: "Aarhus"}}
	// Field 99, varint 1: bytes the schema does not describe.
	p.ProtoReflect().SetUnknown(protoreflect.RawFields{0x98, 0x06, 0x01})
	p.Address.ProtoReflect().SetUnknown(protoreflect.RawFields{0x98, 0x06, 0x01})
	fieldmask.Apply(p.ProtoReflect(), []string{"address"})
	if len(p.ProtoReflect().GetUnknown()) != 0 {
		t.Error("unknown fields at the top level survived")
	}
	if len(p.Address.ProtoReflect().GetUnknown()) == 0 {
		t.Error("unknown fields inside a wholly covered message were cleared")
	}
}

func TestProjectDropsUnknownFields(t *testing.T) {
	p := &populationv1.Person{CitizenId: "0101901234", Address: &populationv1.Address{City: "Aarhus"}}
	p.ProtoReflect().SetUnknown(protoreflect.RawFields{0x98, 0x06, 0x01})
	p.Address.ProtoReflect().SetUnknown(protoreflect.RawFields{0x98, 0x06, 0x01})
	got := &populationv1.Person{}
	fieldmask.Project(got.ProtoReflect(), p.ProtoReflect(), []string{"address"})
	if len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Error("unknown fields at the top level were projected")
	}
	if got.GetAddress().GetCity() != "Aarhus" || len(got.Address.ProtoReflect().GetUnknown()) == 0 {
		t.Error("a wholly covered message was not projected whole")
	}
	if got.GetCitizenId() != "" {
		t.Error("an uncovered field was projected")
	}
}

func fieldmaskMDs() []protoreflect.MessageDescriptor {
	return []protoreflect.MessageDescriptor{personMD, servicesMD, patientMD}
}

// fileSet is fd and everything it imports, each file after its imports, as an authority's Describe
// sends it (an authority's proto imports the label options as well as the well-known types).
func fileSet(fd protoreflect.FileDescriptor) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(fd)
	return set
}
