package demo

import (
	"slices"
	"time"

	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
)

// Citizen is everything the example authorities know about one synthetic person. Each authority
// serves its own slice of it. All dates are midnight UTC.
type Citizen struct {
	ID                string // CPR-like: DDMMYY + 4 digits, the last odd for men and even for women
	GivenNames        string
	FamilyName        string
	Female            bool
	BirthDate         time.Time
	CivilStatus       populationv1.CivilStatus
	Address           Address
	PreviousAddresses []Address // newest first
	Household         []HouseholdMember
	Custody           []HouseholdMember // children under 18 in the citizen's parental custody
	GP                Clinic
	Income            []MonthlyIncome // newest first, at most 24 months; months without income are absent
	AssessedAnnualDKK int64           // preliminary assessment for the reference year
	Employments       []Employment    // current first
	SickNotes         []SickNote      // newest first
	SickLeaveReports  []SickLeaveReport
	BenefitCases      map[string]BenefitCase // by case number
	Daycare           []DaycarePlacement     // of the citizen's children
	Schools           []SchoolEnrolment      // of the citizen's children
}

// Address is a registered address.
type Address struct {
	Street, HouseNumber, Unit string
	PostalCode, City          string
	MunicipalityCode          string
	MunicipalityName          string
	MovedInOn                 time.Time
}

// HouseholdMember is another citizen registered at the same address; its ID is in the population.
type HouseholdMember struct {
	ID         string
	GivenNames string
	Relation   populationv1.Relation // as seen from the citizen: a parent is RELATION_OTHER
	BirthDate  time.Time
}

// Clinic is a general practitioner's clinic.
type Clinic struct {
	ID, Name, MunicipalityCode string
}

// MonthlyIncome is one month of reported income.
type MonthlyIncome struct {
	PeriodStart    time.Time // first day of the month
	GrossDKK       int64
	TaxWithheldDKK int64
	EmployerID     string // CVR of whoever reported it
	Hours          float64
}

// Employment is one employment relationship.
type Employment struct {
	EmployerID, EmployerName string
	Start                    time.Time
	End                      time.Time // zero while it continues
	WeeklyHours              float64
	OccupationCode           string // DISCO-08
}

// SickNote is a doctor's statement of incapacity for work.
type SickNote struct {
	ID                   string
	IssuedOn             time.Time
	DiagnosisCode        string // ICD-10
	ExpectedDurationDays int32
	WorkCapacityPercent  int32
	ClinicID             string
}

// SickLeaveReport is an employer's report that an employee is sick.
type SickLeaveReport struct {
	EmployerID         string
	FirstSickDay       time.Time
	ReportedOn         time.Time
	EmployerPaysSalary bool
}

// BenefitCase is a municipal benefit case.
type BenefitCase struct {
	Kind             municipalityv1.BenefitKind
	OpenedOn         time.Time
	Status           string // open, granted, rejected or closed
	MonthlyAmountDKK int64
	Notes            string
}

// DaycarePlacement is a child's place in a daycare institution.
type DaycarePlacement struct {
	ChildID     string
	Institution string
	Start       time.Time
	WeeklyHours int32
}

// SchoolEnrolment is a child's enrolment in a school.
type SchoolEnrolment struct {
	ChildID string
	School  string
	Grade   int32
}

// Featured is a citizen designed for the walk-through in the README and for tests.
type Featured struct {
	Key   string // "sick-employee", "moving-family" or "low-earner"
	ID    string
	Name  string
	Story string
}

// Population is a generated population. It is read-only and safe for concurrent use.
type Population struct {
	ref      time.Time
	citizens map[string]*Citizen
	order    []string
	featured []Featured
}

// Ref returns the reference month the population was generated for (its first day, midnight UTC).
func (p *Population) Ref() time.Time { return p.ref }

// Citizen returns the citizen with the given id. The record is shared by every caller and MUST NOT
// be modified: the authorities answer thousands of Fetches a second from it, and copying it for each
// (its income history above all) was their largest allocation in the bench profile.
func (p *Population) Citizen(id string) (*Citizen, bool) {
	c, ok := p.citizens[id]
	return c, ok
}

// IDs returns every citizen id in generation order: the featured households first, and the members
// of each household next to each other.
func (p *Population) IDs() []string { return slices.Clone(p.order) }

// Featured returns the citizens designed for the walk-through, in the order of the package
// documentation.
func (p *Population) Featured() []Featured { return slices.Clone(p.featured) }

// FeaturedByKey returns the featured citizen with the given key.
func (p *Population) FeaturedByKey(key string) (Featured, bool) {
	for _, f := range p.featured {
		if f.Key == key {
			return f, true
		}
	}
	return Featured{}, false
}
