package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/aperture-gov/aperture/broker/ids"
	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

const authorityEventUsage = `usage: aperture authority event --type TYPE --citizen ID [--id EVENT-ID] [--as AUTHORITY]

Publishes a life event to the broker as an authority (its certificate), as the authority's own
system would when it registers the event: the broker opens the journeys policies/events.yaml starts
on it and tells the agencies and the citizen. Publishing the same --id again opens nothing new.

`

// runAuthorityEvent publishes one life event as an authority: the development stand-in for the
// authority's registration system.
func runAuthorityEvent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("authority event", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(stderr, authorityEventUsage); fs.PrintDefaults() }
	var cf clientFlags
	cf.register(fs, "authority", "population")
	var (
		typ     = fs.String("type", "", "event type from policies/events.yaml, e.g. birth_registered (required)")
		citizen = fs.String("citizen", "", "the citizen the event is about (required)")
		id      = fs.String("id", "", "the authority's id for the event; the same id again is a redelivery (default: a new id)")
	)
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *typ == "" || *citizen == "" {
		return usagef("%s", authorityEventUsage)
	}
	now := time.Now()
	if *id == "" {
		*id = ids.New("ev", now)
	}
	cc, err := cf.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := cf.callContext(ctx)
	defer cancel()
	resp, err := brokerv1.NewLifeEventServiceClient(cc).PublishLifeEvent(ctx, &brokerv1.PublishLifeEventRequest{
		EventId: *id, Type: *typ, CitizenId: *citizen, OccurredAt: timestamppb.New(now),
	})
	if err != nil {
		return refused(err)
	}
	if cf.json {
		return printJSON(stdout, resp)
	}
	if resp.GetDuplicate() {
		fmt.Fprintf(stdout, "event %s was published before: nothing new opened\n", *id)
	} else {
		fmt.Fprintf(stdout, "event %s published\n", *id)
	}
	for _, c := range resp.GetCases() {
		fmt.Fprintf(stdout, "case %s  journey %s  at %s\n", c.GetCaseId(), c.GetJourney(), c.GetAgency())
	}
	return nil
}
