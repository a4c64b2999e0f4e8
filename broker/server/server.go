// Package server is the broker's gRPC edge: it authenticates the caller from its client certificate,
// validates every request against its protovalidate rules, calls the domain services and converts their
// refusals into gRPC status codes — in this one place, so domain code never speaks gRPC and no internal
// cause reaches a caller.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime/debug"
	"strings"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// CaseworkerHeader is the metadata key in which an agency names the caseworker acting.
const CaseworkerHeader = "x-aperture-caseworker"

var caseworkerPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// Role is what a caller may do.
type Role int

const (
	// RoleAgency is an agency's case system.
	RoleAgency Role = iota + 1
	// RoleAuditor is an auditor or data-protection officer.
	RoleAuditor
)

// Caller is the authenticated caller of an RPC.
type Caller struct {
	Role       Role
	ID         string // agency or auditor id from the registry
	Caseworker string // set for agencies
}

type callerKey struct{}

// CallerFrom returns the caller the interceptor authenticated.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Interceptors returns the unary interceptors of the broker: panic recovery, caller authentication
// against the registry, and request validation. registry is read per call, so a reload takes effect.
func Interceptors(registry func() *policy.Registry, log *slog.Logger) ([]grpc.UnaryServerInterceptor, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("request validator: %w", err)
	}
	recoverer := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", "method", info.FullMethod, "panic", clipped(fmt.Sprint(r)), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(ctx, req)
	}
	authn := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, "/aperture.") {
			return h(ctx, req) // health and reflection carry no case data
		}
		c, err := authenticate(ctx, registry())
		if err != nil {
			return nil, toStatus(ctx, log, info.FullMethod, err)
		}
		return h(context.WithValue(ctx, callerKey{}, c), req)
	}
	validate := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if m, ok := req.(proto.Message); ok {
			if err := v.Validate(m); err != nil {
				var verr *protovalidate.ValidationError
				if errors.As(err, &verr) {
					return nil, status.Error(codes.InvalidArgument, "invalid request: "+verr.Error())
				}
				return nil, status.Error(codes.Internal, "internal error")
			}
		}
		return h(ctx, req)
	}
	return []grpc.UnaryServerInterceptor{recoverer, authn, validate}, nil
}

func authenticate(ctx context.Context, reg *policy.Registry) (Caller, error) {
	id, err := mtls.PeerID(ctx)
	if err != nil {
		return Caller{}, refusal.Wrap(refusal.Unauthenticated, err, "a client certificate with an identity is required")
	}
	if a, ok := reg.AgencyByIdentity(id); ok {
		c := Caller{Role: RoleAgency, ID: a.ID}
		md, _ := metadata.FromIncomingContext(ctx)
		if vals := md.Get(CaseworkerHeader); len(vals) == 1 && caseworkerPattern.MatchString(vals[0]) {
			c.Caseworker = vals[0]
		} else {
			return Caller{}, refusal.New(refusal.InvalidArgument, "metadata %q must name exactly one caseworker (letters, digits, . _ @ -, at most 64)", CaseworkerHeader)
		}
		return c, nil
	}
	if a, ok := reg.AuditorByIdentity(id); ok {
		return Caller{Role: RoleAuditor, ID: a.ID}, nil
	}
	return Caller{}, refusal.New(refusal.PermissionDenied, "certificate identity %s is not a registered agency or auditor", id)
}

// requireRole returns the caller if it has role.
func requireRole(ctx context.Context, role Role) (Caller, error) {
	c, ok := CallerFrom(ctx)
	if !ok {
		return Caller{}, refusal.New(refusal.Unauthenticated, "no authenticated caller")
	}
	if c.Role != role {
		return Caller{}, refusal.New(refusal.PermissionDenied, "%s may not call this method", c.ID)
	}
	return c, nil
}

var codeOf = map[refusal.Kind]codes.Code{
	refusal.Internal:           codes.Internal,
	refusal.PermissionDenied:   codes.PermissionDenied,
	refusal.FailedPrecondition: codes.FailedPrecondition,
	refusal.NotFound:           codes.NotFound,
	refusal.InvalidArgument:    codes.InvalidArgument,
	refusal.Unavailable:        codes.Unavailable,
	refusal.Unauthenticated:    codes.Unauthenticated,
	refusal.Aborted:            codes.Aborted,
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
	code := codeOf[r.Kind]
	switch r.Kind {
	case refusal.Internal, refusal.Unavailable:
		log.Error("request failed", "method", method, "code", code.String(), "reason", clipped(r.Reason), "err", clippedErr{r.Cause})
	default:
		log.Info("request refused", "method", method, "code", code.String(), "reason", clipped(r.Reason))
	}
	if r.Kind == refusal.Internal {
		return status.Error(codes.Internal, "internal error")
	}
	return status.Error(code, clip(r.Reason, MaxStatusText))
}

// ToStatus converts a domain error to a gRPC status at an edge other than the agency API (the citizen
// API): the refusal's reason is shown, its cause only logged, an Internal error hidden.
func ToStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	return toStatus(ctx, log, method, err)
}
