// Package education is the example school register authority, the sixth authority of the guide
// services/ADDING_AN_AUTHORITY.md. It serves dataset "enrolment": where a citizen's children go to
// school, in which grade, and whether they receive special needs support — and their marks, which the
// register holds but no journey releases.
package education

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	educationv1 "github.com/aperture-gov/aperture/proto/aperture/education/v1"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit"
)

// ID is the authority's slug.
const ID = "education"

// New returns the authority serving pop. Every citizen of pop has a record; one without children at
// school has no children in it, so that "no enrolment" is an answer and not an error.
func New(pop *demo.Population) *kit.Authority {
	return &kit.Authority{ID: ID, DisplayName: "School register (Ministry of Children and Education)", Datasets: []kit.Dataset{
		kit.NewDataset("enrolment", "The school enrolments of the citizen's children: school, grade, special needs support, and marks.",
			func(_ context.Context, id string) (*educationv1.Enrolment, error) {
				c, ok := pop.Citizen(id)
				if !ok {
					return nil, kit.ErrNotFound
				}
				return enrolment(c, pop.Ref()), nil
			}),
	}}
}

// enrolment derives the register's record from the demo population's school places. The details the
// population does not hold (institution number, start date, support, marks) are derived from the
// child's id and the school's name, so that they are stable across runs.
func enrolment(c *demo.Citizen, ref time.Time) *educationv1.Enrolment {
	e := &educationv1.Enrolment{CitizenId: c.ID}
	for _, s := range c.Schools {
		h := hash(s.ChildID)
		// Children start in August of the year they enter the kindergarten class.
		start := time.Date(ref.Year()-int(s.Grade), time.August, 12, 0, 0, 0, 0, time.UTC)
		if ref.Month() < time.August {
			start = start.AddDate(-1, 0, 0)
		}
		ce := &educationv1.ChildEnrolment{
			ChildCitizenId:         s.ChildID,
			SchoolId:               fmt.Sprintf("%06d", 280000+hash(s.School)%20000),
			SchoolName:             s.School,
			SchoolMunicipalityCode: c.Address.MunicipalityCode,
			Grade:                  s.Grade,
			EnrolledOn:             kit.Timestamp(start),
			SpecialNeedsSupport:    h%5 == 0,
		}
		scale := []int32{-3, 0, 2, 4, 7, 10, 12}
		for i, subject := range []string{"Danish", "Mathematics", "English"} {
			ce.Marks = append(ce.Marks, &educationv1.Mark{
				Subject: subject, Mark: scale[(h>>(4*i))%uint32(len(scale))],
				GivenOn: kit.Timestamp(start.AddDate(int(s.Grade), 10, 0)),
			})
		}
		e.Children = append(e.Children, ce)
	}
	return e
}

func hash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}
