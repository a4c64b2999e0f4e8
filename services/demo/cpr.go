package demo

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// cprNumber returns an unused CPR-like number for someone born on birth. The 7th digit encodes the
// century as the real CPR register does (0–3: 1900–1999; 4–9: 2000–2036), and the last digit is even
// for women and odd for men. There is no modulus-11 check digit, as in CPR numbers issued since 2007.
func cprNumber(rng *rand.Rand, used map[string]bool, birth time.Time, female bool) string {
	for {
		var century int
		switch y := birth.Year(); {
		case y >= 1900 && y <= 1999:
			century = rng.IntN(4)
		case y >= 2000 && y <= 2036:
			century = 4 + rng.IntN(6)
		default:
			panic(fmt.Sprintf("demo: birth year %d outside the generated range", y))
		}
		last := 2*rng.IntN(5) + 1
		if female {
			last--
		}
		id := fmt.Sprintf("%s%d%02d%d", birth.Format("020106"), century, rng.IntN(100), last)
		if !used[id] {
			used[id] = true
			return id
		}
	}
}

// cprBirthDate decodes the birth date of a CPR-like number.
func cprBirthDate(id string) (time.Time, error) {
	if len(id) != 10 {
		return time.Time{}, fmt.Errorf("CPR number must have 10 digits")
	}
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return time.Time{}, fmt.Errorf("CPR number must be digits")
	}
	yy, _ := strconv.Atoi(id[4:6])
	century := 1900
	switch c := id[6]; {
	case c >= '4' && c <= '9' && yy <= 36:
		century = 2000
	case c >= '5' && c <= '8' && yy <= 57:
		century = 2000
	case c >= '5' && c <= '8':
		century = 1800
	}
	day, _ := strconv.Atoi(id[0:2])
	month, _ := strconv.Atoi(id[2:4])
	d := time.Date(century+yy, time.Month(month), day, 0, 0, 0, 0, time.UTC)
	if d.Day() != day || int(d.Month()) != month { // time.Date normalises 31 April to 1 May
		return time.Time{}, fmt.Errorf("CPR number has no valid date")
	}
	return d, nil
}
