package natsembed

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrAnonymousAccepted is returned by ProbeAnonymous for a server that let a client in without
// authenticating it: whoever reaches its port can read and rewrite the broker's state.
var ErrAnonymousAccepted = errors.New("NATS server accepts anonymous connections")

// ProbeAnonymous connects to every server of url (a comma-separated list) without credentials — no
// user, token, nkey or JWT — and, when a server asks for TLS, with tlsConfig (the broker's own client
// certificate and the roots the servers' certificates chain to). A server passes when it refuses the
// connection with an authorization violation, or when it lets it in because it mapped the
// certificate to a configured user (verify_and_map): its INFO then says authentication is required.
// It fails when it lets the connection in and authentication is not required — no auth at all,
// TLS verification alone (any certificate from the CA, an agency's included, would have full access)
// or a no_auth_user: ErrAnonymousAccepted, wrapped with the server's URL. A server that cannot be
// reached (or whose certificate does not verify) is skipped as long as another one passed, so a
// broker replica can start while one cluster node is down; if none could be asked, the errors are
// returned: callers fail closed on both.
//
// The probe presents the certificate rather than none because a TLS server that requires one would
// refuse a certificate-less client in the handshake, which says nothing about what happens after it.
func ProbeAnonymous(url string, tlsConfig *tls.Config, timeout time.Duration) error {
	var unknown []error
	passed := 0
	for _, u := range strings.Split(url, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		opts := []nats.Option{nats.Name("aperture-anonymous-probe"), nats.NoReconnect(), nats.Timeout(timeout), nats.DontRandomize(),
			// Each listed server is probed itself, not the ones it advertises.
			nats.IgnoreDiscoveredServers()}
		// Not strict: a server that does not offer TLS must be probed as it is.
		nc, err := ConnectTLSIfOffered(u, tlsConfig, false, opts...)
		switch {
		case err == nil:
			authRequired := nc.AuthRequired()
			nc.Close()
			if !authRequired {
				return fmt.Errorf("%s: %w", u, ErrAnonymousAccepted)
			}
			passed++
		case errors.Is(err, nats.ErrAuthorization):
			passed++
		default:
			unknown = append(unknown, fmt.Errorf("probe %s for anonymous access: %w", u, err))
		}
	}
	if passed == 0 {
		if len(unknown) == 0 {
			return errors.New("probe for anonymous access: no server URL")
		}
		return errors.Join(unknown...)
	}
	return nil
}
