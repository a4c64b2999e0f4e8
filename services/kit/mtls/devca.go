package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Lifetimes of development certificates.
const (
	devCALifetime   = 10 * 365 * 24 * time.Hour
	devLeafLifetime = 30 * 24 * time.Hour
	// A leaf is reissued once it has less than this left, so a process started from it has a day
	// before it must renew.
	devLeafRenewBefore = 24 * time.Hour
)

// DevCA is a development certificate authority kept in a directory: ca.crt and ca.key, plus one
// certificate and key per component it issued. It is what `aperture dev` uses so that everything runs
// over real mutual TLS on one machine without Vault. The CA is name-constrained to its trust domain,
// so it cannot vouch for identities elsewhere. DevCA is safe for concurrent use within a process.
type DevCA struct {
	dir         string
	trustDomain string
	cert        *x509.Certificate
	key         *ecdsa.PrivateKey
	roots       *x509.CertPool
	now         func() time.Time

	mu sync.Mutex // serialises issuing, which writes files
}

// OpenDevCA opens the development CA in dir, creating dir, ca.crt and ca.key (mode 0600, ECDSA P-256)
// if they do not exist. An existing CA must belong to trustDomain.
func OpenDevCA(dir, trustDomain string) (*DevCA, error) {
	if !validTrustDomain(trustDomain) {
		return nil, fmt.Errorf("open dev CA: invalid trust domain %q", trustDomain)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open dev CA: %w", err)
	}
	ca := &DevCA{dir: dir, trustDomain: trustDomain, now: time.Now}
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := ca.create(certPath, keyPath); err != nil {
			return nil, fmt.Errorf("open dev CA in %s: %w", dir, err)
		}
	case err != nil:
		return nil, fmt.Errorf("open dev CA in %s: %w", dir, err)
	default:
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("open dev CA in %s: ca.key is not an ECDSA key", dir)
		}
		if want := "spiffe://" + trustDomain; len(pair.Leaf.URIs) != 1 || pair.Leaf.URIs[0].String() != want {
			return nil, fmt.Errorf("open dev CA in %s: CA is not for trust domain %q", dir, trustDomain)
		}
		ca.cert, ca.key = pair.Leaf, key
	}
	ca.roots = x509.NewCertPool()
	ca.roots.AddCert(ca.cert)
	return ca, nil
}

// TrustDomain returns the trust domain the CA issues identities in.
func (ca *DevCA) TrustDomain() string { return ca.trustDomain }

// Roots returns a pool holding only the CA certificate.
func (ca *DevCA) Roots() *x509.CertPool { return ca.roots }

// CertFile returns the path of the CA certificate, for clients configured with files.
func (ca *DevCA) CertFile() string { return filepath.Join(ca.dir, "ca.crt") }

// Source returns a Source for the component kind/name (see [ID]). It reuses the certificate saved as
// <dir>/<kind>-<name>.crt and .key (<dir>/broker.crt for the broker) while it is valid for more than
// a day, and otherwise issues a new one valid for 30 days, with the SPIFFE ID as URI SAN and also
// DNS "localhost" and IP 127.0.0.1 so that ordinary tools can talk to local servers. The Source
// renews the certificate itself when it nears expiry.
func (ca *DevCA) Source(kind, name string) (Source, error) {
	id := ID(ca.trustDomain, kind, name)
	if _, _, _, err := ParseID(id); err != nil {
		return nil, fmt.Errorf("dev CA source: %w", err)
	}
	base := kind
	if kind != KindBroker {
		base = kind + "-" + name
	}
	s := &devSource{ca: ca, id: id, certPath: filepath.Join(ca.dir, base+".crt"), keyPath: filepath.Join(ca.dir, base+".key")}
	if _, err := s.current(); err != nil {
		return nil, err
	}
	return s, nil
}

// devSource serves a DevCA-issued leaf and reissues it when it nears expiry.
type devSource struct {
	ca                *DevCA
	id                string
	certPath, keyPath string

	mu   sync.Mutex
	cert *tls.Certificate
}

func (s *devSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current()
}

func (s *devSource) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.current()
}

func (s *devSource) Roots() *x509.CertPool { return s.ca.roots }

func (s *devSource) current() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cert; c != nil && s.ca.fresh(c.Leaf) {
		return c, nil
	}
	c, err := s.ca.leaf(s.id, s.certPath, s.keyPath)
	if err != nil {
		return nil, err
	}
	s.cert = c
	return c, nil
}

// fresh reports whether leaf may still be handed out without renewal.
func (ca *DevCA) fresh(leaf *x509.Certificate) bool {
	return leaf.NotAfter.Sub(ca.now()) > devLeafRenewBefore
}

// leaf loads the saved certificate for id if it is still good, and otherwise issues and saves one.
func (ca *DevCA) leaf(id, certPath, keyPath string) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && ca.reusable(pair.Leaf, id) {
		return &pair, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", id, err)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", id, err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Aperture development"}},
		NotBefore:   now.Add(-time.Minute), // tolerate small clock skew between local processes
		NotAfter:    now.Add(devLeafLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := ca.sign(tmpl, &key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", id, err)
	}
	if err := writeKeyPair(certPath, keyPath, der, key); err != nil {
		return nil, fmt.Errorf("issue %s: %w", id, err)
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("issue %s: reload: %w", id, err)
	}
	return &pair, nil
}

// reusable reports whether a saved leaf was issued by this CA for id and is fresh.
func (ca *DevCA) reusable(leaf *x509.Certificate, id string) bool {
	if got, err := IDFromCert(leaf); err != nil || got != id || !ca.fresh(leaf) {
		return false
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:       ca.roots,
		CurrentTime: ca.now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

func (ca *DevCA) create(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Aperture development"}, CommonName: "Aperture development CA " + ca.trustDomain},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(devCALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: ca.trustDomain}},
		// Leaves may only name this trust domain (and the loopback names added for local tools).
		PermittedURIDomains:         []string{ca.trustDomain},
		PermittedDNSDomains:         []string{"localhost"},
		PermittedIPRanges:           []*net.IPNet{{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}, {IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)}},
		PermittedDNSDomainsCritical: true,
	}
	ca.key = key
	der, err := ca.sign(tmpl, &key.PublicKey)
	if err != nil {
		return err
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		return err
	}
	return writeKeyPair(certPath, keyPath, der, key)
}

// sign issues tmpl for pub. A CA template has no parent yet and is self-signed.
func (ca *DevCA) sign(tmpl *x509.Certificate, pub *ecdsa.PublicKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	parent := ca.cert
	if parent == nil {
		parent = tmpl
	}
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, ca.key)
}

// writeKeyPair writes the key (0600) and then the certificate, each through a rename so that another
// process never reads a half-written file.
func writeKeyPair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
