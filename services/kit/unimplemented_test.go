package kit_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	populationv1 "github.com/aperture-gov/aperture/proto/aperture/population/v1"
	"github.com/aperture-gov/aperture/services/kit"
	"github.com/aperture-gov/aperture/services/kit/kittest"
)

// TestUnimplementedLookup: a dataset without a data source (a scaffolded authority) answers
// UNIMPLEMENTED with the dataset's name, not UNAVAILABLE, so nobody mistakes it for an outage.
func TestUnimplementedLookup(t *testing.T) {
	a := &kit.Authority{ID: "scaffold", DisplayName: "Scaffold", Datasets: []kit.Dataset{
		kit.NewDataset("person", "A person.", func(context.Context, string) (*populationv1.Person, error) {
			return nil, fmt.Errorf("scaffold.person: %w", kit.ErrUnimplemented)
		}),
	}}
	srv := kittest.Start(t, a)
	_, err := srv.Client.Fetch(context.Background(), kittest.Request("1403871237", "person", "name"))
	if status.Code(err) != codes.Unimplemented || status.Convert(err).Message() != "dataset scaffold.person has no data source yet" {
		t.Fatalf("Fetch: %v, want Unimplemented naming the dataset", err)
	}
}
