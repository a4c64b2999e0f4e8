package citizen

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
// TLSConfig(certs)), behind the broker's one interceptor chain (server.Edge: panic recovery, error
// mapping, identity, protovalidate) whose identity stage authenticates every call by auth from its
// bearer ID token and puts the citizen in the call's context (pseudonymised with pseudonyms).
// It also serves gRPC health (without authentication).
func NewServer(svc *Service, auth Authenticator, pseudonyms keys.Pseudonymizer, tlsConfig *tls.Config, log *slog.Logger) (*grpc.Server, *health.Server, error) {
	if svc == nil || auth == nil || pseudonyms == nil || tlsConfig == nil {
		return nil, nil, errors.New("citizen server: service, authenticator, pseudonymizer and TLS configuration are required")
	}
	if log == nil {
		log = slog.Default()
	}
	id := &identity{auth: auth, pseudonyms: pseudonyms, log: log}
	e, err := server.NewEdge(server.EdgeConfig{Identity: id.authenticate, Guarded: citizenMethod, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	opts := append(e.ServerOptions(),
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
	)
	srv := grpc.NewServer(opts...)
	citizenv1.RegisterCitizenServiceServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	return srv, hs, nil
}

// identity is the citizen API's identity stage of the broker's one edge (server.Edge): the caller is
// the citizen its bearer ID token names.
type identity struct {
	auth       Authenticator
	pseudonyms keys.Pseudonymizer
	log        *slog.Logger
}

// citizenMethod reports whether method belongs to the citizen API (and so needs a citizen).
func citizenMethod(method string) bool { return strings.HasPrefix(method, "/aperture.citizen.") }

// authenticate reads the bearer token, has it verified and puts the citizen in the context. Neither
// the token nor the citizen id, nor the verifier's error (which might quote either), is logged.
func (e *identity) authenticate(ctx context.Context, method string) (context.Context, error) {
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
