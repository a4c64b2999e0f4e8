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
	return splitID(u, id)
}

// splitID checks a parsed SPIFFE ID (id is its text, for errors). The character checks are by hand,
// not regular expressions: every call to a broker or an authority runs one, and they are exact.
func splitID(u *url.URL, id string) (trustDomain, kind, name string, err error) {
	switch {
	case u.Scheme != "spiffe":
		return "", "", "", fmt.Errorf("SPIFFE ID %q: scheme must be spiffe", id)
	case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", "", "", fmt.Errorf("SPIFFE ID %q: must not have user info, port, query or fragment", id)
	case !validTrustDomain(u.Host):
		return "", "", "", fmt.Errorf("SPIFFE ID %q: invalid trust domain", id)
	}
	path, ok := strings.CutPrefix(u.Path, "/")
	if !ok {
		return "", "", "", fmt.Errorf("SPIFFE ID %q: path must be /broker or /{authority,agency,auditor}/<name>", id)
	}
	kind, name, named := strings.Cut(path, "/")
	switch {
	case !named && kind == KindBroker:
		return u.Host, KindBroker, "", nil
	case named && (kind == KindAuthority || kind == KindAgency || kind == KindAuditor) && !strings.Contains(name, "/"):
		if !validName(name) {
			return "", "", "", fmt.Errorf("SPIFFE ID %q: invalid %s name", id, kind)
		}
		return u.Host, kind, name, nil
	default:
		return "", "", "", fmt.Errorf("SPIFFE ID %q: path must be /broker or /{authority,agency,auditor}/<name>", id)
	}
}

// validTrustDomain: 1 to 255 of [a-z0-9._-] (SPIFFE ID standard, section 2.1).
func validTrustDomain(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !lowerDigit(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// validName: a slug as policies and the registry use them, [a-z0-9][a-z0-9_-]{0,62}.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || !lowerDigit(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !lowerDigit(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func lowerDigit(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// IDFromCert returns the SPIFFE ID of a certificate. The certificate must carry exactly one
// spiffe:// URI SAN, and it must be a valid Aperture ID.
func IDFromCert(c *x509.Certificate) (string, error) {
	var found *url.URL
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if found != nil {
			return "", fmt.Errorf("certificate %s has more than 1 SPIFFE ID, want exactly 1", c.SerialNumber)
		}
		found = u
	}
	if found == nil {
		return "", fmt.Errorf("certificate %s has no SPIFFE ID", c.SerialNumber)
	}
	id := found.String()
	if _, _, _, err := splitID(found, id); err != nil {
		return "", fmt.Errorf("certificate %s: %w", c.SerialNumber, err)
	}
	return id, nil
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
