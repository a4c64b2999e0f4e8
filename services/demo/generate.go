package demo

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	municipalityv1 "github.com/aperture-gov/aperture/proto/aperture/municipality/v1"
	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
)

// DefaultSize is the population size `aperture dev` serves.
const DefaultSize = 1000

// The generator's fixed seed. math/rand/v2's PCG is specified bit for bit, and the generator uses
// integer arithmetic for every amount, so the output is the same on every machine.
const seedHi, seedLo = 0x415045525455, 0x5245444b

// New generates a population of n citizens (DefaultSize if n <= 0) for the reference month of ref:
// dates such as "the last 24 months of income" are relative to the first day of that month, so a
// population generated this month always has recent data. The same n and month give the same
// population. The featured households are always included, so a very small n may yield a few more
// citizens than asked for.
func New(n int, ref time.Time) *Population {
	if n <= 0 {
		n = DefaultSize
	}
	ref = time.Date(ref.Year(), ref.Month(), 1, 0, 0, 0, 0, time.UTC)
	g := &generator{
		rng:  rand.New(rand.NewPCG(seedHi, seedLo)),
		ref:  ref,
		used: map[string]bool{},
		pop:  &Population{ref: ref, citizens: map[string]*Citizen{}},
	}
	for _, id := range featuredIDs {
		g.used[id] = true // random citizens must never take a featured id
	}
	g.addFeatured()
	for len(g.pop.order) < n {
		g.addHousehold(n - len(g.pop.order))
	}
	return g.pop
}

type generator struct {
	rng     *rand.Rand
	ref     time.Time
	used    map[string]bool
	pop     *Population
	noteSeq int
	caseSeq int
}

// household is the unit of generation: people registered at one address.
type household struct {
	muniIdx, areaIdx int
	addr             Address   // current; MovedInOn is when the household moved in
	prev             []Address // the adults' earlier addresses, newest first
	adults           []*Citizen
	children         []*Citizen
	married          bool
	names            nameSet
}

// job is an employment plus the pay the generator uses for its income reports.
type job struct {
	Employment
	pay    int // monthly gross at 37 hours a week, DKK
	weekly int // contractual hours a week
}

// workProfile says what a person lives on besides jobs.
type workProfile struct {
	jobs        []job // current (or latest) first
	pension     int   // monthly pension, DKK; 0 if none
	unemployed  int   // monthly unemployment benefit after the latest job ended, DKK; 0 if none
	incomeTweak func(m time.Time, gross int64) int64
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func (g *generator) chance(percent int) bool { return g.rng.IntN(100) < percent }

func (g *generator) between(lo, hi int) int { return lo + g.rng.IntN(hi-lo+1) }

func (g *generator) daysBefore(t time.Time, days int) time.Time { return t.AddDate(0, 0, -days) }

// birthForAge returns a birth date that makes someone age years old on the reference day.
func (g *generator) birthForAge(age int) time.Time {
	return g.ref.AddDate(-age, 0, -1-g.rng.IntN(364))
}

func ageAt(birth, t time.Time) int {
	age := t.Year() - birth.Year()
	if t.Month() < birth.Month() || t.Month() == birth.Month() && t.Day() < birth.Day() {
		age--
	}
	return age
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (g *generator) pickNameSet() nameSet {
	total := 0
	for _, ns := range nameSets {
		total += ns.weight
	}
	r := g.rng.IntN(total)
	for _, ns := range nameSets {
		if r < ns.weight {
			return ns
		}
		r -= ns.weight
	}
	panic("unreachable")
}

func (g *generator) givenName(ns nameSet, female bool) string {
	if female {
		name := pick(g.rng, ns.female)
		if ns.middleFamilies && g.chance(12) {
			name += " " + pick(g.rng, femaleMiddle)
		}
		return name
	}
	return pick(g.rng, ns.male)
}

// person creates a citizen with a fresh id (or the given one) and registers nothing yet.
func (g *generator) person(id, given, family string, female bool, birth time.Time) *Citizen {
	if id == "" {
		id = cprNumber(g.rng, g.used, birth, female)
	}
	return &Citizen{
		ID: id, GivenNames: given, FamilyName: family, Female: female, BirthDate: birth,
		CivilStatus:  populationv1.CivilStatus_CIVIL_STATUS_UNMARRIED,
		BenefitCases: map[string]BenefitCase{},
	}
}

// randomAddress returns an address in a municipality chosen by population weight.
func (g *generator) randomAddress() (Address, int, int) {
	total := 0
	for _, m := range municipalities {
		total += m.weight
	}
	r, mi := g.rng.IntN(total), 0
	for i, m := range municipalities {
		if r < m.weight {
			mi = i
			break
		}
		r -= m.weight
	}
	ai := g.rng.IntN(len(municipalities[mi].areas))
	return g.addressIn(mi, ai), mi, ai
}

func (g *generator) addressIn(mi, ai int) Address {
	m, a := municipalities[mi], municipalities[mi].areas[ai]
	number := fmt.Sprint(g.between(1, 140))
	if g.chance(8) {
		number += pick(g.rng, []string{"A", "B", "C"})
	}
	unit := ""
	if g.chance(75) {
		unit = pick(g.rng, units)
	}
	return Address{
		Street: pick(g.rng, a.streets), HouseNumber: number, Unit: unit,
		PostalCode: a.postalCode, City: a.city,
		MunicipalityCode: m.code, MunicipalityName: m.name,
	}
}

// addHousehold generates one random household of at most room people.
func (g *generator) addHousehold(room int) {
	h := &household{names: g.pickNameSet()}
	h.addr, h.muniIdx, h.areaIdx = g.randomAddress()
	family := pick(g.rng, h.names.family)

	kind := g.rng.IntN(100)
	nKids := 0
	switch {
	case kind < 30:
		nKids = g.between(1, 3)
	case kind < 40:
		nKids = g.between(1, 2)
	}
	adults := 1
	if kind < 30 || kind >= 62 {
		adults = 2
	}
	if adults+nKids > room { // the last household fills the population exactly
		kind, adults, nKids = 70, min(2, room), 0
		if adults == 1 {
			kind = 50
		}
	}

	switch {
	case nKids > 0: // family (two parents) or single parent
		motherAge := g.between(26, 48)
		// Some single parents are fathers; in a two-parent family the mother comes first.
		parentFemale := adults == 2 || !g.chance(15)
		h.adults = append(h.adults, g.person("", g.givenName(h.names, parentFemale), family, parentFemale, g.birthForAge(motherAge)))
		if adults == 2 {
			h.married = g.chance(65)
			fatherFamily := family
			if !h.married && g.chance(60) {
				fatherFamily = pick(g.rng, h.names.family)
			}
			h.adults = append(h.adults, g.person("", g.givenName(h.names, false), fatherFamily, false, g.birthForAge(motherAge+g.between(-3, 5))))
		}
		maxChildAge := min(17, motherAge-22)
		ages := map[int]bool{}
		for len(h.children) < nKids {
			age := g.rng.IntN(maxChildAge + 1)
			if ages[age] {
				continue
			}
			ages[age] = true
			female := g.chance(50)
			h.children = append(h.children, g.person("", g.givenName(h.names, female), family, female, g.birthForAge(age)))
		}
		slices.SortFunc(h.children, func(a, b *Citizen) int { return a.BirthDate.Compare(b.BirthDate) })
	case adults == 2: // couple without children at home
		age := g.between(22, 88)
		if kind >= 90 {
			age = g.between(67, 90)
		}
		h.married = g.chance(60)
		sameSex := g.chance(4)
		firstFemale := g.chance(50)
		second := !firstFemale
		if sameSex {
			second = firstFemale
		}
		secondFamily := family
		if !h.married || g.chance(30) {
			secondFamily = pick(g.rng, h.names.family)
		}
		h.adults = append(h.adults,
			g.person("", g.givenName(h.names, firstFemale), family, firstFemale, g.birthForAge(age)),
			g.person("", g.givenName(h.names, second), secondFamily, second, g.birthForAge(max(19, age+g.between(-4, 4)))))
		if sameSex && h.married && age >= 50 {
			for _, a := range h.adults {
				a.CivilStatus = populationv1.CivilStatus_CIVIL_STATUS_REGISTERED_PARTNERSHIP
			}
		}
	default: // single
		female := g.chance(50)
		h.adults = append(h.adults, g.person("", g.givenName(h.names, female), family, female, g.birthForAge(g.between(19, 88))))
	}
	g.civilStatus(h, nKids > 0)
	g.settle(h)
	g.assignGP(h)
	for _, a := range h.adults {
		g.employ(a, g.randomWork(a))
		g.health(a, h)
	}
	g.services(h)
	g.register(h)
}

// civilStatus sets civil status for households generated at random.
func (g *generator) civilStatus(h *household, parents bool) {
	if len(h.adults) == 2 {
		if h.married && h.adults[0].CivilStatus != populationv1.CivilStatus_CIVIL_STATUS_REGISTERED_PARTNERSHIP {
			for _, a := range h.adults {
				a.CivilStatus = populationv1.CivilStatus_CIVIL_STATUS_MARRIED
			}
		}
		return
	}
	a := h.adults[0]
	age := ageAt(a.BirthDate, g.ref)
	switch r := g.rng.IntN(100); {
	case age < 30:
	case age >= 65 && !parents && r < 35:
		a.CivilStatus = populationv1.CivilStatus_CIVIL_STATUS_WIDOWED
	case r < 45:
		a.CivilStatus = populationv1.CivilStatus_CIVIL_STATUS_DIVORCED
	}
}

// settle sets addresses: when the household moved in, and where its members lived before.
func (g *generator) settle(h *household) {
	youngest := h.adults[0].BirthDate
	for _, a := range h.adults {
		youngest = later(youngest, a.BirthDate)
	}
	adultDays := int(g.ref.Sub(youngest.AddDate(18, 0, 0)).Hours() / 24)
	h.addr.MovedInOn = g.daysBefore(g.ref, g.between(20, max(21, min(15*365, adultDays))))
	if g.chance(75) {
		prev, _, _ := g.randomAddress()
		prev.MovedInOn = g.daysBefore(h.addr.MovedInOn, g.between(365, 8*365))
		h.prev = append(h.prev, prev)
	}
	g.moveIn(h)
}

// moveIn copies the household address to its members; a child born before the move also lived at
// the previous address, from birth.
func (g *generator) moveIn(h *household) {
	for _, a := range h.adults {
		a.Address = h.addr
		a.PreviousAddresses = slices.Clone(h.prev)
	}
	for _, c := range h.children {
		c.Address = h.addr
		c.Address.MovedInOn = later(h.addr.MovedInOn, c.BirthDate)
		if len(h.prev) > 0 && c.BirthDate.Before(h.addr.MovedInOn) {
			p := h.prev[0]
			p.MovedInOn = later(p.MovedInOn, c.BirthDate)
			c.PreviousAddresses = []Address{p}
		}
	}
}

// randomWork decides how an adult makes a living.
func (g *generator) randomWork(c *Citizen) workProfile {
	age := ageAt(c.BirthDate, g.ref)
	adult := c.BirthDate.AddDate(18, 0, 0)
	var w workProfile
	switch {
	case age >= 67:
		w.pension = g.between(135, 190) * 100
		end := c.BirthDate.AddDate(g.between(64, 66), 0, g.rng.IntN(300))
		w.jobs = append(w.jobs, g.job(pick(g.rng, employers), 37, g.daysBefore(end, g.between(3, 25)*365), end))
	case age < 25 && g.chance(55): // student with a part-time job
		e := pick(g.rng, studentEmployers)
		start := later(g.daysBefore(g.ref, g.between(60, 1000)), c.BirthDate.AddDate(16, 0, 0))
		w.jobs = append(w.jobs, g.job(e, g.between(8, 15), start, time.Time{}))
	default:
		r := g.rng.IntN(100)
		weekly, end, latest := 37, time.Time{}, g.ref
		switch {
		case r < 3: // outside the labour market, for example at home or abroad: no income reported
			return w
		case r < 10: // unemployed, on unemployment benefit since the latest job ended
			end = g.daysBefore(g.ref, g.between(30, 300))
			latest = end
		case r < 22:
			weekly = g.between(18, 30)
		}
		maxDays := min(15*365, int(latest.Sub(adult).Hours()/24))
		if maxDays < 60 { // too young to have held that job
			return w
		}
		if !end.IsZero() {
			w.unemployed = g.between(175, 193) * 100
		}
		start := g.daysBefore(latest, g.between(60, maxDays))
		w.jobs = append(w.jobs, g.job(pick(g.rng, employers), weekly, start, end))
		if g.chance(30) {
			prevEnd := start.AddDate(0, 0, -1)
			prevStart := g.daysBefore(prevEnd, g.between(365, 6*365))
			if prevStart.After(adult) {
				w.jobs = append(w.jobs, g.job(pick(g.rng, employers), 37, prevStart, prevEnd))
			}
		}
	}
	return w
}

var studentEmployers = func() []employer {
	var es []employer
	for _, e := range employers {
		if e.studentJob {
			es = append(es, e)
		}
	}
	return es
}()

func (g *generator) job(e employer, weekly int, start, end time.Time) job {
	return job{
		Employment: Employment{
			EmployerID: e.cvr, EmployerName: e.name, Start: start, End: end,
			WeeklyHours: float64(weekly), OccupationCode: e.occupation,
		},
		pay:    g.between(e.minPay/100, e.maxPay/100) * 100,
		weekly: weekly,
	}
}

// employ records the employments and derives 24 months of income reports from them.
func (g *generator) employ(c *Citizen, w workProfile) {
	for _, j := range w.jobs {
		c.Employments = append(c.Employments, j.Employment)
	}
	var last12 int64
	for i := 1; i <= 24; i++ {
		m := g.ref.AddDate(0, -i, 0)
		mEnd := m.AddDate(0, 1, -1)
		var inc MonthlyIncome
		switch j, ok := activeJob(w.jobs, m, mEnd); {
		case ok:
			// Integer arithmetic only: see the seed's comment.
			gross := int64(j.pay) * int64(j.weekly) / 37 * int64(g.between(970, 1040)) / 1000
			inc = MonthlyIncome{GrossDKK: gross, EmployerID: j.EmployerID, Hours: float64(j.weekly*433/10) / 10}
		case w.pension > 0:
			inc = MonthlyIncome{GrossDKK: int64(w.pension), EmployerID: pensionPayer.cvr}
		case w.unemployed > 0 && len(w.jobs) > 0 && m.After(w.jobs[0].End):
			inc = MonthlyIncome{GrossDKK: int64(w.unemployed), EmployerID: unemploymentFund.cvr}
		default:
			continue
		}
		if w.incomeTweak != nil {
			inc.GrossDKK = w.incomeTweak(m, inc.GrossDKK)
		}
		inc.PeriodStart = m
		inc.TaxWithheldDKK = taxWithheld(inc.GrossDKK)
		c.Income = append(c.Income, inc)
		if i <= 12 {
			last12 += inc.GrossDKK
		}
	}
	c.AssessedAnnualDKK = (last12 + 500) / 1000 * 1000
}

func activeJob(jobs []job, from, to time.Time) (job, bool) {
	for _, j := range jobs {
		if !j.Start.After(to) && (j.End.IsZero() || !j.End.Before(from)) {
			return j, true
		}
	}
	return job{}, false
}

// taxWithheld approximates Danish withholding: 8 % labour market contribution, then about 37 % of
// the rest above the monthly personal allowance.
func taxWithheld(gross int64) int64 {
	am := gross * 8 / 100
	return am + max(0, gross-am-4300)*37/100
}

func (c *Citizen) employerAt(t time.Time) (Employment, bool) {
	for _, e := range c.Employments {
		if !e.Start.After(t) && (e.End.IsZero() || !e.End.Before(t)) {
			return e, true
		}
	}
	return Employment{}, false
}

// avgGross returns the average monthly gross income over the last 12 months (missing months count 0).
func (c *Citizen) avgGross(ref time.Time) int64 {
	var sum int64
	for _, m := range c.Income {
		if !m.PeriodStart.Before(ref.AddDate(0, -12, 0)) {
			sum += m.GrossDKK
		}
	}
	return sum / 12
}

// assignGP registers the household with one of the two GP clinics of its area.
func (g *generator) assignGP(h *household) {
	m, a := municipalities[h.muniIdx], municipalities[h.muniIdx].areas[h.areaIdx]
	v := g.rng.IntN(2)
	gp := Clinic{
		ID:               fmt.Sprintf("%s%02d%d", m.code[1:], h.areaIdx, v),
		Name:             []string{"Lægerne ", "Lægehuset "}[v] + a.district,
		MunicipalityCode: m.code,
	}
	for _, c := range slices.Concat(h.adults, h.children) {
		c.GP = gp
	}
}

// health gives an adult of working age the sick notes of an ordinary life, with the employer reports
// and municipal sickness cases that follow from them.
func (g *generator) health(c *Citizen, h *household) {
	if age := ageAt(c.BirthDate, g.ref); age >= 67 || len(c.Employments) == 0 {
		return
	}
	if g.chance(25) {
		g.sickNote(c, g.daysBefore(g.ref, g.between(30, 700)), pick(g.rng, shortDiagnoses), g.between(3, 21), 0)
	}
	if g.chance(8) {
		g.sickNote(c, g.daysBefore(g.ref, g.between(150, 700)), pick(g.rng, longDiagnoses), g.between(30, 120), int32(pick(g.rng, []int{0, 0, 25, 50})))
	}
	if g.chance(3) {
		g.sickNote(c, g.daysBefore(g.ref, g.between(1, 20)), pick(g.rng, longDiagnoses), g.between(28, 90), int32(pick(g.rng, []int{0, 25, 50})))
	}
	slices.SortFunc(c.SickNotes, func(a, b SickNote) int { return b.IssuedOn.Compare(a.IssuedOn) })
	slices.SortFunc(c.SickLeaveReports, func(a, b SickLeaveReport) int { return b.FirstSickDay.Compare(a.FirstSickDay) })
}

// sickNote adds a note and what follows from it: an employer report for absences of two weeks or
// more, and a sickness benefit case once the employer period (30 days) has passed.
func (g *generator) sickNote(c *Citizen, issued time.Time, diagnosis string, days int, capacity int32) {
	g.noteSeq++
	c.SickNotes = append(c.SickNotes, SickNote{
		ID: fmt.Sprintf("SN%07d", 1000000+g.noteSeq), IssuedOn: issued, DiagnosisCode: diagnosis,
		ExpectedDurationDays: int32(days), WorkCapacityPercent: capacity, ClinicID: c.GP.ID,
	})
	first := g.daysBefore(issued, g.rng.IntN(4))
	e, employed := c.employerAt(first)
	if !employed || days < 14 {
		return
	}
	pays := g.chance(85)
	reported := first.AddDate(0, 0, g.between(3, 14))
	if !reported.Before(g.ref) {
		reported = g.ref.AddDate(0, 0, -1)
	}
	c.SickLeaveReports = append(c.SickLeaveReports, SickLeaveReport{
		EmployerID: e.EmployerID, FirstSickDay: first, ReportedOn: reported, EmployerPaysSalary: pays,
	})
	opened := first.AddDate(0, 0, 30)
	if days < 30 || !opened.Before(g.ref) {
		return
	}
	bc := BenefitCase{Kind: municipalityv1.BenefitKind_BENEFIT_KIND_SICKNESS, OpenedOn: opened, Status: "granted"}
	if first.AddDate(0, 0, days).Before(g.ref) {
		bc.Status = "closed"
	}
	if !pays { // otherwise the benefit reimburses the employer, not the citizen
		bc.MonthlyAmountDKK = int64(g.between(170, 197) * 100)
	}
	g.addCase(c, bc, "sickness")
}

func (g *generator) addCase(c *Citizen, bc BenefitCase, notes string) {
	g.caseSeq++
	bc.Notes = pick(g.rng, caseNotes[notes])
	c.BenefitCases[fmt.Sprintf("%d-%06d", bc.OpenedOn.Year(), 100000+g.caseSeq)] = bc
}

// services sets the municipality's view of the household: benefit cases, daycare and school.
func (g *generator) services(h *household) {
	for _, a := range h.adults {
		age := ageAt(a.BirthDate, g.ref)
		housingChance := 40
		if age >= 67 {
			housingChance = 20
		}
		if a.avgGross(g.ref) < 20000 && g.chance(housingChance) {
			g.addCase(a, BenefitCase{
				Kind: municipalityv1.BenefitKind_BENEFIT_KIND_HOUSING, OpenedOn: g.daysBefore(g.ref, g.between(60, 1800)),
				Status: "granted", MonthlyAmountDKK: int64(g.between(10, 35) * 100),
			}, "housing")
		}
		if len(a.Employments) > 0 && !a.Employments[0].End.IsZero() && age < 67 && g.chance(30) {
			g.addCase(a, BenefitCase{
				Kind: municipalityv1.BenefitKind_BENEFIT_KIND_CASH, OpenedOn: a.Employments[0].End.AddDate(0, 0, g.between(3, 20)),
				Status: "rejected",
			}, "cash")
		}
	}
	if len(h.children) > 0 && g.chance(25) {
		g.addCase(h.adults[0], BenefitCase{
			Kind: municipalityv1.BenefitKind_BENEFIT_KIND_CHILD, OpenedOn: later(h.children[0].BirthDate, g.daysBefore(g.ref, 1800)),
			Status: "granted", MonthlyAmountDKK: int64(len(h.children) * g.between(8, 15) * 100),
		}, "child")
	}
	g.childcare(h)
}

// childcare places children aged 10 months to 5 in daycare and children aged 6 to 16 in school, and
// lists the places on each parent's record.
func (g *generator) childcare(h *household) {
	var daycare []DaycarePlacement
	var schools []SchoolEnrolment
	area := municipalities[h.muniIdx].areas[h.areaIdx]
	for _, c := range h.children {
		age := ageAt(c.BirthDate, g.ref)
		switch {
		case age >= 6 && age <= 16:
			name := area.district + " Skole"
			if g.chance(30) {
				name = "Skolen på " + pick(g.rng, area.streets)
			}
			schools = append(schools, SchoolEnrolment{ChildID: c.ID, School: name, Grade: int32(min(age-6, 9))})
		case c.BirthDate.AddDate(0, 10, 0).Before(g.ref) && age < 6 && g.chance(90):
			kind := "Vuggestuen "
			if age >= 3 {
				kind = "Børnehaven "
			}
			start := later(c.BirthDate.AddDate(0, g.between(10, 13), 0), c.Address.MovedInOn)
			if start.After(g.ref) {
				continue
			}
			daycare = append(daycare, DaycarePlacement{
				ChildID: c.ID, Institution: kind + pick(g.rng, daycareNames), Start: start,
				WeeklyHours: int32(g.between(30, 45)),
			})
		}
	}
	for _, a := range h.adults {
		a.Daycare = slices.Clone(daycare)
		a.Schools = slices.Clone(schools)
	}
}

// register links the household members to each other and adds them to the population.
func (g *generator) register(h *household) {
	members := slices.Concat(h.adults, h.children)
	for _, c := range members {
		for _, o := range members {
			if o == c {
				continue
			}
			c.Household = append(c.Household, HouseholdMember{ID: o.ID, GivenNames: o.GivenNames, Relation: relation(h, c, o), BirthDate: o.BirthDate})
		}
		if slices.Contains(h.adults, c) {
			// The adults have custody of the household's minors (as joint custody is the rule).
			for _, o := range h.children {
				if ageAt(o.BirthDate, g.ref) < 18 {
					c.Custody = append(c.Custody, HouseholdMember{ID: o.ID, GivenNames: o.GivenNames, Relation: populationv1.Relation_RELATION_CHILD, BirthDate: o.BirthDate})
				}
			}
		}
		g.pop.citizens[c.ID] = c
		g.pop.order = append(g.pop.order, c.ID)
	}
}

func relation(h *household, c, o *Citizen) populationv1.Relation {
	isChild := func(x *Citizen) bool { return slices.Contains(h.children, x) }
	switch {
	case isChild(o) && !isChild(c):
		return populationv1.Relation_RELATION_CHILD
	case isChild(o) || isChild(c):
		return populationv1.Relation_RELATION_OTHER
	case h.married:
		return populationv1.Relation_RELATION_SPOUSE
	default:
		return populationv1.Relation_RELATION_PARTNER
	}
}
