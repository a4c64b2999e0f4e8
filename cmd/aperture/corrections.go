package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
	"github.com/aperture-gov/aperture/services/kit"
)

const authorityCorrectionsUsage = `usage: aperture authority corrections list [--open] [--as AUTHORITY]
       aperture authority corrections accept|reject ID --reason TEXT [--by STAFF] [--as AUTHORITY]

The authority's staff work through citizens' requests to correct the authority's data, with the
authority's certificate: list them (only requests about its own datasets), and accept or reject one
with a reason the citizen reads. The citizen sees the outcome in the portal; the agencies whose cases
used the field are told that it was disputed and decided, never the value proposed.

The list shows the citizen id and the value the citizen proposed: citizen data, for handling the
request only.

`

// runAuthorityCorrections is the authority staff's CLI for correction requests.
func runAuthorityCorrections(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("%s", authorityCorrectionsUsage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("authority corrections "+verb, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, authorityCorrectionsUsage); fs.PrintDefaults() }
	var cf clientFlags
	cf.register(fs, "authority", "population")
	var (
		onlyOpen = fs.Bool("open", false, "list only requests not decided yet")
		reason   = fs.String("reason", "", "the reason for the decision, in words the citizen understands (accept, reject)")
		by       = fs.String("by", "", "the staff member deciding (default: AUTHORITY-staff)")
	)
	pos, err := parseFlags(fs, args[1:], stderr)
	if err != nil {
		return err
	}
	switch {
	case verb == "list" && len(pos) == 0:
	case (verb == "accept" || verb == "reject") && len(pos) == 1 && *reason != "":
	default:
		return usagef("%s", authorityCorrectionsUsage)
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := cf.callContext(ctx)
	defer cancel()
	q := kit.NewCorrections(cc)
	if verb == "list" {
		list := q.List
		if *onlyOpen {
			list = q.Open
		}
		rs, err := list(ctx)
		if err != nil {
			return refused(err)
		}
		if cf.json {
			return printJSON(stdout, &brokerv1.ListCorrectionRequestsResponse{Requests: rs})
		}
		if len(rs) == 0 {
			fmt.Fprintln(stdout, "no correction requests")
		}
		for _, r := range rs {
			printCorrection(stdout, r)
		}
		return nil
	}
	staff := *by
	if staff == "" {
		staff = cf.as + "-staff"
	}
	r, err := q.Decide(ctx, pos[0], verb == "accept", *reason, staff)
	if err != nil {
		return refused(err)
	}
	if cf.json {
		return printJSON(stdout, r)
	}
	printCorrection(stdout, r)
	return nil
}

func printCorrection(w io.Writer, r *brokerv1.CorrectionRequest) {
	status := strings.ToLower(strings.TrimPrefix(r.GetStatus().String(), "CORRECTION_STATUS_"))
	fmt.Fprintf(w, "%s  %s  %s.%s  requested %s  citizen %s\n", r.GetId(), status, r.GetDataset(), r.GetField(),
		r.GetRequestedAt().AsTime().Local().Format(time.DateTime), r.GetCitizenId())
	fmt.Fprintf(w, "    reason: %s\n", r.GetReason())
	if r.GetProposedValue() != "" {
		fmt.Fprintf(w, "    proposed value: %s\n", r.GetProposedValue())
	}
	if r.GetDecidedAt() != nil {
		fmt.Fprintf(w, "    decided %s by %s: %s\n", r.GetDecidedAt().AsTime().Local().Format(time.DateTime), r.GetDecidedBy(), r.GetDecisionReason())
	}
}
