package natsembed

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// EventSubjectPrefix starts every case event subject: the broker publishes an agency's events on
// EventSubjectPrefix + "<agency>.<type>" (package cases and questions).
const EventSubjectPrefix = "aperture.events.agency."

// Agency is an agency system allowed to subscribe to its events.
type Agency struct {
	// ID is the agency's id in the registry; its events are on EventSubject(ID).
	ID string
	// Identity is the SPIFFE ID (URI SAN) of its client certificate, the NATS user it maps to.
	Identity string
}

// agencyIDRE keeps an agency id a single subject token: no '.', '*', '>' or whitespace, which would
// widen the subject it may subscribe to.
var agencyIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// EventSubject is the subject filter of one agency's events.
func EventSubject(agency string) string { return EventSubjectPrefix + agency + ".>" }

// AgencyPermissions are what an agency user may do: subscribe to its own events, nothing else. No
// publish at all means no JetStream API ($JS.API.>), no KV write, and no request whose reply could
// leak anything; the subscribe allow-list keeps it off every stream's subjects, the KV buckets
// ($KV.>), the access log and index (aperture.access.>) and every other agency's events.
func AgencyPermissions(agency string) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Deny: []string{">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{EventSubject(agency)}},
	}
}

// BrokerAuth authenticates a connection as the holder of key (the broker): the server sends a nonce
// and the client signs it, so the seed never crosses the wire.
func BrokerAuth(key nkeys.KeyPair) nats.Option {
	return func(o *nats.Options) error {
		pub, err := key.PublicKey()
		if err != nil {
			return fmt.Errorf("broker nkey: %w", err)
		}
		return nats.Nkey(pub, key.Sign)(o)
	}
}

// configureAuth closes the server: the broker's nkey, and with TLS the agencies mapped from their
// certificates. It returns the TLS configuration Connect uses when it falls back to TCP.
func configureAuth(so *server.Options, o Options) (*tls.Config, error) {
	pub, err := o.BrokerKey.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("broker key is not an nkey user key: %v", err)
	}
	// In-process as well as TCP: the broker's own connection never leaves the process.
	so.Nkeys = []*server.NkeyUser{{Nkey: pub, AllowedConnectionTypes: connTypes(jwt.ConnectionTypeStandard, jwt.ConnectionTypeInProcess)}}
	if o.TLS == nil {
		if len(o.Agencies) > 0 {
			return nil, errors.New("agencies authenticate with their client certificate: TLS is required")
		}
		return nil, nil
	}
	seen := map[string]bool{}
	for _, a := range o.Agencies {
		if !agencyIDRE.MatchString(a.ID) {
			return nil, fmt.Errorf("agency id %q is not a single subject token", a.ID)
		}
		if _, kind, _, err := mtls.ParseID(a.Identity); err != nil || kind != mtls.KindAgency {
			return nil, fmt.Errorf("agency %q: identity %q is not an agency SPIFFE ID", a.ID, a.Identity)
		}
		if seen[a.Identity] {
			return nil, fmt.Errorf("agency identity %q is listed twice", a.Identity)
		}
		seen[a.Identity] = true
		// No password: the user can only be selected by a verified certificate carrying this URI SAN.
		so.Users = append(so.Users, &server.User{
			Username:               a.Identity,
			Permissions:            AgencyPermissions(a.ID),
			AllowedConnectionTypes: connTypes(jwt.ConnectionTypeStandard),
		})
	}
	so.TLSConfig = mtls.ServerConfig(o.TLS)
	so.TLSVerify = true
	so.TLSMap = true
	so.TLSTimeout = 5
	self, err := ownID(o.TLS)
	if err != nil {
		return nil, err
	}
	return mtls.ClientConfig(o.TLS, self), nil
}

func connTypes(types ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(types))
	for _, t := range types {
		m[t] = struct{}{}
	}
	return m
}

// ownID is the SPIFFE ID of the certificate the server presents, which its own TCP clients expect.
func ownID(src mtls.Source) (string, error) {
	c, err := src.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		return "", fmt.Errorf("server certificate: %w", err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return "", errors.New("server certificate is empty")
		}
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return "", fmt.Errorf("server certificate: %w", err)
		}
	}
	return mtls.IDFromCert(leaf)
}

// LoadOrCreateKey reads the nkey seed at path, or creates a new user key there (file mode 0600,
// directory 0700) if there is none. See ReadKey for what is refused.
func LoadOrCreateKey(path string) (nkeys.KeyPair, error) {
	k, err := ReadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create nkey %s: %w", path, err)
	}
	k, err = nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("create nkey %s: %w", path, err)
	}
	seed, err := k.Seed()
	if err != nil {
		return nil, fmt.Errorf("create nkey %s: %w", path, err)
	}
	// O_EXCL: two processes starting on one data directory must not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReadKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("create nkey %s: %w", path, err)
	}
	_, werr := f.Write(append(seed, '\n'))
	serr := f.Sync()
	if cerr := f.Close(); werr == nil && serr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = serr
	}
	if werr != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create nkey %s: %w", path, werr)
	}
	return k, nil
}

// ReadKey reads a user nkey seed file: the bare seed (as `nk -gen user` and LoadOrCreateKey write
// it) or a decorated one. A file that others can read or write is refused, like ssh refuses such
// a private key: whoever reads it is the broker.
func ReadKey(path string) (nkeys.KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read nkey: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("read nkey %s: mode %04o lets other users read it; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nkey: %w", err)
	}
	k, err := nkeys.ParseDecoratedNKey(bytes.TrimSpace(b))
	if err != nil {
		return nil, fmt.Errorf("read nkey %s: %w", path, err)
	}
	if pub, err := k.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("read nkey %s: not a user seed (SU…)", path)
	}
	return k, nil
}
