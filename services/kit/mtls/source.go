package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// MemorySource is a [Source] held in memory whose certificate and roots can be replaced at any time,
// for example by a renewal loop that fetches certificates from Vault PKI.
type MemorySource struct {
	cert  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[x509.CertPool]
}

// NewMemorySource returns a Source that serves cert and trusts roots.
func NewMemorySource(cert *tls.Certificate, roots *x509.CertPool) *MemorySource {
	s := &MemorySource{}
	s.Set(cert, roots)
	return s
}

// Set replaces the certificate and roots; handshakes that start afterwards use the new ones.
func (s *MemorySource) Set(cert *tls.Certificate, roots *x509.CertPool) {
	s.cert.Store(cert)
	s.roots.Store(roots)
}

// Certificate returns the current certificate.
func (s *MemorySource) Certificate() *tls.Certificate { return s.cert.Load() }

// GetCertificate implements [Source].
func (s *MemorySource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current()
}

// GetClientCertificate implements [Source].
func (s *MemorySource) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.current()
}

// Roots implements [Source].
func (s *MemorySource) Roots() *x509.CertPool { return s.roots.Load() }

func (s *MemorySource) current() (*tls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, errors.New("no certificate loaded")
	}
	return c, nil
}

// FileSource is a [Source] read from PEM files, as an agency system or a certificate manager keeps
// them on disk. Call Reload after the files were replaced (for example on SIGHUP).
type FileSource struct {
	MemorySource
	certFile, keyFile, caFile string
}

// LoadSource reads a certificate chain, its private key and a CA bundle from PEM files. The
// certificate must carry a valid SPIFFE ID.
func LoadSource(certFile, keyFile, caFile string) (*FileSource, error) {
	s := &FileSource{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the files. On error the previous certificate and roots stay in use.
func (s *FileSource) Reload() error {
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", s.certFile, err)
	}
	if _, err := IDFromCert(cert.Leaf); err != nil {
		return fmt.Errorf("load certificate %s: %w", s.certFile, err)
	}
	pem, err := os.ReadFile(s.caFile)
	if err != nil {
		return fmt.Errorf("load CA bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("load CA bundle %s: no PEM certificates", s.caFile)
	}
	s.Set(&cert, roots)
	return nil
}
