package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"

	"buf.build/go/protovalidate"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	validation "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
)

// Identity is the pluggable stage of the edge that says who is calling: it authenticates the caller of
// method from ctx (a client certificate, a bearer token) and returns ctx carrying the caller. Its error
// is either a refusal, mapped like every other error, or a status it chose itself (returned as is).
// It MUST NOT put a credential or a citizen id into its error.
type Identity func(ctx context.Context, method string) (context.Context, error)

// EdgeConfig configures the one interceptor chain of a gRPC server of the broker.
type EdgeConfig struct {
	// Identity authenticates callers of guarded methods. Required.
	Identity Identity
	// Guarded reports whether a method carries case or citizen data and so needs a caller and a
	// valid request; others (health, reflection) pass through recovery and error mapping only.
	// Default: every method under "/aperture.".
	Guarded func(fullMethod string) bool
	Logger  *slog.Logger
}

// Edge is the one interceptor chain every gRPC server of the broker uses (the agency and audit API and
// the citizen API), in this order:
//
//  1. panic recovery: a panicking handler answers Internal, with nothing of the panic shown, and is
//     logged by its type and call stack (function names and lines: never a value);
//  2. error mapping: every error below is turned into a gRPC status here and only here;
//  3. identity: the caller is authenticated (Identity) and put in the context;
//  4. validation: every request message is checked against its protovalidate rules.
//
// Mapping sits outside identity and validation so that their refusals are mapped like the handlers'.
type Edge struct {
	identity  Identity
	isGuarded func(fullMethod string) bool
	guarded   selector.Matcher
	validator protovalidate.Validator
	log       *slog.Logger
}

// ApertureMethod reports whether fullMethod belongs to one of Aperture's own services.
func ApertureMethod(fullMethod string) bool { return strings.HasPrefix(fullMethod, "/aperture.") }

// NewEdge returns the chain configured by cfg.
func NewEdge(cfg EdgeConfig) (*Edge, error) {
	if cfg.Identity == nil {
		return nil, errors.New("edge: an identity stage is required")
	}
	if cfg.Guarded == nil {
		cfg.Guarded = ApertureMethod
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("request validator: %w", err)
	}
	guarded := cfg.Guarded
	return &Edge{
		identity:  cfg.Identity,
		isGuarded: guarded,
		guarded:   selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return guarded(c.FullMethod()) }),
		validator: fastValidator{full: v},
		log:       cfg.Logger,
	}, nil
}

// ServerOptions are the unary and stream chains as options of grpc.NewServer.
func (e *Edge) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(e.UnaryInterceptors()...),
		grpc.ChainStreamInterceptor(e.StreamInterceptors()...),
	}
}

// UnaryInterceptors is the chain for unary calls: one interceptor doing the four stages in order (the
// hot path's calls are unary, and one function costs less than four links and two matchers).
func (e *Edge) UnaryInterceptors() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{e.unary}
}

// unary is recovery, error mapping, identity and validation for one unary call, in that order.
func (e *Edge) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (_ any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = e.panicked(ctx, p)
		}
	}()
	resp, err := e.guardedUnary(ctx, req, info, h)
	if err != nil {
		return nil, e.mapError(ctx, info.FullMethod, err)
	}
	return resp, nil
}

func (e *Edge) guardedUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !e.isGuarded(info.FullMethod) {
		return h(ctx, req)
	}
	ctx, err := e.identity(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := validateRequest(e.validator, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// validateRequest answers an invalid request as the go-grpc-middleware protovalidate interceptor does
// (the streams still use it): InvalidArgument with the violations as a detail; a rule that cannot be
// evaluated is Internal.
func validateRequest(v protovalidate.Validator, req any) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "unsupported message type: %T", req)
	}
	err := v.Validate(msg)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if errors.As(err, &verr) {
		st := status.New(codes.InvalidArgument, err.Error())
		if ds, derr := st.WithDetails(verr.ToProto()); derr == nil {
			return ds.Err()
		}
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// StreamInterceptors is the chain for streaming calls, outermost first.
func (e *Edge) StreamInterceptors() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(e.panicked)),
		e.mapStream,
		selector.StreamServerInterceptor(e.identifyStream, e.guarded),
		selector.StreamServerInterceptor(validation.StreamServerInterceptor(e.validator), e.guarded),
	}
}

// panicked logs a recovered panic and answers Internal. The panic's value is not logged: it may be
// anything a handler held, a citizen id included. Its type says what kind of failure it was; the
// frames say where. A runtime error's text (an index, a length, a nil map) is the runtime's own.
func (e *Edge) panicked(ctx context.Context, p any) error {
	attrs := []any{"panic_type", fmt.Sprintf("%T", p), "stack", stackFrames(4)}
	if m, ok := grpc.Method(ctx); ok {
		attrs = append(attrs, "method", m)
	}
	if re, ok := p.(runtime.Error); ok {
		attrs = append(attrs, "runtime_error", clipped(re.Error()))
	}
	e.log.Error("panic in a gRPC handler: answered Internal", attrs...)
	return status.Error(codes.Internal, "internal error")
}

// stackFrames is the calling goroutine's stack as "function file:line" lines: where a panic happened,
// without the argument words a runtime stack trace prints (which may be a field's bytes).
func stackFrames(skip int) string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(skip, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var sb strings.Builder
	for {
		f, more := frames.Next()
		fmt.Fprintf(&sb, "%s %s:%d\n", f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	return sb.String()
}

func (e *Edge) mapStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := h(srv, ss); err != nil {
		return e.mapError(ss.Context(), info.FullMethod, err)
	}
	return nil
}

// mapError is the one place where an error becomes a gRPC status. A status returned as such (not
// wrapped) was made on purpose by the edge or a handler and passes; anything else is a refusal (shown
// by its reason) or an internal error (hidden). A status found deeper in an error chain — an
// authority's answer wrapped by the domain — is not the caller's business and is Internal.
func (e *Edge) mapError(ctx context.Context, method string, err error) error {
	if se, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		if st := se.GRPCStatus(); st.Code() == codes.InvalidArgument && !hasErrorInfo(st) {
			// Request validation answers with a bare status; agencies still get a reason to branch on.
			if with, err := st.WithDetails(&errdetails.ErrorInfo{Reason: refusal.ErrorInfoReason(auditv1.RefusalReason_REFUSAL_REASON_INVALID_REQUEST), Domain: refusal.ErrorInfoDomain}); err == nil {
				return with.Err()
			}
		}
		return err
	}
	return toStatus(ctx, e.log, method, err)
}

func (e *Edge) identifyStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := e.identity(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = ctx
	return h(srv, w)
}

// codeOf is the gRPC code of each refusal kind.
var codeOf = map[refusal.Kind]codes.Code{
	refusal.Internal:           codes.Internal,
	refusal.PermissionDenied:   codes.PermissionDenied,
	refusal.FailedPrecondition: codes.FailedPrecondition,
	refusal.NotFound:           codes.NotFound,
	refusal.InvalidArgument:    codes.InvalidArgument,
	refusal.Unavailable:        codes.Unavailable,
	refusal.Unauthenticated:    codes.Unauthenticated,
	refusal.Aborted:            codes.Aborted,
	refusal.ResourceExhausted:  codes.ResourceExhausted,
}

// Code is the gRPC code of a refusal kind. A kind without one is a bug and answers Internal: a
// refusal must never reach a caller as OK.
func Code(k refusal.Kind) codes.Code {
	if c, ok := codeOf[k]; ok && c != codes.OK {
		return c
	}
	return codes.Internal
}

// toStatus converts a domain error to a gRPC status. The reason is shown; the cause only logged.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// The caller gave up; whatever failed after that is not the broker's failure.
		log.Debug("request abandoned by caller", "method", method, "err", ctx.Err())
		return status.FromContextError(ctx.Err()).Err()
	}
	r := refusal.As(err)
	code := Code(r.Kind)
	switch {
	case code == codes.Internal && r.Kind != refusal.Internal:
		log.Error("refusal of a kind without a gRPC code: answered Internal", "method", method, "kind", r.Kind.String(), "reason", clipped(r.Reason), "err", clippedErr{r.Cause})
	case code == codes.Internal, code == codes.Unavailable:
		log.Error("request failed", "method", method, "code", code.String(), "reason", clipped(r.Reason), "err", clippedErr{r.Cause})
	default:
		log.Info("request refused", "method", method, "code", code.String(), "reason", clipped(r.Reason))
	}
	if code == codes.Internal {
		return status.Error(codes.Internal, "internal error")
	}
	st := status.New(code, clip(r.Reason, MaxStatusText))
	if r.Why != auditv1.RefusalReason_REFUSAL_REASON_UNSPECIFIED {
		// Agency systems branch on the reason, never on the text.
		if with, err := st.WithDetails(&errdetails.ErrorInfo{Reason: refusal.ErrorInfoReason(r.Why), Domain: refusal.ErrorInfoDomain, Metadata: r.Meta}); err == nil {
			st = with
		}
	}
	return st.Err()
}

func hasErrorInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return true
		}
	}
	return false
}
