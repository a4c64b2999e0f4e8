package main

import (
	"testing"

	"google.golang.org/grpc/codes"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// ListCases pages with a keyset token bound to the caller and the filter: every case once, and a
// token replayed with another filter or by another agency is refused.
func TestListCasesPagesWithABoundToken(t *testing.T) {
	ts := newTestStack(t)
	j, _ := ts.Broker.Bundle().Journey("sickness-benefit")
	opener := j.Steps[0].Agency
	opened := map[string]bool{}
	for range 5 {
		opened[ts.open(opener, j.ID, ts.citizenFor(j.ID)).GetId()] = true
	}
	client := ts.agency(opener)
	seen := map[string]bool{}
	var token string
	for {
		resp, err := client.ListCases(cw("cw-page"), &brokerv1.ListCasesRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetCases() {
			if seen[c.GetId()] {
				t.Fatalf("case %s on two pages", c.GetId())
			}
			seen[c.GetId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		_, err = client.ListCases(cw("cw-page"), &brokerv1.ListCasesRequest{PageSize: 2, PageToken: token, OnlyCurrent: true})
		wantCode(t, err, codes.InvalidArgument, "another query")
		for _, a := range ts.Registry.Agencies {
			if a.ID != opener {
				_, err = ts.agency(a.ID).ListCases(cw("cw-other"), &brokerv1.ListCasesRequest{PageSize: 2, PageToken: token})
				wantCode(t, err, codes.InvalidArgument, "another query")
				break
			}
		}
	}
	if len(seen) != len(opened) {
		t.Fatalf("listed %d cases, opened %d", len(seen), len(opened))
	}
	for id := range opened {
		if !seen[id] {
			t.Errorf("case %s not listed", id)
		}
	}
}
