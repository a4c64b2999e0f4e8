package demo

import (
	"crypto/sha256"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
)

var refs = []time.Time{
	date(2026, time.January, 1),
	time.Date(2027, time.July, 19, 15, 4, 5, 0, time.FixedZone("CEST", 2*3600)),
	date(2031, time.February, 1),
}

func TestNewIsDeterministic(t *testing.T) {
	ref := refs[0]
	a, b := New(DefaultSize, ref), New(DefaultSize, ref.AddDate(0, 0, 17))
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two populations for the same month differ")
	}
	// The fingerprint pins the output across machines and Go versions. Update it only when the
	// generator is changed on purpose.
	const want = "b03f4f5e3443a337"
	if got := fingerprint(a); got != want {
		t.Errorf("fingerprint = %s, want %s", got, want)
	}
}

func fingerprint(p *Population) string {
	h := sha256.New()
	for _, id := range p.IDs() {
		c, _ := p.Citizen(id)
		fmt.Fprintf(h, "%+v\n", *c)
	}
	return fmt.Sprintf("%x", h.Sum(nil))[:16]
}

func TestSize(t *testing.T) {
	tests := []struct{ n, want int }{{0, DefaultSize}, {-1, DefaultSize}, {250, 250}, {3, 9}, {9, 9}, {10, 10}}
	for _, tt := range tests {
		if got := len(New(tt.n, refs[0]).IDs()); got != tt.want {
			t.Errorf("New(%d) has %d citizens, want %d", tt.n, got, tt.want)
		}
	}
}

func TestCitizens(t *testing.T) {
	codes := map[string]bool{}
	for _, m := range municipalities {
		codes[m.code] = true
	}
	for _, ref := range refs {
		p := New(DefaultSize, ref)
		ref := p.Ref()
		seen := map[string]bool{}
		var below, employed, unemployed, sick, daycare, school, custody int
		for _, id := range p.IDs() {
			c, ok := p.Citizen(id)
			if !ok {
				t.Fatalf("IDs lists an id that Citizen does not find")
			}
			if seen[id] {
				t.Fatalf("duplicate id %s", id)
			}
			seen[id] = true
			birth, err := cprBirthDate(id)
			if err != nil || !birth.Equal(c.BirthDate) {
				t.Fatalf("id %s does not encode birth date %v: %v, %v", id, c.BirthDate, birth, err)
			}
			if female := (id[9]-'0')%2 == 0; female != c.Female {
				t.Fatalf("id %s: last digit does not match sex", id)
			}
			if c.BirthDate.After(ref) || ageAt(c.BirthDate, ref) > 95 {
				t.Fatalf("id %s: implausible birth date %v", id, c.BirthDate)
			}
			if !codes[c.Address.MunicipalityCode] || c.GP.MunicipalityCode != c.Address.MunicipalityCode {
				t.Fatalf("id %s: municipality %q, GP in %q", id, c.Address.MunicipalityCode, c.GP.MunicipalityCode)
			}
			if c.Address.MovedInOn.After(ref) || c.Address.MovedInOn.Before(c.BirthDate) {
				t.Fatalf("id %s: moved in on %v", id, c.Address.MovedInOn)
			}
			for _, a := range c.PreviousAddresses {
				if !a.MovedInOn.Before(c.Address.MovedInOn) || a.MovedInOn.Before(c.BirthDate) {
					t.Fatalf("id %s: previous address moved in on %v", id, a.MovedInOn)
				}
			}
			if len(c.Income) > 24 || !slices.IsSortedFunc(c.Income, func(a, b MonthlyIncome) int { return b.PeriodStart.Compare(a.PeriodStart) }) {
				t.Fatalf("id %s: income not 24 months newest first", id)
			}
			for _, m := range c.Income {
				if m.PeriodStart.Day() != 1 || !m.PeriodStart.Before(ref) || m.GrossDKK <= 0 || m.TaxWithheldDKK >= m.GrossDKK || m.EmployerID == "" {
					t.Fatalf("id %s: implausible income %+v", id, m)
				}
				if m.GrossDKK < 20000 {
					below++
				}
			}
			if len(c.Employments) > 0 {
				if c.Employments[0].End.IsZero() {
					employed++
				} else if ageAt(c.BirthDate, ref) < 67 {
					unemployed++
				}
			}
			if len(c.SickNotes) > 0 {
				sick++
				if !slices.IsSortedFunc(c.SickNotes, func(a, b SickNote) int { return b.IssuedOn.Compare(a.IssuedOn) }) {
					t.Fatalf("id %s: sick notes not newest first", id)
				}
			}
			daycare += len(c.Daycare)
			school += len(c.Schools)
			for _, pl := range c.Daycare {
				if _, ok := p.Citizen(pl.ChildID); !ok {
					t.Fatalf("id %s: daycare child not in population", id)
				}
			}
			for _, m := range c.Household {
				o, ok := p.Citizen(m.ID)
				if !ok {
					t.Fatalf("id %s: household member not in population", id)
				}
				if a, b := o.Address, c.Address; a.Street != b.Street || a.HouseNumber != b.HouseNumber || a.Unit != b.Unit || a.PostalCode != b.PostalCode {
					t.Fatalf("id %s: household member lives elsewhere", id)
				}
				back := slices.IndexFunc(o.Household, func(x HouseholdMember) bool { return x.ID == id })
				if back < 0 {
					t.Fatalf("id %s: household is not reciprocal", id)
				}
				if m.Relation == populationv1.Relation_RELATION_CHILD && o.Household[back].Relation != populationv1.Relation_RELATION_OTHER {
					t.Fatalf("id %s: a child's parent is not RELATION_OTHER", id)
				}
			}
			for _, m := range c.Custody {
				o, ok := p.Citizen(m.ID)
				if !ok || ageAt(o.BirthDate, p.ref) >= 18 || !o.BirthDate.Equal(m.BirthDate) || ageAt(c.BirthDate, p.ref) < 18 {
					t.Fatalf("id %s: custody of a citizen who is not a minor in the population", id)
				}
				custody++
			}
		}
		// A population that exercises the journeys needs every kind of citizen.
		for name, n := range map[string]int{"months below 20,000 DKK": below, "employed": employed, "unemployed": unemployed, "with sick notes": sick, "daycare places": daycare, "school places": school, "children in custody": custody} {
			if n < 20 {
				t.Errorf("ref %v: only %d %s", ref, n, name)
			}
		}
	}
}

func TestFeatured(t *testing.T) {
	for _, ref := range refs {
		p := New(DefaultSize, ref)
		ref = p.Ref()
		now := ref.AddDate(0, 1, -1) // the last day the population is used for
		f := p.Featured()
		if len(f) < 3 {
			t.Fatalf("%d featured citizens, want at least 3", len(f))
		}
		want := map[string]string{KeySickEmployee: SickEmployeeID, KeyMovingFamily: MovingParentID, KeyLowEarner: LowEarnerID}
		for _, x := range f {
			if want[x.Key] != x.ID || x.Story == "" || x.Name == "" {
				t.Fatalf("featured %+v, want id %s and a story", x, want[x.Key])
			}
		}

		t.Run(KeySickEmployee+ref.Format("2006-01"), func(t *testing.T) {
			c, _ := p.Citizen(SickEmployeeID)
			if c.Address.MunicipalityCode != "0101" || len(c.Household) < 2 {
				t.Fatalf("lives in %s with %d others", c.Address.MunicipalityCode, len(c.Household))
			}
			if len(c.Employments) == 0 || !c.Employments[0].End.IsZero() || c.Employments[0].Start.After(ref.AddDate(0, 0, -26*7)) {
				t.Fatal("not employed for more than 26 weeks")
			}
			if n := monthsAtLeast(c, ref, 20000); n < 6 {
				t.Fatalf("earned 20,000 DKK in %d of the last 12 months", n)
			}
			n := c.SickNotes[0]
			if n.DiagnosisCode == "" || n.WorkCapacityPercent <= 0 || n.WorkCapacityPercent >= 100 || !n.IssuedOn.AddDate(0, 0, int(n.ExpectedDurationDays)).After(now) {
				t.Fatalf("no current partial sick note: %+v", n)
			}
			if len(c.SickLeaveReports) == 0 || c.SickLeaveReports[0].EmployerID != c.Employments[0].EmployerID {
				t.Fatal("no sick-leave report from the employer")
			}
		})
		t.Run(KeyMovingFamily+ref.Format("2006-01"), func(t *testing.T) {
			c, _ := p.Citizen(MovingParentID)
			if c.Address.MovedInOn.Before(ref.AddDate(0, -1, 0)) || len(c.PreviousAddresses) == 0 || c.PreviousAddresses[0].MunicipalityCode == c.Address.MunicipalityCode {
				t.Fatal("did not just move to another municipality")
			}
			var newborn, schoolChild bool
			for _, m := range c.Household {
				child, ok := p.Citizen(m.ID)
				if !ok || m.Relation == populationv1.Relation_RELATION_CHILD && child.Address.MunicipalityCode != c.Address.MunicipalityCode {
					t.Fatal("a household member is not a citizen at the same address")
				}
				newborn = newborn || m.Relation == populationv1.Relation_RELATION_CHILD && ageAt(m.BirthDate, ref) == 0
				schoolChild = schoolChild || m.Relation == populationv1.Relation_RELATION_CHILD && ageAt(m.BirthDate, ref) >= 6
			}
			if !newborn || !schoolChild || len(c.Schools) == 0 {
				t.Fatalf("newborn %v, school-age child %v, schools %d", newborn, schoolChild, len(c.Schools))
			}
		})
		t.Run(KeyLowEarner+ref.Format("2006-01"), func(t *testing.T) {
			c, _ := p.Citizen(LowEarnerID)
			if n := monthsAtLeast(c, ref, 20000); n >= 6 || len(c.Income) < 12 {
				t.Fatalf("earned 20,000 DKK in %d of the last 12 months, want fewer than 6", n)
			}
		})
	}
}

func monthsAtLeast(c *Citizen, ref time.Time, dkk int64) int {
	n := 0
	for _, m := range c.Income {
		if !m.PeriodStart.Before(ref.AddDate(0, -12, 0)) && m.GrossDKK >= dkk {
			n++
		}
	}
	return n
}

// Citizen answers from the shared record (no copy per Fetch) and knows only generated citizens.
func TestCitizenLookup(t *testing.T) {
	p := New(20, refs[0])
	c, ok := p.Citizen(SickEmployeeID)
	if !ok || c.ID != SickEmployeeID {
		t.Fatalf("Citizen(%s) = %v, %v", SickEmployeeID, c, ok)
	}
	if again, _ := p.Citizen(SickEmployeeID); again != c {
		t.Error("a second lookup returned another record")
	}
	if _, ok := p.Citizen("0000000000"); ok {
		t.Fatal("found a citizen that does not exist")
	}
}

func TestCPRBirthDate(t *testing.T) {
	tests := []struct {
		id   string
		want time.Time
		ok   bool
	}{
		{"1403871237", date(1987, time.March, 14), true},
		{"0101204001", date(2020, time.January, 1), true},
		{"0101509001", date(1950, time.January, 1), true},
		{"0101605001", date(1860, time.January, 1), true},
		{"2902004002", date(2000, time.February, 29), true},
		{"2902014002", time.Time{}, false},
		{"3104901234", time.Time{}, false},
		{"0013901234", time.Time{}, false},
		{"123", time.Time{}, false},
		{"12345678ab", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := cprBirthDate(tt.id)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("cprBirthDate(%s) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
}
