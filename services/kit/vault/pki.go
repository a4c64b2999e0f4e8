package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// CertSource is an [mtls.Source] whose certificate is issued by a Vault PKI role for one SPIFFE ID.
// It renews the certificate in the background after two thirds of its lifetime and swaps it
// atomically: servers and clients built with mtls.ServerConfig / mtls.ClientConfig use the new one
// on their next handshake, without restart. While renewal fails it keeps serving the current
// certificate, logs, and retries.
type CertSource struct {
	*mtls.MemorySource
	c   *Client
	cfg PKIConfig
	id  string
	log *slog.Logger

	mu      sync.Mutex
	prevCAs []*x509.Certificate // CAs of the previous issue, trusted until the next renewal
	renewAt time.Time
	issued  int

	cancel context.CancelFunc
	done   chan struct{}
}

var _ mtls.Source = (*CertSource)(nil)

// NewCertSource issues the first certificate for spiffeID from cfg's role (the client's configured
// PKI if cfg.Role is empty) and starts renewing it. It fails if the first issue fails: a component
// without a certificate must not start.
func NewCertSource(ctx context.Context, c *Client, cfg PKIConfig, spiffeID string) (*CertSource, error) {
	if cfg.Role == "" {
		cfg = c.cfg.PKI
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, _, _, err := mtls.ParseID(spiffeID); err != nil {
		return nil, fmt.Errorf("vault certificate source: %w", err)
	}
	s := &CertSource{
		MemorySource: &mtls.MemorySource{},
		c:            c, cfg: cfg, id: spiffeID,
		log:  c.log.With("pki_role", cfg.Role, "spiffe_id", spiffeID),
		done: make(chan struct{}),
	}
	if err := s.renew(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.loop(rctx)
	return s, nil
}

// Close stops renewal; the current certificate stays served until it expires.
func (s *CertSource) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Issued counts the certificates issued so far (1 after NewCertSource).
func (s *CertSource) Issued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

func (s *CertSource) loop(ctx context.Context) {
	defer close(s.done)
	retry := time.Second
	for {
		s.mu.Lock()
		wait := time.Until(s.renewAt)
		s.mu.Unlock()
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := s.renew(ctx); err != nil {
			left := time.Until(s.Certificate().Leaf.NotAfter)
			// Retry well before expiry, but do not hammer Vault.
			retry = min(max(retry, time.Second), max(left/10, time.Second), time.Minute)
			s.log.Error("certificate renewal failed; serving the current certificate", "err", err, "expires_in", left.Round(time.Second), "retry_in", retry)
			s.mu.Lock()
			s.renewAt = time.Now().Add(retry)
			s.mu.Unlock()
			retry *= 2
			continue
		}
		retry = time.Second
	}
}

// renew issues a certificate and swaps it in.
func (s *CertSource) renew(ctx context.Context) error {
	data := map[string]any{
		"uri_sans":             s.id,
		"ttl":                  strconv.FormatInt(int64(s.cfg.TTL/time.Second), 10) + "s",
		"format":               "pem",
		"private_key_format":   "pkcs8",
		"exclude_cn_from_sans": true,
	}
	start := time.Now()
	sec, err := s.c.Write(ctx, s.cfg.Mount+"/issue/"+s.cfg.Role, data)
	if err != nil {
		return fmt.Errorf("issue certificate for %s: %w", s.id, err)
	}
	if sec == nil {
		return fmt.Errorf("issue certificate for %s: empty response", s.id)
	}
	cert, cas, err := parseIssue(sec.Data)
	if err != nil {
		return fmt.Errorf("issue certificate for %s: %w", s.id, err)
	}
	if got, err := mtls.IDFromCert(cert.Leaf); err != nil || got != s.id {
		return fmt.Errorf("issue certificate for %s: Vault issued %q (%v): check the PKI role's allowed_uri_sans", s.id, got, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	roots := x509.NewCertPool()
	for _, ca := range append(append([]*x509.Certificate(nil), cas...), s.prevCAs...) {
		roots.AddCert(ca)
	}
	s.prevCAs = cas
	s.Set(cert, roots)
	s.issued++
	life := cert.Leaf.NotAfter.Sub(start)
	s.renewAt = start.Add(life * 2 / 3)
	s.log.Info("certificate issued", "serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter, "renew_at", s.renewAt)
	return nil
}

// parseIssue builds the TLS certificate (leaf, then intermediates) and the CA list from a
// pki/issue response.
func parseIssue(d map[string]any) (*tls.Certificate, []*x509.Certificate, error) {
	certPEM, _ := d["certificate"].(string)
	keyPEM, _ := d["private_key"].(string)
	if certPEM == "" || keyPEM == "" {
		return nil, nil, errors.New("response has no certificate or private key")
	}
	var caPEMs []string
	if s, _ := d["issuing_ca"].(string); s != "" {
		caPEMs = append(caPEMs, s)
	}
	if chain, ok := d["ca_chain"].([]any); ok {
		for _, c := range chain {
			if s, _ := c.(string); s != "" {
				caPEMs = append(caPEMs, s)
			}
		}
	}
	var cas []*x509.Certificate
	seen := map[string]bool{}
	for _, p := range caPEMs {
		rest := []byte(p)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("CA certificate: %w", err)
			}
			if !seen[string(c.Raw)] {
				seen[string(c.Raw)] = true
				cas = append(cas, c)
			}
		}
	}
	if len(cas) == 0 {
		return nil, nil, errors.New("response has no issuing CA")
	}
	// The chain a peer needs: the leaf and every intermediate (CAs that are not self-signed).
	chainPEM := []byte(certPEM)
	for _, ca := range cas {
		if !bytes.Equal(ca.RawIssuer, ca.RawSubject) {
			chainPEM = append(chainPEM, '\n')
			chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
		}
	}
	pair, err := tls.X509KeyPair(chainPEM, []byte(keyPEM))
	if err != nil {
		return nil, nil, fmt.Errorf("certificate and key: %w", err)
	}
	return &pair, cas, nil
}
