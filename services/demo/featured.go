package demo

import (
	"time"

	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
)

// Ids of the featured adults. Their birth dates are fixed, so the ids never change; see the package
// documentation.
const (
	SickEmployeeID = "1403871237" // Lars Nørgaard Møller
	MovingParentID = "2208912468" // Sofie Andersen
	MovingPartner  = "0205891353" // Jonas Kristensen
	LowEarnerID    = "0911983624" // Camilla Holm
	sickSpouseID   = "2501882716" // Maria Møller
)

// Keys of the featured citizens.
const (
	KeySickEmployee = "sick-employee"
	KeyMovingFamily = "moving-family"
	KeyLowEarner    = "low-earner"
)

var featuredIDs = []string{SickEmployeeID, sickSpouseID, MovingParentID, MovingPartner, LowEarnerID}

func muniIndex(code string) int {
	for i, m := range municipalities {
		if m.code == code {
			return i
		}
	}
	panic("demo: unknown municipality " + code)
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// addFeatured builds the three walk-through households by hand. Their adults' dates of birth are
// absolute (so their ids are stable); everything else is relative to the reference month, so that
// "currently sick" and "just moved" stay true whenever the population is generated.
func (g *generator) addFeatured() {
	g.addSickEmployee()
	g.addMovingFamily()
	g.addLowEarner()
}

func (g *generator) addSickEmployee() {
	ref := g.ref
	h := &household{muniIdx: muniIndex("0101"), areaIdx: 0, married: true} // Nørrebro
	h.addr = Address{Street: "Guldbergsgade", HouseNumber: "29", Unit: "3. th.", PostalCode: "2200", City: "København N",
		MunicipalityCode: "0101", MunicipalityName: "København", MovedInOn: ref.AddDate(-6, -2, 9)}
	h.prev = []Address{{Street: "Istedgade", HouseNumber: "71", Unit: "4. th.", PostalCode: "1620", City: "København V",
		MunicipalityCode: "0101", MunicipalityName: "København", MovedInOn: ref.AddDate(-10, -5, 0)}}
	lars := g.person(SickEmployeeID, "Lars Nørgaard", "Møller", false, date(1987, time.March, 14))
	maria := g.person(sickSpouseID, "Maria", "Møller", true, date(1988, time.January, 25))
	emil := g.person("", "Emil", "Møller", false, g.birthForAge(8))
	alma := g.person("", "Alma", "Møller", true, g.birthForAge(4))
	h.adults, h.children = []*Citizen{lars, maria}, []*Citizen{emil, alma}
	for _, a := range h.adults {
		a.CivilStatus = populationv1.CivilStatus_CIVIL_STATUS_MARRIED
	}
	g.moveIn(h)
	g.assignGP(h)

	g.employ(lars, workProfile{jobs: []job{{
		Employment: Employment{EmployerID: "34125687", EmployerName: "Nordhavn Logistik ApS", Start: ref.AddDate(-4, -3, 0),
			WeeklyHours: 37, OccupationCode: "9333"},
		pay: 31200, weekly: 37,
	}}})
	g.employ(maria, workProfile{jobs: []job{{
		Employment: Employment{EmployerID: "29384756", EmployerName: "Hospital Øresund", Start: ref.AddDate(-7, -1, 3),
			WeeklyHours: 32, OccupationCode: "2221"},
		pay: 40500, weekly: 32,
	}}})

	lars.SickNotes = append(lars.SickNotes, SickNote{ // current: back injury, can work half time
		ID: "SN0900001", IssuedOn: ref.AddDate(0, 0, -5), DiagnosisCode: "M51.1",
		ExpectedDurationDays: 56, WorkCapacityPercent: 50, ClinicID: lars.GP.ID,
	}, SickNote{
		ID: "SN0900002", IssuedOn: ref.AddDate(0, -7, -12), DiagnosisCode: "J06.9",
		ExpectedDurationDays: 4, ClinicID: lars.GP.ID,
	})
	lars.SickLeaveReports = append(lars.SickLeaveReports, SickLeaveReport{
		EmployerID: "34125687", FirstSickDay: ref.AddDate(0, 0, -8), ReportedOn: ref.AddDate(0, 0, -3), EmployerPaysSalary: true,
	})

	// The jobcentre opened his sickness benefit case when the employer reported the absence.
	g.addCase(lars, BenefitCase{Kind: municipalityv1.BenefitKind_BENEFIT_KIND_SICKNESS, OpenedOn: ref.AddDate(0, 0, -2),
		Status: "open"}, "sickness")
	lars.Daycare = []DaycarePlacement{{ChildID: alma.ID, Institution: "Børnehaven Mælkebøtten", Start: alma.BirthDate.AddDate(1, 0, 0), WeeklyHours: 40}}
	lars.Schools = []SchoolEnrolment{{ChildID: emil.ID, School: "Nørrebro Skole", Grade: 2}}
	maria.Daycare, maria.Schools = lars.Daycare, lars.Schools
	g.register(h)
	g.pop.featured = append(g.pop.featured, Featured{
		Key: KeySickEmployee, ID: lars.ID, Name: "Lars Nørgaard Møller",
		Story: "Warehouse worker in Copenhagen for four years, on part-time sick leave with a back injury since last week; his employer has reported it (sickness benefit journey).",
	})
}

func (g *generator) addMovingFamily() {
	ref := g.ref
	moved := ref.AddDate(0, 0, -12)
	h := &household{muniIdx: muniIndex("0751"), areaIdx: 1} // Trøjborg
	h.addr = Address{Street: "Trøjborgvej", HouseNumber: "14", Unit: "1. tv.", PostalCode: "8200", City: "Aarhus N",
		MunicipalityCode: "0751", MunicipalityName: "Aarhus", MovedInOn: moved}
	h.prev = []Address{{Street: "Danmarksgade", HouseNumber: "8", Unit: "st. th.", PostalCode: "9000", City: "Aalborg",
		MunicipalityCode: "0851", MunicipalityName: "Aalborg", MovedInOn: ref.AddDate(-6, -4, 0)}}
	sofie := g.person(MovingParentID, "Sofie", "Andersen", true, date(1991, time.August, 22))
	jonas := g.person(MovingPartner, "Jonas", "Kristensen", false, date(1989, time.May, 2))
	oscar := g.person("", "Oscar", "Kristensen", false, g.birthForAge(7))
	ella := g.person("", "Ella", "Kristensen", true, ref.AddDate(0, 0, -40))
	h.adults, h.children = []*Citizen{sofie, jonas}, []*Citizen{oscar, ella}
	g.moveIn(h)
	g.assignGP(h)

	g.employ(sofie, workProfile{jobs: []job{{ // on maternity leave; the school keeps paying her salary
		Employment: Employment{EmployerID: "33958241", EmployerName: "Friskolen Lindely", Start: ref.AddDate(-5, -1, 0),
			WeeklyHours: 37, OccupationCode: "2341"},
		pay: 41000, weekly: 37,
	}}})
	g.employ(jonas, workProfile{jobs: []job{{
		Employment: Employment{EmployerID: "40517362", EmployerName: "Hvidbjerg Software ApS", Start: ref.AddDate(-3, -2, 0),
			WeeklyHours: 37, OccupationCode: "2512"},
		pay: 52000, weekly: 37,
	}}})

	g.addCase(sofie, BenefitCase{Kind: municipalityv1.BenefitKind_BENEFIT_KIND_CHILD, OpenedOn: moved.AddDate(0, 0, 2),
		Status: "open"}, "child")
	sofie.Schools = []SchoolEnrolment{{ChildID: oscar.ID, School: "Trøjborg Skole", Grade: 1}}
	jonas.Schools = sofie.Schools
	g.register(h)
	g.pop.featured = append(g.pop.featured, Featured{
		Key: KeyMovingFamily, ID: sofie.ID, Name: "Sofie Andersen",
		Story: "Moved from Aalborg to Aarhus twelve days ago with her partner, a six-week-old baby and a seven-year-old starting at a new school (moving journey).",
	})
}

func (g *generator) addLowEarner() {
	ref := g.ref
	h := &household{muniIdx: muniIndex("0461"), areaIdx: 0} // Odense C
	h.addr = Address{Street: "Overgade", HouseNumber: "41", Unit: "2. th.", PostalCode: "5000", City: "Odense C",
		MunicipalityCode: "0461", MunicipalityName: "Odense", MovedInOn: ref.AddDate(-3, -1, 4)}
	h.prev = []Address{{Street: "Munkebjergvej", HouseNumber: "120", Unit: "3. mf.", PostalCode: "5230", City: "Odense M",
		MunicipalityCode: "0461", MunicipalityName: "Odense", MovedInOn: ref.AddDate(-5, 0, 0)}}
	camilla := g.person(LowEarnerID, "Camilla", "Holm", true, date(1998, time.November, 9))
	h.adults = []*Citizen{camilla}
	g.moveIn(h)
	g.assignGP(h)
	g.employ(camilla, workProfile{
		jobs: []job{{
			Employment: Employment{EmployerID: "38164275", EmployerName: "Dagligvarehuset Torvet A/S", Start: ref.AddDate(-2, -2, 0),
				WeeklyHours: 18, OccupationCode: "5223"},
			pay: 24000, weekly: 18,
		}},
		// Extra shifts in July and December lift two months of every twelve above 20,000 DKK.
		incomeTweak: func(m time.Time, gross int64) int64 {
			if m.Month() == time.July || m.Month() == time.December {
				return 21400
			}
			return gross
		},
	})
	g.addCase(camilla, BenefitCase{Kind: municipalityv1.BenefitKind_BENEFIT_KIND_HOUSING, OpenedOn: ref.AddDate(-1, -1, 0),
		Status: "granted", MonthlyAmountDKK: 2100}, "housing")
	g.register(h)
	g.pop.featured = append(g.pop.featured, Featured{
		Key: KeyLowEarner, ID: camilla.ID, Name: "Camilla Holm",
		Story: "Part-time shop assistant in Odense who earns below 20,000 DKK in ten of the last twelve months, so the earnings test of the sickness benefit journey comes out false.",
	})
}
