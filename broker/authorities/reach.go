package authorities

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// ServiceName is the gRPC health service name of an authority service (the authority kit serves it).
const ServiceName = "aperture.authority.v1.AuthorityService"

// CheckReachable asks each of ids for its gRPC health over the pool's own connection (the same
// mutual TLS as Fetch), in parallel, each bounded by timeout, and remembers the outcome for
// Reachability and the metrics. It returns the authorities that are not SERVING, with why.
func (p *Pool) CheckReachable(ctx context.Context, ids []string, timeout time.Duration) map[string]error {
	type result struct {
		id  string
		err error
	}
	results := make(chan result, len(ids))
	for _, id := range ids {
		go func() { results <- result{id, p.checkOne(ctx, id, timeout)} }()
	}
	down := map[string]error{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for range ids {
		r := <-results
		p.reach[r.id] = r.err
		if r.err != nil {
			down[r.id] = r.err
		}
	}
	return down
}

func (p *Pool) checkOne(ctx context.Context, id string, timeout time.Duration) error {
	cc, ok := p.conns[id] // written only by Dial
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknown, id)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil {
		return fmt.Errorf("%w: health check: %s", ErrUnavailable, status.Convert(err).Message())
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: health %s", ErrUnavailable, st)
	}
	return nil
}

// Reachability is the outcome of the last CheckReachable of each authority it asked about: nil if
// reachable.
func (p *Pool) Reachability() map[string]error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return maps.Clone(p.reach)
}

// reachable lists the checked authorities and whether each was reachable, sorted.
func (p *Pool) reachable() (ids []string, up []bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ids = slices.Sorted(maps.Keys(p.reach))
	for _, id := range ids {
		up = append(up, p.reach[id] == nil)
	}
	return ids, up
}
