package policy

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// ParentalCustody names the field of a parent's own record (in Dataset, keyed by the parent's citizen
// id) that lists the children in their custody: a repeated message whose messages carry the child's
// "citizen_id", "birth_date" (google.protobuf.Timestamp) and "given_names".
type ParentalCustody struct {
	DatasetRef
	Field         string
	AgeOfMajority int
}

// Child field names the custody field's messages must have.
const (
	CustodyChildID    = "citizen_id"
	CustodyBirthDate  = "birth_date"
	CustodyGivenNames = "given_names"
)

// check fails unless the authority's schema has the field in the shape the broker reads.
func (pc *ParentalCustody) check(descs Descriptors) error {
	md, err := descs.Dataset(pc.Authority, pc.Dataset)
	if err != nil {
		return fmt.Errorf("parental_custody: %w", err)
	}
	f := md.Fields().ByName(protoreflect.Name(pc.Field))
	if f == nil || !f.IsList() || f.Message() == nil {
		return fmt.Errorf("parental_custody: %s.%s has no repeated message field %q", pc.Authority, pc.Dataset, pc.Field)
	}
	want := map[string]func(protoreflect.FieldDescriptor) bool{
		CustodyChildID:    func(f protoreflect.FieldDescriptor) bool { return f.Kind() == protoreflect.StringKind },
		CustodyGivenNames: func(f protoreflect.FieldDescriptor) bool { return f.Kind() == protoreflect.StringKind },
		CustodyBirthDate: func(f protoreflect.FieldDescriptor) bool {
			return f.Message() != nil && f.Message().FullName() == "google.protobuf.Timestamp"
		},
	}
	for name, ok := range want {
		cf := f.Message().Fields().ByName(protoreflect.Name(name))
		if cf == nil || cf.IsList() || !ok(cf) {
			return fmt.Errorf("parental_custody: %s.%s field %q has no %s of the right type", pc.Authority, pc.Dataset, pc.Field, name)
		}
	}
	return nil
}
