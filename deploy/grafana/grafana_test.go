package grafana_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/aperture-gov/aperture/deploy/grafana"
)

// TestDashboardUsesDocumentedMetrics: the dashboard is valid JSON and every aperture_* series it
// queries is one the README documents, so a renamed metric cannot leave a silently empty panel.
func TestDashboardUsesDocumentedMetrics(t *testing.T) {
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(grafana.Dashboard, &d); err != nil {
		t.Fatalf("aperture.json: %v", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`aperture_[a-z_]+`)
	seen := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				seen++
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					base = strings.TrimSuffix(base, suffix)
				}
				if !strings.Contains(string(readme), base) && !strings.Contains(string(readme), strings.TrimSuffix(base, "_total")+"_total") {
					t.Errorf("panel %q queries %s, which the README does not document", p.Title, m)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("the dashboard queries no aperture metric")
	}
}
