// Package authorities holds the broker's connections to the authority services in the registry: one
// mutual-TLS gRPC connection each, verified against the identity the registry names, and the dataset
// schemas each authority describes about itself. It implements policy.Descriptors, so journeys are
// checked against the schemas the authorities actually serve.
package authorities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/aperture-gov/aperture/broker/policy"
	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

var (
	// ErrUnknown means the registry has no such authority.
	ErrUnknown = errors.New("unknown authority")
	// ErrNotFound means the authority holds no record of the citizen.
	ErrNotFound = errors.New("authority holds no record")
	// ErrUnavailable means the authority could not be reached or did not answer in time.
	ErrUnavailable = errors.New("authority unavailable")
)

// Pool is the set of authority connections.
type Pool struct {
	log   *slog.Logger
	conns map[string]*grpc.ClientConn
	m     *metrics

	mu       sync.RWMutex
	reach    map[string]error // authority → result of the last reachability check
	clients  map[string]authorityv1.AuthorityServiceClient
	datasets map[string]map[string]protoreflect.MessageDescriptor // authority → dataset → message
}

// Options are the pool's optional collaborators.
type Options struct {
	// Meter records fetch latency and errors per authority and reachability (aperture_authority_*);
	// nil records none.
	Meter metric.MeterProvider
	// DialOptions are added to every connection (e.g. tracing's stats handler).
	DialOptions []grpc.DialOption
}

// Dial creates a connection per registry authority. Connections are lazy: nothing is sent until Describe.
func Dial(reg *policy.Registry, src mtls.Source, log *slog.Logger, opts Options) (*Pool, error) {
	p := &Pool{
		log:      log,
		conns:    map[string]*grpc.ClientConn{},
		clients:  map[string]authorityv1.AuthorityServiceClient{},
		datasets: map[string]map[string]protoreflect.MessageDescriptor{},
		reach:    map[string]error{},
	}
	var err error
	if p.m, err = newMetrics(opts.Meter, p); err != nil {
		return nil, fmt.Errorf("authority metrics: %w", err)
	}
	for _, a := range reg.Authorities {
		creds := credentials.NewTLS(mtls.ClientConfig(src, a.Identity))
		dopts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts.DialOptions...)
		cc, err := grpc.NewClient(a.Address, dopts...)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("dial authority %q at %s: %w", a.ID, a.Address, err)
		}
		p.conns[a.ID] = cc
		p.clients[a.ID] = authorityv1.NewAuthorityServiceClient(cc)
	}
	return p, nil
}

// Describe asks every authority for its datasets and schemas, retrying until ctx ends, and checks that
// each serves the datasets the registry lists.
func (p *Pool) Describe(ctx context.Context, reg *policy.Registry) error {
	for _, a := range reg.Authorities {
		var (
			resp *authorityv1.DescribeResponse
			err  error
		)
		for attempt := 0; ; attempt++ {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err = p.clients[a.ID].Describe(callCtx, &authorityv1.DescribeRequest{})
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			if attempt%10 == 0 {
				p.log.Info("waiting for authority", "authority", a.ID, "address", a.Address, "err", status.Convert(err).Message())
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		if err != nil {
			return fmt.Errorf("describe authority %q at %s: %w", a.ID, a.Address, err)
		}
		if err := p.register(a, resp); err != nil {
			return fmt.Errorf("describe authority %q: %w", a.ID, err)
		}
	}
	return nil
}

func (p *Pool) register(a *policy.Authority, resp *authorityv1.DescribeResponse) error {
	if resp.GetAuthority() != a.ID {
		return fmt.Errorf("service says it is %q", resp.GetAuthority())
	}
	files, err := protodesc.NewFiles(resp.GetDescriptors())
	if err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	ds := map[string]protoreflect.MessageDescriptor{}
	for _, d := range resp.GetDatasets() {
		desc, err := files.FindDescriptorByName(protoreflect.FullName(d.GetMessage()))
		if err != nil {
			return fmt.Errorf("dataset %q: message %s: %w", d.GetName(), d.GetMessage(), err)
		}
		md, ok := desc.(protoreflect.MessageDescriptor)
		if !ok {
			return fmt.Errorf("dataset %q: %s is not a message", d.GetName(), d.GetMessage())
		}
		ds[d.GetName()] = md
	}
	for _, name := range a.Datasets {
		if _, ok := ds[name]; !ok {
			return fmt.Errorf("registry lists dataset %q but the service does not serve it", name)
		}
	}
	p.mu.Lock()
	p.datasets[a.ID] = ds
	p.mu.Unlock()
	return nil
}

// Dataset implements policy.Descriptors.
func (p *Pool) Dataset(authority, dataset string) (protoreflect.MessageDescriptor, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ds, ok := p.datasets[authority]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknown, authority)
	}
	md, ok := ds[dataset]
	if !ok {
		names := make([]string, 0, len(ds))
		for n := range ds {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("authority %q serves no dataset %q (it serves %v)", authority, dataset, names)
	}
	return md, nil
}

// Fetch calls the authority. Errors wrap ErrNotFound, ErrUnavailable or ErrUnknown; other failures are
// returned wrapped with the authority's name (the authority's message holds no citizen data by contract).
func (p *Pool) Fetch(ctx context.Context, authority string, req *authorityv1.FetchRequest) (*authorityv1.FetchResponse, error) {
	p.mu.RLock()
	c, ok := p.clients[authority]
	p.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknown, authority)
	}
	start := time.Now()
	resp, err := c.Fetch(ctx, req)
	if err == nil {
		p.m.fetched(ctx, authority, resultOK, start)
		return resp, nil
	}
	switch status.Code(err) {
	case codes.NotFound:
		p.m.fetched(ctx, authority, resultNotFound, start)
		return nil, fmt.Errorf("fetch %s.%s: %w", authority, req.GetDataset(), ErrNotFound)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		p.m.fetched(ctx, authority, resultUnavailable, start)
		return nil, fmt.Errorf("fetch %s.%s: %w: %s", authority, req.GetDataset(), ErrUnavailable, status.Convert(err).Message())
	}
	p.m.fetched(ctx, authority, resultError, start)
	return nil, fmt.Errorf("fetch %s.%s: %w", authority, req.GetDataset(), err)
}

// Close closes every connection.
func (p *Pool) Close() {
	p.m.unregister()
	for _, cc := range p.conns {
		cc.Close()
	}
}
