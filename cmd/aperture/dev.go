package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/aperture-gov/aperture/broker/natsembed"
	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/policies"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var (
		data       = fs.String("data", ".aperture", "data directory: NATS store, keys, development CA")
		listen     = fs.String("listen", "127.0.0.1:7443", "broker gRPC address")
		natsListen = fs.String("nats-listen", "127.0.0.1:4222", `embedded NATS address for agency systems subscribing to case events ("" for none)`)
		portalAddr = fs.String("portal", "127.0.0.1:8080", "citizen portal address (with the development login)")
		citizenAPI = fs.String("citizen-listen", "127.0.0.1:7444", "citizen gRPC API address")
		citizens   = fs.Int("citizens", 1000, "number of synthetic demo citizens")
		policyDir  = fs.String("policies", "", "policy directory (default: the policies built into the binary)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		witnesses  = fs.Int("witnesses", 1, "local witnesses cosigning every checkpoint (keys and state in DATA/witness; 0 for none)")
		metrics    = fs.String("metrics-listen", "127.0.0.1:9464", `HTTP address of /metrics (Prometheus), /healthz and /readyz ("" for none)`)
	)
	addConfigFlag(fs)
	if err := parseFlagsNoArgs(fs, args, stderr); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	defer lowerGCForEmbeddedNATS(hostTHP())()
	pfs, err := policyFS(*policyDir)
	if err != nil {
		return err
	}
	st, err := startStack(ctx, stackOptions{
		DataDir: *data, Listen: *listen, NATSListen: *natsListen, Citizens: *citizens,
		Policies: pfs, Logger: logger, PortalListen: *portalAddr, CitizenListen: *citizenAPI,
		Witnesses: *witnesses, MetricsListen: *metrics,
	})
	if err != nil {
		return err
	}
	printDevBanner(stdout, st, *data)
	return st.Run(ctx)
}

func policyFS(dir string) (fs.FS, error) {
	if dir == "" {
		return policies.Files(), nil
	}
	if _, err := os.Stat(filepath.Join(dir, "registry.yaml")); err != nil {
		return nil, fmt.Errorf("policy directory %s: %w", dir, err)
	}
	return os.DirFS(dir), nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log level %q: %v", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func printDevBanner(w io.Writer, st *stack, data string) {
	b := st.Broker.Bundle()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nAperture dev stack is running. Ctrl-C stops it; state is kept in %s/.\n\n", data)
	if st.Portal != nil {
		fmt.Fprintf(tw, "  citizen portal\t%s/   (development login: pick a demo citizen)\n", st.Portal.base)
		fmt.Fprintf(tw, "  citizen API (gRPC, TLS)\t%s   OpenID Connect ID tokens from %s/dev-oidc\n", st.Broker.CitizenAddr(), st.Portal.base)
		fmt.Fprintf(tw, "  data report (public)\t%s/report   publish with: aperture report --from YYYY-MM-DD --to YYYY-MM-DD --format json --out %s\n",
			st.Portal.base, filepath.Join(st.Portal.reports, "YEAR.json"))
	}
	fmt.Fprintf(tw, "  broker (gRPC, mTLS)\t%s\n", st.Broker.Addr())
	if u := st.Broker.NATSURL(); u != "" {
		pki := filepath.Join(data, "pki")
		fmt.Fprintf(tw, "  NATS (case events)\t%s   an agency may only subscribe to %s\n", u, natsembed.EventSubject("<agency>"))
		fmt.Fprintf(tw, "\tmutual TLS with its certificate %s.{crt,key}, server CA %s\n",
			filepath.Join(pki, "agency-<agency>"), filepath.Join(pki, "ca.crt"))
		if a := firstStepAgency(b); a != "" {
			fmt.Fprintf(tw, "\te.g. %s\n", natsSubCommand(u, pki, a))
		}
	}
	ids := make([]string, 0, len(st.AuthorityAddrs))
	for id := range st.AuthorityAddrs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, id := range ids {
		label := ""
		if i == 0 {
			label = "  authorities"
		}
		fmt.Fprintf(tw, "%s\t%-13s %s\n", label, id, st.AuthorityAddrs[id])
	}
	var js []string
	for _, j := range b.Journeys() {
		js = append(js, j.ID)
	}
	for i, wt := range st.Witnesses {
		label := ""
		if i == 0 {
			label = "  witnesses"
		}
		fmt.Fprintf(tw, "%s\t%-13s %s   cosigns every checkpoint (key %s)\n", label, wt.Name, wt.URL, wt.VKey)
	}
	if len(st.Witnesses) > 0 {
		fmt.Fprintf(tw, "\t%s   the witness policy (aperture audit verify --witness-policy …)\n", devWitnessPolicyFile(data))
	}
	if st.Portal != nil {
		fmt.Fprintf(tw, "  public log\t%s/log/checkpoint   C2SP tlog-tiles: checkpoint and hash tiles, no record contents\n", st.Portal.base)
	}
	if st.Metrics != nil {
		fmt.Fprintf(tw, "  metrics\thttp://%s/metrics   Prometheus; health on /healthz and /readyz (deploy/grafana has a dashboard)\n", st.Metrics.Addr())
	}
	fmt.Fprintf(tw, "  journeys\t%s\n", strings.Join(js, ", "))
	fmt.Fprintf(tw, "  policy version\t%s\n", b.Version)
	fmt.Fprintf(tw, "  certificates\t%s/pki (agencies: %s)\n", data, agencyList(st))
	tw.Flush()

	fmt.Fprintf(w, "\nDemo citizens (%d in all):\n", len(st.Population.IDs()))
	for _, f := range st.Population.Featured() {
		fmt.Fprintf(w, "  %s  %s: %s\n", f.ID, f.Name, f.Story)
	}
	if ft := st.Population.Featured(); len(ft) > 0 {
		id := ft[0].ID
		fmt.Fprintf(w, `
Try it in another terminal (README.md walks through it):
  go run ./cmd/aperture case open --as municipality --journey sickness-benefit --citizen %s
  go run ./cmd/aperture case explain --as municipality CASE_ID
  go run ./cmd/aperture case release --as municipality CASE_ID population.person
  go run ./cmd/aperture log --citizen %s
  go run ./cmd/aperture citizen log --citizen %s --lang da      # the citizen's own view
  go run ./cmd/aperture citizen switches list --citizen %s

`, id, id, id, id)
		// A featured parent acts for their child in the portal (Power of attorney → Act for this person).
		for _, f := range ft {
			if c, ok := st.Population.Citizen(f.ID); ok && len(c.Custody) > 0 && b.Registry.ParentalCustody != nil {
				fmt.Fprintf(w, "A parent acts for a child: sign in to the portal as %s (%s), open Power of attorney, choose Act for this person by %s.\n\n",
					f.ID, f.Name, c.Custody[0].GivenNames)
				break
			}
		}
	}
	// Proactive journeys: each life event of the policies, published as its first authority would.
	if ft := st.Population.Featured(); len(ft) > 1 && len(b.Events()) > 0 {
		fmt.Fprintf(w, "Proactive journeys (policies/events.yaml): an authority reports a life event, the broker opens the journey:\n")
		for _, e := range b.Events() {
			if len(e.Starts) == 0 || len(e.PublishedBy) == 0 {
				continue
			}
			journeys := make([]string, len(e.Starts))
			for i, s := range e.Starts {
				journeys[i] = s.Journey
			}
			fmt.Fprintf(w, "  go run ./cmd/aperture authority event --as %s --type %s --citizen %s   # opens %s\n",
				e.PublishedBy[0], e.Type, ft[1].ID, strings.Join(journeys, ", "))
		}
		fmt.Fprintln(w)
	}
}

// firstStepAgency is the agency that learns of a new case first: the one acting at the first step of
// the first journey, for the example subscription.
func firstStepAgency(b *policy.Bundle) string {
	for _, j := range b.Journeys() {
		if len(j.Steps) > 0 {
			return j.Steps[0].Agency
		}
	}
	return ""
}

// natsSubCommand is how agency subscribes to its events with the nats CLI (github.com/nats-io/natscli).
func natsSubCommand(url, pki, agency string) string {
	base := filepath.Join(pki, "agency-"+agency)
	return fmt.Sprintf("nats --tlscert %s.crt --tlskey %s.key --tlsca %s -s %s sub '%s'",
		base, base, filepath.Join(pki, "ca.crt"), url, natsembed.EventSubject(agency))
}

func agencyList(st *stack) string {
	var out []string
	for _, a := range st.Registry.Agencies {
		out = append(out, a.ID)
	}
	return strings.Join(out, ", ")
}
