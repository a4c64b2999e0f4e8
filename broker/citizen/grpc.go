package citizen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/server"
	citizenv1 "github.com/aperture-gov/aperture/proto/aperture/citizen/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// maxTokenLen bounds the bearer token accepted (ID tokens are a few KiB at most).
const maxTokenLen = 16 << 10

// errUnauthenticated is the one answer to every token problem: it never repeats the token or says
// which check failed.
var errUnauthenticated = status.Error(codes.Unauthenticated,
	`a valid OpenID Connect ID token is required, sent as metadata "authorization: Bearer <ID token>"`)

// TLSConfig is the citizen API's TLS configuration: the broker's server certificate, TLS 1.2 or later,
// and no client certificate (citizens authenticate with their ID token).
func TLSConfig(certs mtls.Source) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
}

// NewServer returns the gRPC server of the citizen API: svc behind TLS (tlsConfig, usually
// TLSConfig(certs)), with every call authenticated by auth from its bearer ID token, the citizen put in
// the call's context (pseudonymised with pseudonyms), every request validated with protovalidate, and
// domain errors turned into gRPC status codes. It also serves gRPC health (without authentication).
func NewServer(svc *Service, auth Authenticator, pseudonyms keys.Pseudonymizer, tlsConfig *tls.Config, log *slog.Logger) (*grpc.Server, *health.Server, error) {
	if svc == nil || auth == nil || pseudonyms == nil || tlsConfig == nil {
		return nil, nil, errors.New("citizen server: service, authenticator, pseudonymizer and TLS configuration are required")
	}
	if log == nil {
		log = slog.Default()
	}
	e, err := newEdge(auth, pseudonyms, log)
	if err != nil {
		return nil, nil, err
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ChainUnaryInterceptor(e.unary),
		grpc.ChainStreamInterceptor(e.stream),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
	)
	citizenv1.RegisterCitizenServiceServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	return srv, hs, nil
}

// edge is the interceptors' state.
type edge struct {
	auth       Authenticator
	pseudonyms keys.Pseudonymizer
	validator  protovalidate.Validator
	log        *slog.Logger
}

func newEdge(auth Authenticator, pseudonyms keys.Pseudonymizer, log *slog.Logger) (*edge, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("request validator: %w", err)
	}
	return &edge{auth: auth, pseudonyms: pseudonyms, validator: v, log: log}, nil
}

// citizenMethod reports whether method belongs to the citizen API (and so needs a citizen).
func citizenMethod(method string) bool { return strings.HasPrefix(method, "/aperture.citizen.") }

func (e *edge) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer e.recover(info.FullMethod, &err)
	if !citizenMethod(info.FullMethod) {
		return h(ctx, req)
	}
	ctx, err = e.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := e.validate(req); err != nil {
		return nil, err
	}
	resp, err = h(ctx, req)
	if err != nil {
		return nil, e.toStatus(ctx, info.FullMethod, err)
	}
	return resp, nil
}

func (e *edge) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer e.recover(info.FullMethod, &err)
	if !citizenMethod(info.FullMethod) {
		return h(srv, ss)
	}
	ctx, err := e.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if err := h(srv, &validatedStream{ServerStream: ss, ctx: ctx, e: e}); err != nil {
		return e.toStatus(ctx, info.FullMethod, err)
	}
	return nil
}

func (e *edge) recover(method string, err *error) {
	if r := recover(); r != nil {
		e.log.Error("panic in citizen API handler", "method", method, "panic", r, "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}

// toStatus maps a handler's error at the edge; errors that already are statuses pass.
func (e *edge) toStatus(ctx context.Context, method string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return server.ToStatus(ctx, e.log, method, err)
}

// authenticate reads the bearer token, has it verified and puts the citizen in the context. Neither
// the token nor the citizen id, nor the verifier's error (which might quote either), is logged.
func (e *edge) authenticate(ctx context.Context, method string) (context.Context, error) {
	token, ok := bearer(ctx)
	if !ok {
		e.log.Info("citizen call without a usable bearer token", "method", method)
		return nil, errUnauthenticated
	}
	id, err := e.auth.Authenticate(ctx, token)
	if err != nil || id == "" {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		e.log.Info("citizen token refused", "method", method)
		return nil, errUnauthenticated
	}
	return WithCitizen(ctx, e.pseudonyms, id), nil
}

// bearer returns the token of the one "authorization: Bearer <token>" metadata value.
func bearer(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenLen || strings.ContainsAny(token, " \t\r\n") {
		return "", false
	}
	return token, true
}

func (e *edge) validate(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	if err := e.validator.Validate(m); err != nil {
		var verr *protovalidate.ValidationError
		if errors.As(err, &verr) {
			return status.Error(codes.InvalidArgument, "invalid request: "+verr.Error())
		}
		return status.Error(codes.Internal, "internal error")
	}
	return nil
}

// validatedStream carries the authenticated context and validates every message received.
type validatedStream struct {
	grpc.ServerStream
	ctx context.Context
	e   *edge
}

func (s *validatedStream) Context() context.Context { return s.ctx }

func (s *validatedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.e.validate(m)
}
