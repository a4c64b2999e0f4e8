package kit

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	brokerv1 "github.com/aperture-gov/aperture/proto/aperture/broker/v1"
)

// Corrections is an authority's side of citizens' correction requests: the broker keeps the queue of
// requests about the authority's data (aperture.broker.v1.CorrectionService), and the authority's staff
// or systems work through it. cc is a connection to the broker made with the authority's own
// certificate (mtls.ClientConfig); the broker shows it only requests about its own datasets.
//
//	q := kit.NewCorrections(cc)
//	open, err := q.Open(ctx)
//	…
//	_, err = q.Decide(ctx, open[0].GetId(), true, "We have corrected your address.", "staff-17")
//
// The requests carry the citizen id, the citizen's reason and the value they propose: citizen data,
// for the authority's case handling only; do not log them.
type Corrections struct {
	c brokerv1.CorrectionServiceClient
}

// NewCorrections returns the correction queue client over cc.
func NewCorrections(cc grpc.ClientConnInterface) *Corrections {
	return &Corrections{c: brokerv1.NewCorrectionServiceClient(cc)}
}

// List returns the authority's requests, newest first (all, decided ones too).
func (q *Corrections) List(ctx context.Context) ([]*brokerv1.CorrectionRequest, error) {
	resp, err := q.c.ListCorrectionRequests(ctx, &brokerv1.ListCorrectionRequestsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list correction requests: %w", err)
	}
	return resp.GetRequests(), nil
}

// Open returns the requests not decided yet, newest first.
func (q *Corrections) Open(ctx context.Context) ([]*brokerv1.CorrectionRequest, error) {
	resp, err := q.c.ListCorrectionRequests(ctx, &brokerv1.ListCorrectionRequestsRequest{OnlyOpen: true})
	if err != nil {
		return nil, fmt.Errorf("list open correction requests: %w", err)
	}
	return resp.GetRequests(), nil
}

// Decide accepts (accept) or rejects request id with reason, the words the citizen reads, by staff
// member by.
func (q *Corrections) Decide(ctx context.Context, id string, accept bool, reason, by string) (*brokerv1.CorrectionRequest, error) {
	if reason == "" || by == "" {
		return nil, errors.New("a decision needs a reason for the citizen and the staff member deciding")
	}
	resp, err := q.c.DecideCorrectionRequest(ctx, &brokerv1.DecideCorrectionRequestRequest{
		RequestId: id, Accept: accept, Reason: reason, DecidedBy: by,
	})
	if err != nil {
		return nil, fmt.Errorf("decide correction request %s: %w", id, err)
	}
	return resp.GetRequest(), nil
}

// Work decides every open request with decide, which returns whether to accept and the reason (or an
// error, which stops the walk). It is the few lines an authority's system needs to handle requests it
// can decide on its own rules; the rest stay open for its staff.
func (q *Corrections) Work(ctx context.Context, by string, decide func(*brokerv1.CorrectionRequest) (accept, skip bool, reason string, err error)) (int, error) {
	open, err := q.Open(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range open {
		accept, skip, reason, err := decide(r)
		if err != nil {
			return n, fmt.Errorf("decide correction request %s: %w", r.GetId(), err)
		}
		if skip {
			continue
		}
		if _, err := q.Decide(ctx, r.GetId(), accept, reason, by); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
