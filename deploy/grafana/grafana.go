// Package grafana holds the broker's Grafana dashboard (aperture.json), built on the metrics the
// README's "Operations: metrics, health and tracing" section lists.
package grafana

import _ "embed"

// Dashboard is the dashboard JSON, to import into Grafana.
//
//go:embed aperture.json
var Dashboard []byte
