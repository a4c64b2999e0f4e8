package kit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"cel.dev/cel-go/cel"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	authorityv1 "github.com/aperture-gov/aperture/proto/aperture/authority/v1"
	"github.com/aperture-gov/aperture/services/kit/derive"
	"github.com/aperture-gov/aperture/services/kit/fieldmask"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

const (
	// maxMaskPaths matches the most fields a policy release rule may list.
	maxMaskPaths = 256
	// maxPrograms bounds the compiled-expression cache. Policies hold a few dozen expressions; the
	// bound only matters if a caller sends ever new ones, and then the cache starts over.
	maxPrograms = 1024
	// maxMasks bounds the prepared-mask cache the same way: a policy has a few masks per dataset.
	maxMasks = 1024
	// shutdownGrace is how long Serve waits for running calls before it closes connections.
	shutdownGrace = 10 * time.Second
)

var (
	slugRE    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
	datasetRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
)

type options struct {
	clock   func() time.Time
	logger  *slog.Logger
	callers []string
}

// Option configures a Server.
type Option func(*options)

// WithClock sets the clock that derived facts see as `now` (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithAllowedCallers adds SPIFFE IDs that may call the AuthorityService; in practice the broker's.
// A server with none refuses to start: the default is to serve nobody.
func WithAllowedCallers(ids ...string) Option {
	return func(o *options) { o.callers = append(o.callers, ids...) }
}

// dataset is a Dataset prepared for serving.
type dataset struct {
	Dataset
	md  protoreflect.MessageDescriptor
	env *cel.Env
}

// Server serves one Authority. Create it with NewServer.
type Server struct {
	authorityv1.UnimplementedAuthorityServiceServer

	a         *Authority
	datasets  map[string]*dataset
	describe  *authorityv1.DescribeResponse
	allowed   map[string]bool
	validator protovalidate.Validator
	health    *health.Server
	now       func() time.Time
	log       *slog.Logger

	mu       sync.Mutex
	programs map[programKey]cel.Program
	masks    map[string]fieldmask.Mask // by the paths joined with NUL, which no path contains
}

type programKey struct{ dataset, expr string }

// NewServer checks the authority's definition and prepares it for serving: a dataset schema that
// derived facts cannot be evaluated over, a duplicate name or a missing lookup is an error here, not
// at the first request.
func NewServer(a *Authority, opts ...Option) (*Server, error) {
	o := options{clock: time.Now, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if a == nil || !slugRE.MatchString(a.ID) {
		return nil, errors.New("authority kit: authority id must match " + slugRE.String())
	}
	if len(a.Datasets) == 0 {
		return nil, fmt.Errorf("authority %s: no datasets", a.ID)
	}
	if len(o.callers) == 0 {
		return nil, fmt.Errorf("authority %s: no allowed callers (use WithAllowedCallers with the broker's id)", a.ID)
	}
	s := &Server{
		a:        a,
		datasets: map[string]*dataset{},
		allowed:  map[string]bool{},
		health:   health.NewServer(),
		now:      o.clock,
		log:      o.logger.With("authority", a.ID),
		programs: map[programKey]cel.Program{},
		masks:    map[string]fieldmask.Mask{},
	}
	for _, id := range o.callers {
		if _, _, _, err := mtls.ParseID(id); err != nil {
			return nil, fmt.Errorf("authority %s: allowed caller: %w", a.ID, err)
		}
		s.allowed[id] = true
	}
	s.describe = &authorityv1.DescribeResponse{Authority: a.ID, DisplayName: a.DisplayName}
	var mds []protoreflect.MessageDescriptor
	for _, d := range a.Datasets {
		switch {
		case !datasetRE.MatchString(d.Name):
			return nil, fmt.Errorf("authority %s: dataset name %q must match %s", a.ID, d.Name, datasetRE)
		case s.datasets[d.Name] != nil:
			return nil, fmt.Errorf("authority %s: dataset %q defined twice", a.ID, d.Name)
		case d.Message == nil:
			return nil, fmt.Errorf("authority %s: dataset %q has no message type", a.ID, d.Name)
		case d.Lookup == nil:
			return nil, fmt.Errorf("authority %s: dataset %q has no lookup", a.ID, d.Name)
		}
		md := d.Message.ProtoReflect().Descriptor()
		env, err := derive.NewEnv(md)
		if err != nil {
			return nil, fmt.Errorf("authority %s: dataset %q: %w", a.ID, d.Name, err)
		}
		s.datasets[d.Name] = &dataset{Dataset: d, md: md, env: env}
		mds = append(mds, md)
		s.describe.Datasets = append(s.describe.Datasets, &authorityv1.Dataset{
			Name: d.Name, Message: string(md.FullName()), Description: d.Description,
		})
	}
	s.describe.Descriptors = fileDescriptorSet(mds)
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("authority %s: request validator: %w", a.ID, err)
	}
	s.validator = v
	return s, nil
}

// fileDescriptorSet returns the files that define mds and everything they import, each file after
// its dependencies, as protodesc.NewFiles expects.
func fileDescriptorSet(mds []protoreflect.MessageDescriptor) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, md := range mds {
		add(md.ParentFile())
	}
	return set
}

// Register registers the AuthorityService, gRPC health and server reflection on g. Reflection and
// health answer any client the TLS layer admitted (they reveal schemas and liveness, no citizen
// data); the AuthorityService answers only allowed callers.
func (s *Server) Register(g *grpc.Server) {
	authorityv1.RegisterAuthorityServiceServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authorityv1.AuthorityService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// ServerOptions are the interceptors an authority's gRPC server needs: panic recovery, so that a
// panic anywhere in a call (an architect's lookup, a derived fact) answers Internal for that call and
// is logged by type and stack frames, and the process lives on. Serve uses them; a caller that builds
// its own grpc.Server for Register should too.
func (s *Server) ServerOptions() []grpc.ServerOption {
	h := recovery.WithRecoveryHandlerContext(s.panicked)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(h)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(h)),
	}
}

// panicked logs a recovered panic and answers Internal. The panic's value is not logged, nor shown:
// it may be anything the lookup held, a citizen's record included.
func (s *Server) panicked(ctx context.Context, p any) error {
	method, _ := grpc.Method(ctx)
	s.log.ErrorContext(ctx, "panic in a call: answered Internal", "method", method, "panic_type", fmt.Sprintf("%T", p), "stack", stackFrames(4))
	return errPanicked
}

// errPanicked is the answer to a call that panicked.
var errPanicked = status.Error(codes.Internal, "internal error")

// stackFrames is the calling goroutine's stack as "function file:line" lines, without the argument
// words a runtime stack trace prints (which may be a record's bytes).
func stackFrames(skip int) string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(skip, pcs)])
	var sb strings.Builder
	for {
		f, more := frames.Next()
		fmt.Fprintf(&sb, "%s %s:%d\n", f.Function, f.File, f.Line)
		if !more {
			return sb.String()
		}
	}
}

// lookup runs the dataset's lookup; a panic in it is the call's Internal error, so the one line of
// the call (logFetch) and the answer say so.
func (s *Server) lookup(ctx context.Context, ds *dataset, citizenID string) (rec proto.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = s.panicked(ctx, p)
		}
	}()
	return ds.Lookup(ctx, citizenID)
}

// Serve serves on lis with tlsConf (normally mtls.ServerConfig) until ctx is done, then reports
// NOT_SERVING, lets running calls finish (at most 10 s) and returns nil. It returns an error if the
// listener fails.
func (s *Server) Serve(ctx context.Context, lis net.Listener, tlsConf *tls.Config) error {
	if tlsConf == nil {
		return fmt.Errorf("serve authority %s: TLS configuration required", s.a.ID)
	}
	g := grpc.NewServer(append(s.ServerOptions(), grpc.Creds(credentials.NewTLS(tlsConf)))...)
	s.Register(g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	s.log.Info("authority serving", "addr", lis.Addr().String(), "datasets", len(s.datasets))
	select {
	case err := <-errc:
		return fmt.Errorf("serve authority %s: %w", s.a.ID, err)
	case <-ctx.Done():
	}
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		g.Stop()
		<-stopped
	}
	<-errc
	s.log.Info("authority stopped")
	return nil
}

// authorize admits only the allowed callers.
func (s *Server) authorize(ctx context.Context) (string, error) {
	id, err := mtls.PeerID(ctx)
	if err != nil {
		return "", status.Error(codes.PermissionDenied, "caller has no verified identity")
	}
	if !s.allowed[id] {
		return id, status.Errorf(codes.PermissionDenied, "caller %s may not call authority %s", id, s.a.ID)
	}
	return id, nil
}

// Describe implements AuthorityService.
func (s *Server) Describe(ctx context.Context, _ *authorityv1.DescribeRequest) (*authorityv1.DescribeResponse, error) {
	if _, err := s.authorize(ctx); err != nil {
		return nil, err
	}
	return s.describe, nil
}

// Fetch implements AuthorityService. It logs one line per call with names and ids only.
func (s *Server) Fetch(ctx context.Context, req *authorityv1.FetchRequest) (resp *authorityv1.FetchResponse, err error) {
	caller, err := s.authorize(ctx)
	if err != nil {
		// Nothing a refused caller sent is logged: it could be anything.
		s.log.WarnContext(ctx, "fetch refused", "caller", caller, "code", status.Code(err).String())
		return nil, err
	}
	defer func() { s.logFetch(ctx, caller, req, err) }()
	if err := s.validator.Validate(req); err != nil {
		// protovalidate names the field and the rule, not the value.
		return nil, status.Errorf(codes.InvalidArgument, "invalid fetch request: %v", err)
	}
	ds := s.datasets[req.GetDataset()]
	if ds == nil {
		return nil, status.Errorf(codes.NotFound, "authority %s has no dataset %q", s.a.ID, req.GetDataset())
	}
	paths := req.GetFieldMask().GetPaths()
	if len(paths) > maxMaskPaths {
		return nil, status.Errorf(codes.InvalidArgument, "field mask has %d paths, at most %d allowed", len(paths), maxMaskPaths)
	}
	for _, p := range paths {
		if err := fieldmask.Validate(ds.md, p); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "dataset %s.%s: %v", s.a.ID, ds.Name, err)
		}
	}
	// Compile before the lookup so that a bad expression fails the same way for every citizen.
	programs := make([]cel.Program, len(req.GetDerived()))
	names := map[string]bool{}
	for i, d := range req.GetDerived() {
		if names[d.GetName()] {
			return nil, status.Errorf(codes.InvalidArgument, "derived fact %q requested twice", d.GetName())
		}
		names[d.GetName()] = true
		if programs[i], err = s.program(ds, d.GetExpression()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "derived fact %q: %v", d.GetName(), err)
		}
	}

	rec, err := s.lookup(ctx, ds, req.GetCitizenId())
	switch {
	case err == errPanicked:
		return nil, err
	case errors.Is(err, ErrNotFound) || err == nil && (rec == nil || !rec.ProtoReflect().IsValid()):
		return nil, status.Errorf(codes.NotFound, "no record of this citizen in dataset %s.%s", s.a.ID, ds.Name)
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, ErrUnimplemented):
		return nil, status.Errorf(codes.Unimplemented, "dataset %s.%s has no data source yet", s.a.ID, ds.Name)
	case err != nil:
		s.log.ErrorContext(ctx, "lookup failed", "dataset", ds.Name, "access_id", req.GetContext().GetAccessId(), "error", err)
		return nil, status.Errorf(codes.Unavailable, "dataset %s.%s is unavailable", s.a.ID, ds.Name)
	case rec.ProtoReflect().Descriptor().FullName() != ds.md.FullName():
		s.log.ErrorContext(ctx, "lookup returned the wrong record type", "dataset", ds.Name, "got", rec.ProtoReflect().Descriptor().FullName(), "want", ds.md.FullName())
		return nil, status.Errorf(codes.Internal, "dataset %s.%s returned a record of the wrong type", s.a.ID, ds.Name)
	}

	resp = &authorityv1.FetchResponse{}
	now := s.now()
	for i, d := range req.GetDerived() {
		v, err := derive.Eval(ctx, programs[i], rec, now) // over the full record, before masking
		if err != nil {
			if ctx.Err() != nil {
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			// derive's messages name a category, never a value of the record.
			return nil, status.Errorf(codes.InvalidArgument, "derived fact %q: %v", d.GetName(), err)
		}
		resp.Derived = append(resp.Derived, &authorityv1.DerivedValue{Name: d.GetName(), Value: v})
	}
	// The mask is projected into a new message rather than applied to a copy: rec is the lookup's (it
	// may be shared), and copying a whole record to clear most of it was the largest allocation of a
	// Fetch.
	reduced := rec.ProtoReflect().New()
	s.mask(paths).Project(reduced, rec.ProtoReflect())
	if resp.Record, err = anypb.New(reduced.Interface()); err != nil {
		return nil, status.Errorf(codes.Internal, "dataset %s.%s: encode record", s.a.ID, ds.Name)
	}
	return resp, nil
}

// mask returns the prepared mask of paths, from the cache when it was prepared before: building the
// path tree was most of a projection's allocations.
func (s *Server) mask(paths []string) fieldmask.Mask {
	key := strings.Join(paths, "\x00")
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.masks[key]
	if !ok {
		if len(s.masks) >= maxMasks {
			clear(s.masks)
		}
		m = fieldmask.NewMask(paths)
		s.masks[key] = m
	}
	return m
}

// program returns the compiled expression, from the cache when it was compiled before.
func (s *Server) program(ds *dataset, expr string) (cel.Program, error) {
	key := programKey{ds.Name, expr}
	s.mu.Lock()
	prg, ok := s.programs[key]
	s.mu.Unlock()
	if ok {
		return prg, nil
	}
	prg, err := derive.Compile(ds.env, expr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.programs) >= maxPrograms {
		clear(s.programs)
	}
	s.programs[key] = prg
	return prg, nil
}

// logFetch writes the one log line of a Fetch. It names the dataset, fields and facts and the
// broker's access and case ids, so an authority's own log can be matched with the citizen's access
// log, but never the citizen id or any value.
func (s *Server) logFetch(ctx context.Context, caller string, req *authorityv1.FetchRequest, err error) {
	level, code := slog.LevelInfo, codes.OK
	if err != nil {
		level, code = slog.LevelWarn, status.Code(err)
	}
	if !s.log.Enabled(ctx, level) {
		return // the attributes below cost a dozen allocations per Fetch
	}
	derived := make([]string, 0, len(req.GetDerived()))
	for _, d := range req.GetDerived() {
		derived = append(derived, d.GetName())
	}
	s.log.Log(ctx, level, "fetch",
		"dataset", req.GetDataset(),
		"fields", req.GetFieldMask().GetPaths(),
		"derived", derived,
		"access_id", req.GetContext().GetAccessId(),
		"case_id", req.GetContext().GetCaseId(),
		"journey", req.GetContext().GetJourney(),
		"step", req.GetContext().GetStep(),
		"caller", caller,
		"code", code.String(),
	)
}
