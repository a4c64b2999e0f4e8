// Package mtls holds the workload identities of Aperture and the mutual-TLS configurations built on
// them. It is shared by the authority services, the broker and the agency clients.
//
// An identity is a SPIFFE ID (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md)
// carried as the only URI SAN of an X.509 certificate:
//
//	spiffe://<trust-domain>/broker
//	spiffe://<trust-domain>/authority/<slug>
//	spiffe://<trust-domain>/agency/<id>
//	spiffe://<trust-domain>/auditor/<id>
//
// Peers are identified by that ID, never by DNS names: a certificate proves which component it is,
// and authorization (for example "only the broker may call an authority") compares IDs.
//
// Certificates come from a [Source], so that they can be renewed while servers run. [DevCA] is the
// development CA kept in a directory; production deployments issue certificates from Vault PKI and
// plug in their own Source.
package mtls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Identity kinds: the first path segment of an Aperture SPIFFE ID.
const (
	KindBroker    = "broker"
	KindAuthority = "authority"
	KindAgency    = "agency"
	KindAuditor   = "auditor"
)

var (
	// Trust domain characters per the SPIFFE ID standard (section 2.1).
	trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)
	// Names are slugs as used in policies and the registry.
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// ID returns the SPIFFE ID of a component. The broker is unique in its trust domain, so kind
// [KindBroker] ignores name. ID does not validate its input; [ParseID] does.
func ID(trustDomain, kind, name string) string {
	if kind == KindBroker {
		return "spiffe://" + trustDomain + "/" + KindBroker
	}
	return "spiffe://" + trustDomain + "/" + kind + "/" + name
}

// ParseID splits an Aperture SPIFFE ID into its trust domain, kind and name (empty for the broker).
// It rejects anything that is not exactly one of the four shapes in the package documentation.
func ParseID(id string) (trustDomain, kind, name string, err error) {
	u, err := url.Parse(id)
	if err != nil {
		return "", "", "", fmt.Errorf("parse SPIFFE ID %q: %w", id, err)
	}
	switch {
	case u.Scheme != "spiffe":
		return "", "", "", fmt.Errorf("SPIFFE ID %q: scheme must be spiffe", id)
	case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", "", "", fmt.Errorf("SPIFFE ID %q: must not have user info, port, query or fragment", id)
	case !trustDomainRE.MatchString(u.Host):
		return "", "", "", fmt.Errorf("SPIFFE ID %q: invalid trust domain", id)
	}
	segs := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	switch {
	case len(segs) == 1 && segs[0] == KindBroker:
		return u.Host, KindBroker, "", nil
	case len(segs) == 2 && (segs[0] == KindAuthority || segs[0] == KindAgency || segs[0] == KindAuditor):
		if !nameRE.MatchString(segs[1]) {
			return "", "", "", fmt.Errorf("SPIFFE ID %q: invalid %s name", id, segs[0])
		}
		return u.Host, segs[0], segs[1], nil
	default:
		return "", "", "", fmt.Errorf("SPIFFE ID %q: path must be /broker or /{authority,agency,auditor}/<name>", id)
	}
}

// IDFromCert returns the SPIFFE ID of a certificate. The certificate must carry exactly one
// spiffe:// URI SAN, and it must be a valid Aperture ID.
func IDFromCert(c *x509.Certificate) (string, error) {
	var ids []string
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			ids = append(ids, u.String())
		}
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("certificate %s has %d SPIFFE IDs, want exactly 1", c.SerialNumber, len(ids))
	}
	if _, _, _, err := ParseID(ids[0]); err != nil {
		return "", fmt.Errorf("certificate %s: %w", c.SerialNumber, err)
	}
	return ids[0], nil
}

// ErrNoPeerIdentity is returned by [PeerID] when the connection carries no verified certificate.
var ErrNoPeerIdentity = errors.New("no verified peer certificate")

// PeerID returns the SPIFFE ID of the caller of a gRPC handler, taken from the certificate chain the
// TLS handshake verified. Unverified certificates are ignored, so a server configured with
// [ServerConfig] can rely on the result.
func PeerID(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", ErrNoPeerIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", ErrNoPeerIdentity
	}
	return IDFromCert(info.State.VerifiedChains[0][0])
}
