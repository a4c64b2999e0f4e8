package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Source provides a component's current certificate and the roots it trusts. Implementations MUST be
// safe for concurrent use. Every TLS handshake asks the Source again, so a renewed certificate (or a
// new CA bundle) is used without restarting servers or redialling clients.
type Source interface {
	// GetCertificate returns the certificate a server presents.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// GetClientCertificate returns the certificate a client presents.
	GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Roots returns the CA certificates that peer certificates must chain to.
	Roots() *x509.CertPool
}

// ServerConfig returns a TLS 1.3 server configuration that presents src's certificate and requires
// every client to present a certificate that chains to src's roots. It does not decide who may call
// what: handlers read the caller's identity with [PeerID] and authorize it.
func ServerConfig(src Source) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		GetCertificate: src.GetCertificate,
		ClientCAs:      src.Roots(),
	}
	// ClientCAs is a plain field; re-reading it per handshake lets the CA bundle rotate as well.
	// gRPC's credentials.NewTLS wraps this hook and still adds its ALPN protocol.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = src.Roots()
		return c, nil
	}
	return base
}

// ClientConfig returns a TLS 1.3 client configuration that presents src's certificate and accepts only
// a server whose certificate chains to src's roots and carries exactly the SPIFFE ID serverID.
// Host names are not checked: the server is whoever holds serverID, wherever it runs.
func ClientConfig(src Source, serverID string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: src.GetClientCertificate,
		// Go's built-in verification would check the DNS name the client dialled. Aperture identifies
		// servers by SPIFFE ID instead, so the chain and the ID are verified in VerifyConnection, which
		// runs on every handshake, including resumed ones.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs.PeerCertificates, src.Roots(), serverID)
		},
	}
}

func verifyServer(certs []*x509.Certificate, roots *x509.CertPool, want string) error {
	if len(certs) == 0 {
		return errors.New("server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("verify server certificate: %w", err)
	}
	got, err := IDFromCert(certs[0])
	if err != nil {
		return fmt.Errorf("server identity: %w", err)
	}
	if got != want {
		return fmt.Errorf("server identity is %s, want %s", got, want)
	}
	return nil
}
