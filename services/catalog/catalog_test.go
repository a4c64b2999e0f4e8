package catalog_test

import (
	"context"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	"github.com/aperture-gov/aperture/services/catalog"
	"github.com/aperture-gov/aperture/services/demo"
	"github.com/aperture-gov/aperture/services/kit/kittest"
	"github.com/aperture-gov/aperture/services/kit/labels"
)

// registry is what this test reads of policies/registry.yaml: the authorities and their datasets.
type registry struct {
	Authorities []struct {
		ID       string   `yaml:"id"`
		Datasets []string `yaml:"datasets"`
	} `yaml:"authorities"`
}

// TestCatalogMatchesRegistry: the catalog serves exactly the authorities and datasets the policy
// registry names, so that `aperture dev` runs every authority a journey can ask and the policy tools
// know every schema.
func TestCatalogMatchesRegistry(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "policies", "registry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var reg registry
	if err := yaml.Unmarshal(data, &reg); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for _, a := range reg.Authorities {
		want[a.ID] = slices.Sorted(slices.Values(a.Datasets))
	}
	got := map[string][]string{}
	for _, a := range catalog.Examples(demo.New(1, time.Now())) {
		if _, dup := got[a.ID]; dup {
			t.Errorf("authority %q is listed twice", a.ID)
		}
		got[a.ID] = []string{}
		for _, ds := range a.Datasets {
			got[a.ID] = append(got[a.ID], ds.Name)
		}
		slices.Sort(got[a.ID])
	}
	for id, ds := range want {
		if g, ok := got[id]; !ok {
			t.Errorf("registry authority %q is not in the catalog (add its New to catalog.Examples)", id)
		} else if !slices.Equal(g, ds) {
			t.Errorf("authority %q serves %v, the registry lists %v", id, g, ds)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("catalog authority %q is not in policies/registry.yaml", id)
		}
	}
}

// Every featured citizen has a record at every authority, and an unknown citizen has none. An
// authority whose lookup is not connected yet (a fresh `aperture new authority`) answers Unimplemented
// for everyone, which its own test asserts; it is skipped here, by name in the log.
func TestExamplesServeFeaturedCitizens(t *testing.T) {
	pop := demo.New(30, time.Now())
	for _, a := range catalog.Examples(pop) {
		t.Run(a.ID, func(t *testing.T) {
			if len(a.Datasets) == 0 || a.DisplayName == "" {
				t.Fatalf("authority %s has no display name or no dataset", a.ID)
			}
			srv := kittest.Start(t, a)
			for _, ds := range a.Datasets {
				if ds.Description == "" {
					t.Errorf("dataset %s.%s has no description", a.ID, ds.Name)
				}
				_, err := srv.Client.Fetch(context.Background(), kittest.Request(pop.Featured()[0].ID, ds.Name))
				if status.Code(err) == codes.Unimplemented {
					t.Logf("%s.%s is not connected to data yet", a.ID, ds.Name)
					continue
				}
				for _, f := range pop.Featured() {
					// An empty mask: the record's existence is the point, and nothing is released.
					srv.Fetch(t, kittest.Request(f.ID, ds.Name))
				}
				_, err = srv.Client.Fetch(context.Background(), kittest.Request("3112999999", ds.Name))
				if status.Code(err) != codes.NotFound {
					t.Errorf("%s, unknown citizen: %v, want NotFound", ds.Name, err)
				}
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

// Every dataset, field and enum value of every example authority has a label in English and Danish,
// read the way the broker reads them: from the descriptors the authority sends in Describe, over
// gRPC. A citizen never reads a field path or an enum constant.
func TestExamplesLabelEverything(t *testing.T) {
	for _, a := range catalog.Examples(demo.New(1, time.Now())) {
		t.Run(a.ID, func(t *testing.T) {
			srv := kittest.Start(t, a)
			resp, err := srv.Client.Describe(context.Background(), &authorityv1.DescribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			files, err := protodesc.NewFiles(resp.GetDescriptors())
			if err != nil {
				t.Fatal(err)
			}
			for _, ds := range resp.GetDatasets() {
				d, err := files.FindDescriptorByName(protoreflect.FullName(ds.GetMessage()))
				if err != nil {
					t.Fatal(err)
				}
				md := d.(protoreflect.MessageDescriptor)
				if !labels.Complete(labels.Message(md)) {
					t.Errorf("dataset %s.%s (%s) has no message_label in English and Danish", a.ID, ds.GetName(), md.FullName())
				}
				fields := md.Fields()
				for i := range fields.Len() {
					missing, err := labels.Missing(md, string(fields.Get(i).Name()))
					if err != nil {
						t.Fatal(err)
					}
					for _, m := range missing {
						t.Errorf("%s.%s: %s", a.ID, ds.GetName(), m)
					}
				}
			}
		})
	}
}
