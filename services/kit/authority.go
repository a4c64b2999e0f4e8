// Package kit is the authority kit: everything an authority service needs except its data. An
// authority is a Go value that looks a citizen up and returns a typed protobuf record; the kit serves
// it as aperture.authority.v1.AuthorityService over mutual TLS, to the broker only. For each Fetch
// it validates the request and the field mask against the dataset's schema, evaluates the derived
// facts over the full record, reduces the record to the mask, and logs the access (names and ids,
// never values). It also serves gRPC health and reflection.
//
// A minimal authority:
//
//	a := &kit.Authority{ID: "library", DisplayName: "Public libraries", Datasets: []kit.Dataset{
//		kit.NewDataset("loans", "Books on loan.", func(ctx context.Context, id string) (*libraryv1.Loans, error) {
//			return store.Loans(ctx, id) // kit.ErrNotFound when there is none
//		}),
//	}}
//	srv, err := kit.NewServer(a, kit.WithAllowedCallers(mtls.ID(td, mtls.KindBroker, "")))
//	...
//	err = srv.Serve(ctx, lis, mtls.ServerConfig(src))
package kit

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ErrNotFound is returned (possibly wrapped) by a lookup when the authority holds no record of the
// citizen. The kit answers NOT_FOUND.
var ErrNotFound = errors.New("no record")

// ErrUnimplemented is returned (possibly wrapped) by a lookup that has no data source yet, as in a
// freshly scaffolded authority (`aperture new authority`). The kit answers UNIMPLEMENTED, so the
// broker and the architect see at once that the dataset is declared but not connected.
var ErrUnimplemented = errors.New("no data source")

// Authority is one data holder: its slug as used in policies, and the datasets it serves.
type Authority struct {
	// ID is the slug, e.g. "population"; its server certificate carries
	// spiffe://<trust-domain>/authority/<ID>.
	ID string
	// DisplayName is a human-readable name, e.g. "Civil Registration (population register)".
	DisplayName string
	Datasets    []Dataset
}

// Dataset is one record type an authority serves about a citizen.
type Dataset struct {
	// Name within the authority, e.g. "person" (policies write "population.person").
	Name string
	// Description says what the dataset holds, in one sentence.
	Description string
	// Message is a prototype of the record type; only its descriptor is used.
	Message proto.Message
	// Lookup returns the full record of a citizen, or an error wrapping ErrNotFound when there is
	// none; a nil record counts as none. Other errors are logged and answered with UNAVAILABLE, so
	// they MUST NOT contain the citizen id or field values. The kit never modifies the record.
	Lookup func(ctx context.Context, citizenID string) (proto.Message, error)
}

// NewDataset returns a Dataset whose lookup returns the concrete record type T (a generated message
// pointer such as *populationv1.Person), so that authorities write typed lookups.
func NewDataset[T proto.Message](name, description string, lookup func(ctx context.Context, citizenID string) (T, error)) Dataset {
	var zero T
	var prototype proto.Message
	if any(zero) != nil { // T is a concrete pointer type; an interface T is rejected by NewServer
		prototype = zero.ProtoReflect().Type().Zero().Interface()
	}
	return Dataset{
		Name:        name,
		Description: description,
		Message:     prototype,
		Lookup: func(ctx context.Context, citizenID string) (proto.Message, error) {
			rec, err := lookup(ctx, citizenID)
			if err != nil {
				return nil, err
			}
			return rec, nil
		},
	}
}

// Timestamp converts t for a record field; the zero time gives nil, so that an unset date (an
// employment that has not ended) stays unset instead of becoming 1 January year 1.
func Timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
