// Package server is the broker's gRPC edge. Every gRPC server of the broker — the agency and audit API
// and the citizen API — runs one interceptor chain (Edge): panic recovery, error mapping, a pluggable
// identity stage (the agency's client certificate here, the citizen's ID token in package citizen) and
// protovalidate. Handlers return domain errors; the chain converts them into gRPC status codes in this
// one place, so domain code never speaks gRPC and no internal cause reaches a caller.
package server

import (
	"context"

	"google.golang.org/grpc/metadata"

	"github.com/aperture-gov/aperture/broker/policy"
	"github.com/aperture-gov/aperture/broker/refusal"
	auditv1 "github.com/aperture-gov/aperture/proto/aperture/audit/v1"
	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// CaseworkerHeader is the metadata key in which an agency names the caseworker acting.
const CaseworkerHeader = "x-aperture-caseworker"

// validCaseworker reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$ (checked by hand: it
// runs on every agency call; TestValidCaseworker holds it to the pattern).
func validCaseworker(s string) bool {
	if len(s) == 0 || len(s) > 64 || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '.' && c != '_' && c != '@' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// Role is what a caller may do.
type Role int

const (
	// RoleAgency is an agency's case system.
	RoleAgency Role = iota + 1
	// RoleAuditor is an auditor or data-protection officer.
	RoleAuditor
	// RoleAuthority is an authority (data holder) publishing life events with its authority certificate.
	RoleAuthority
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

// AgencyIdentity is the identity stage of the agency and audit API: the caller is the registered
// agency or auditor its client certificate names (an agency also names its caseworker in metadata).
// registry is read per call, so a reload takes effect.
func AgencyIdentity(registry func() *policy.Registry) Identity {
	return func(ctx context.Context, _ string) (context.Context, error) {
		c, err := authenticate(ctx, registry())
		if err != nil {
			return nil, err
		}
		return context.WithValue(ctx, callerKey{}, c), nil
	}
}

func authenticate(ctx context.Context, reg *policy.Registry) (Caller, error) {
	id, err := mtls.PeerID(ctx)
	if err != nil {
		return Caller{}, refusal.Wrap(refusal.Unauthenticated, err, "a client certificate with an identity is required").Because(auditv1.RefusalReason_REFUSAL_REASON_UNAUTHENTICATED)
	}
	if a, ok := reg.AgencyByIdentity(id); ok {
		c := Caller{Role: RoleAgency, ID: a.ID}
		// ValueFromIncomingContext copies only this key's values, not the whole metadata.
		if vals := metadata.ValueFromIncomingContext(ctx, CaseworkerHeader); len(vals) == 1 && validCaseworker(vals[0]) {
			c.Caseworker = vals[0]
		} else {
			return Caller{}, refusal.New(refusal.InvalidArgument, "metadata %q must name exactly one caseworker (letters, digits, . _ @ -, at most 64)", CaseworkerHeader).Because(auditv1.RefusalReason_REFUSAL_REASON_INVALID_REQUEST)
		}
		return c, nil
	}
	if a, ok := reg.AuditorByIdentity(id); ok {
		return Caller{Role: RoleAuditor, ID: a.ID}, nil
	}
	if a, ok := reg.AuthorityByIdentity(id); ok {
		return Caller{Role: RoleAuthority, ID: a.ID}, nil
	}
	return Caller{}, refusal.New(refusal.PermissionDenied, "certificate identity %s is not a registered agency, auditor or authority", id).Because(auditv1.RefusalReason_REFUSAL_REASON_UNAUTHENTICATED)
}

// requireRole returns the caller if it has role.
func requireRole(ctx context.Context, role Role) (Caller, error) {
	c, ok := CallerFrom(ctx)
	if !ok {
		return Caller{}, refusal.New(refusal.Unauthenticated, "no authenticated caller").Because(auditv1.RefusalReason_REFUSAL_REASON_UNAUTHENTICATED)
	}
	if c.Role != role {
		return Caller{}, refusal.New(refusal.PermissionDenied, "%s may not call this method", c.ID)
	}
	return c, nil
}
