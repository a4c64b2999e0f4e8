package catalog_test

import (
	"context"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/kittest"
)

// Every featured citizen has a record at every authority, except the datasets listed here.
func TestExamplesServeFeaturedCitizens(t *testing.T) {
	pop := demo.New(30, time.Now())
	authorities := catalog.Examples(pop)
	want := map[string]string{"population": "person", "tax": "income", "health": "patient", "employment": "history", "municipality": "services", "education": "enrolment"}
	if len(authorities) != len(want) {
		t.Fatalf("%d authorities, want %d", len(authorities), len(want))
	}
	for _, a := range authorities {
		t.Run(a.ID, func(t *testing.T) {
			if len(a.Datasets) != 1 || a.Datasets[0].Name != want[a.ID] || a.DisplayName == "" {
				t.Fatalf("authority %s serves %v", a.ID, a.Datasets)
			}
			srv := kittest.Start(t, a)
			for _, f := range pop.Featured() {
				// An empty mask: the record's existence is the point, and nothing is released.
				srv.Fetch(t, kittest.Request(f.ID, want[a.ID]))
			}
			_, err := srv.Client.Fetch(context.Background(), kittest.Request("3112999999", want[a.ID]))
			if status.Code(err) != codes.NotFound {
				t.Errorf("unknown citizen: %v, want NotFound", err)
			}
		})
	}
}

// services/ is the authority side: it must not depend on the broker or the command.
func TestServicesDoNotImportBrokerOrCmd(t *testing.T) {
	const module = "github.com/aperture-gov/aperture/"
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module+"broker") || strings.HasPrefix(p, module+"cmd") {
				t.Errorf("%s imports %s", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
