package kit_test

import (
	"context"
	"net"

	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// The code between the markers is the example in services/README.md; TestReadmeExample keeps the two
// identical, and this file keeps it compiling.

// README BEGIN

// NewRegistry returns an authority that serves people from a map.
func NewRegistry(people map[string]*populationv1.Person) *kit.Authority {
	return &kit.Authority{ID: "population", DisplayName: "Civil Registration", Datasets: []kit.Dataset{
		kit.NewDataset("person", "Name, address and household of a citizen.",
			func(_ context.Context, citizenID string) (*populationv1.Person, error) {
				p, ok := people[citizenID]
				if !ok {
					return nil, kit.ErrNotFound // answered as NOT_FOUND
				}
				return p, nil // the kit masks it, derives facts from it and logs the access
			}),
	}}
}

// ServeRegistry serves the authority to the broker over mutual TLS until ctx ends.
func ServeRegistry(ctx context.Context, caDir, addr string, a *kit.Authority) error {
	ca, err := mtls.OpenDevCA(caDir, "aperture.local")
	if err != nil {
		return err
	}
	src, err := ca.Source(mtls.KindAuthority, a.ID) // spiffe://aperture.local/authority/population
	if err != nil {
		return err
	}
	srv, err := kit.NewServer(a, kit.WithAllowedCallers(mtls.ID(ca.TrustDomain(), mtls.KindBroker, "")))
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, lis, mtls.ServerConfig(src))
}

// README END

func ExampleNewServer() {
	people := map[string]*populationv1.Person{"1403871237": {Name: &populationv1.Name{GivenNames: "Lars"}}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real service runs until SIGTERM
	_ = ServeRegistry(ctx, "data/ca", "127.0.0.1:7001", NewRegistry(people))
}
