// Package vaultkeys implements keys.Provider with Vault transit.
//
//   - Checkpoints are signed by transit/sign with an ed25519 key that never leaves Vault. The signer
//     pins the key version it found at Open (so Name, KeyHash and signatures always agree); after an
//     operator rotates the key, the next Open signs with the new version and Verifiers lists every
//     version, so older checkpoints still verify.
//   - The pseudonym and sealing keys are data keys from transit/datakey/wrapped. Only their wrapped
//     form is stored, in the JetStream KV bucket KEYS (one entry per purpose and version, created with
//     compare-and-set, so replicas starting together agree). Open unwraps each one once with
//     transit/decrypt; the plaintext lives only in memory and the hot path never calls Vault.
//   - The sealing key rotates (every version still opens). The pseudonym key does not: see
//     ErrPseudonymRotation.
package vaultkeys

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/keys"
	"github.com/aperture-gov/aperture/broker/tlog"
	"github.com/aperture-gov/aperture/services/kit/vault"
)

// DefaultBucket is the KV bucket of the wrapped data keys.
const DefaultBucket = "KEYS"

// Data key purposes: the first token of a KEYS entry ("pseudonym.1", "seal.3").
const (
	PurposePseudonym = "pseudonym"
	PurposeSeal      = "seal"
)

// Options configure Open.
type Options struct {
	// Transit names the mount and keys (the client's configured ones if zero).
	Transit vault.TransitConfig
	// Origin is the log origin, the name of the checkpoint note key (required).
	Origin string
	// Bucket is the KV bucket for wrapped data keys (DefaultBucket if empty); Replicas its
	// replication (1 if 0).
	Bucket   string
	Replicas int
	// SignTimeout bounds one transit/sign call (default 10s).
	SignTimeout time.Duration
	Logger      *slog.Logger
}

// Provider is the Vault keys.Provider.
type Provider struct {
	c       *vault.Client
	transit *vault.Transit
	tcfg    vault.TransitConfig
	kv      jetstream.KeyValue
	log     *slog.Logger

	pseudonyms *keys.HMACPseudonymizer
	sealer     *keys.AEADRing
	signer     *Signer

	loadMu sync.Mutex // serialises loading of data keys
	own    bool       // Close closes c
}

var _ keys.Provider = (*Provider)(nil)

// entry is the JSON stored in KEYS: a data key wrapped by transit. It holds no secret.
type entry struct {
	Purpose string `json:"purpose"`
	Version uint32 `json:"version"`
	// KEK is "<mount>/<key>" of the transit key that wrapped it; Ciphertext is "vault:vN:...".
	KEK        string    `json:"kek"`
	Ciphertext string    `json:"ciphertext"`
	Created    time.Time `json:"created"`
}

// Open reads the checkpoint key's public keys, loads (creating on first start) the wrapped data keys
// from the KV bucket and unwraps them. Any Vault or NATS failure is returned: there is no fallback.
func Open(ctx context.Context, c *vault.Client, js jetstream.JetStream, opts Options) (*Provider, error) {
	if opts.Origin == "" {
		return nil, errors.New("vault keys: the log origin is required")
	}
	tcfg := opts.Transit
	if tcfg == (vault.TransitConfig{}) {
		tcfg = c.Config().Transit
	}
	tcfg = tcfg.WithDefaults()
	if err := tcfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.SignTimeout == 0 {
		opts.SignTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Provider{
		c: c, transit: c.Transit(tcfg.Mount), tcfg: tcfg, log: opts.Logger,
		sealer: keys.NewAEADRing(),
	}
	var err error
	if p.signer, err = newSigner(ctx, p.transit, tcfg.CheckpointKey, opts.Origin, opts.SignTimeout); err != nil {
		return nil, err
	}
	p.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "Aperture data keys, wrapped by Vault transit",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("vault keys: open KV bucket %s: %w", opts.Bucket, err)
	}
	for _, purpose := range []string{PurposePseudonym, PurposeSeal} {
		if err := p.ensure(ctx, purpose); err != nil {
			return nil, err
		}
	}
	if p.pseudonyms, err = p.loadPseudonymKey(ctx); err != nil {
		return nil, err
	}
	if err := p.load(ctx); err != nil {
		return nil, err
	}
	// Another replica may rotate the sealing key: open its ciphertexts after reloading from KEYS.
	p.sealer.Missing = p.reloadFor
	return p, nil
}

// Pseudonyms implements keys.Provider: the one pseudonym key in KEYS.
func (p *Provider) Pseudonyms() keys.Pseudonymizer { return p.pseudonyms }

// ErrPseudonymRotation is returned by RotateDataKey for the pseudonym key, and by Open when KEYS holds
// more than one version of it. Every store that serves a citizen is keyed by the pseudonym (the access
// index, cases, consents, switch-offs, answers, corrections, delegations), and the broker cannot
// re-key them: it never stores the citizen ids the new pseudonyms would be computed from. A new
// pseudonym key would therefore hide every citizen's history, consents and cases from them, and from
// the decisions that read them. A rotation needs a re-keying migration, which is not built.
var ErrPseudonymRotation = errors.New("vault keys: the pseudonym key cannot be rotated: every citizen's records are stored under their pseudonym, and re-keying them is not supported")

// loadPseudonymKey unwraps the pseudonym key: KEYS must hold exactly one version of it.
func (p *Provider) loadPseudonymKey(ctx context.Context) (*keys.HMACPseudonymizer, error) {
	vers, err := p.versions(ctx, PurposePseudonym)
	if err != nil {
		return nil, err
	}
	switch {
	case len(vers) == 0:
		return nil, fmt.Errorf("vault keys: no %s data key in the bucket", PurposePseudonym)
	case len(vers) > 1:
		return nil, fmt.Errorf("%w: the bucket holds versions %v; the stores are keyed by one of them", ErrPseudonymRotation, vers)
	}
	key, err := p.unwrap(ctx, PurposePseudonym, vers[0])
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return keys.NewHMACPseudonymizer(KeyID(PurposePseudonym, vers[0]), key)
}

// Checkpoints implements keys.Provider.
func (p *Provider) Checkpoints() keys.Signer { return p.signer }

// Signer returns the checkpoint signer with its concrete type.
func (p *Provider) Signer() *Signer { return p.signer }

// Sealer implements keys.Provider. It seals with the newest version loaded and opens every version
// in KEYS (loading versions another replica added on first use).
func (p *Provider) Sealer() keys.Sealer { return p.sealer }

// Vault is the Vault client the provider uses (for its metrics).
func (p *Provider) Vault() *vault.Client { return p.c }

// Close implements keys.Provider. It closes the Vault client only if OpenConfig created it.
func (p *Provider) Close() error {
	if p.own {
		return p.c.Close()
	}
	return nil
}

// KeyID names a data key version, as in Pseudonym.KeyID: "vault:<purpose>:v<n>".
func KeyID(purpose string, version uint32) string {
	return "vault:" + purpose + ":v" + strconv.FormatUint(uint64(version), 10)
}

// RotateDataKey adds a new version of the sealing key (PurposeSeal) and seals with it from now on;
// every replica still opens the older versions. The pseudonym key is refused (ErrPseudonymRotation)
// and KEYS is left as it is.
func (p *Provider) RotateDataKey(ctx context.Context, purpose string) (string, error) {
	switch purpose {
	case PurposeSeal:
	case PurposePseudonym:
		return "", ErrPseudonymRotation
	default:
		return "", fmt.Errorf("rotate data key: unknown purpose %q", purpose)
	}
	vers, err := p.versions(ctx, purpose)
	if err != nil {
		return "", err
	}
	next := uint32(1)
	if n := len(vers); n > 0 {
		next = vers[n-1] + 1
	}
	if err := p.create(ctx, purpose, next); err != nil {
		return "", err
	}
	if err := p.load(ctx); err != nil {
		return "", err
	}
	return KeyID(purpose, next), nil
}

// ensure creates version 1 of purpose if KEYS has no version of it.
func (p *Provider) ensure(ctx context.Context, purpose string) error {
	vers, err := p.versions(ctx, purpose)
	if err != nil || len(vers) > 0 {
		return err
	}
	return p.create(ctx, purpose, 1)
}

// create stores a new wrapped data key as purpose.version. If another replica created that entry
// first, its key is kept and this one is discarded (it was never used).
func (p *Provider) create(ctx context.Context, purpose string, version uint32) error {
	ct, err := p.transit.DataKeyWrapped(ctx, p.tcfg.DataKey, 256)
	if err != nil {
		return fmt.Errorf("vault keys: new %s data key: %w", purpose, err)
	}
	b, err := json.Marshal(entry{
		Purpose: purpose, Version: version, KEK: p.tcfg.Mount + "/" + p.tcfg.DataKey,
		Ciphertext: ct, Created: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	if _, err := p.kv.Create(ctx, entryKey(purpose, version), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("vault keys: store %s data key: %w", purpose, err)
	}
	p.log.Info("data key created", "key_id", KeyID(purpose, version))
	return nil
}

func entryKey(purpose string, version uint32) string {
	return purpose + "." + strconv.FormatUint(uint64(version), 10)
}

// versions lists the versions of purpose in KEYS, ascending.
func (p *Provider) versions(ctx context.Context, purpose string) ([]uint32, error) {
	lister, err := p.kv.ListKeysFiltered(ctx, purpose+".*")
	if err != nil {
		return nil, fmt.Errorf("vault keys: list %s data keys: %w", purpose, err)
	}
	var vers []uint32
	for k := range lister.Keys() {
		n, err := strconv.ParseUint(strings.TrimPrefix(k, purpose+"."), 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("vault keys: unexpected entry %q in the data key bucket", k)
		}
		vers = append(vers, uint32(n))
	}
	sort.Slice(vers, func(i, j int) bool { return vers[i] < vers[j] })
	return vers, nil
}

// load unwraps every sealing key in KEYS that is not yet in memory and makes the newest current.
// One transit/decrypt per new key.
func (p *Provider) load(ctx context.Context) error {
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	vers, err := p.versions(ctx, PurposeSeal)
	if err != nil {
		return err
	}
	if len(vers) == 0 {
		return fmt.Errorf("vault keys: no %s data key in the bucket", PurposeSeal)
	}
	for _, v := range vers {
		if p.sealer.Has(v) {
			continue
		}
		key, err := p.unwrap(ctx, PurposeSeal, v)
		if err != nil {
			return err
		}
		err = p.sealer.Add(v, key)
		clear(key)
		if err != nil {
			return err
		}
	}
	return p.sealer.SetCurrent(vers[len(vers)-1])
}

func (p *Provider) unwrap(ctx context.Context, purpose string, v uint32) ([]byte, error) {
	id := KeyID(purpose, v)
	kve, err := p.kv.Get(ctx, entryKey(purpose, v))
	if err != nil {
		return nil, fmt.Errorf("vault keys: read %s: %w", id, err)
	}
	var e entry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		return nil, fmt.Errorf("vault keys: %s is malformed: %w", id, err)
	}
	// KEK is "<mount>/<name>"; the mount may be nested, the name is the last segment.
	i := strings.LastIndex(e.KEK, "/")
	if i <= 0 || e.Purpose != purpose || e.Version != v {
		return nil, fmt.Errorf("vault keys: %s is malformed", id)
	}
	mount, name := e.KEK[:i], e.KEK[i+1:]
	key, err := p.c.Transit(mount).Decrypt(ctx, name, e.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("vault keys: unwrap %s: %w", id, err)
	}
	if len(key) != keys.KeySize {
		clear(key)
		return nil, fmt.Errorf("vault keys: %s unwraps to %d bytes, want %d", id, len(key), keys.KeySize)
	}
	return key, nil
}

// reloadFor is the sealer's hook for an unknown version: reload from KEYS (with a bounded wait).
func (p *Provider) reloadFor(version uint32) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vers, err := p.versions(ctx, PurposeSeal)
	if err != nil || len(vers) == 0 || vers[len(vers)-1] < version {
		return false
	}
	if err := p.load(ctx); err != nil {
		p.log.Error("loading a new sealing key failed", "err", err)
		return false
	}
	return true
}

// Signer is the checkpoint signer: Ed25519 signatures made by Vault transit.
type Signer struct {
	transit   *vault.Transit
	key       string
	name      string
	version   int
	pub       ed25519.PublicKey
	hash      uint32
	timeout   time.Duration
	verifiers []note.Verifier
	vkeys     []string
}

var _ keys.Signer = (*Signer)(nil)

func newSigner(ctx context.Context, t *vault.Transit, key, origin string, timeout time.Duration) (*Signer, error) {
	k, err := t.ReadKey(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("vault keys: checkpoint key: %w", err)
	}
	if k.Type != "ed25519" {
		return nil, fmt.Errorf("vault keys: checkpoint key %s is %q, want ed25519", key, k.Type)
	}
	s := &Signer{transit: t, key: key, name: origin, version: k.LatestVersion, timeout: timeout}
	for v := max(k.MinDecryptionVersion, 1); v <= k.LatestVersion; v++ {
		pub, ok := k.PublicKeys[v]
		if !ok {
			return nil, fmt.Errorf("vault keys: checkpoint key %s has no public key for version %d", key, v)
		}
		vkey, err := note.NewEd25519VerifierKey(origin, pub)
		if err != nil {
			return nil, fmt.Errorf("vault keys: checkpoint verifier key: %w", err)
		}
		ver, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("vault keys: checkpoint verifier key: %w", err)
		}
		s.verifiers = append(s.verifiers, ver)
		s.vkeys = append(s.vkeys, vkey)
		if v == k.LatestVersion {
			s.pub, s.hash = pub, ver.KeyHash()
		}
	}
	if s.pub == nil {
		return nil, fmt.Errorf("vault keys: checkpoint key %s has no usable version", key)
	}
	return s, nil
}

// Name implements note.Signer: the log origin.
func (s *Signer) Name() string { return s.name }

// KeyHash implements note.Signer, computed from the pinned version's public key.
func (s *Signer) KeyHash() uint32 { return s.hash }

// Version is the transit key version this signer signs with.
func (s *Signer) Version() int { return s.version }

// Sign implements note.Signer with transit/sign. It fails when Vault cannot sign, and checks the
// signature against the public key before returning it.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	sig, v, err := s.transit.Sign(ctx, s.key, s.version, msg)
	if err != nil {
		return nil, fmt.Errorf("checkpoint signature: %w", err)
	}
	if v != s.version || !ed25519.Verify(s.pub, msg, sig) {
		return nil, fmt.Errorf("checkpoint signature: Vault signed with version %d, which does not verify with version %d", v, s.version)
	}
	return sig, nil
}

// Verifier implements keys.Signer.
func (s *Signer) Verifier() note.Verifier { return s.verifiers[len(s.verifiers)-1] }

// Verifiers implements keys.Signer: one per key version still allowed to verify, oldest first.
func (s *Signer) Verifiers() []note.Verifier { return append([]note.Verifier(nil), s.verifiers...) }

// VerifierKeys implements keys.Signer.
func (s *Signer) VerifierKeys() []string { return append([]string(nil), s.vkeys...) }

// OpenConfig opens the keys cfg selects: for "local" keys.OpenLocalProvider(dir, cfg.Origin); for
// "vault" it logs in to Vault (failing if Vault is unreachable: no fallback) and opens a Provider
// that owns the client and closes it on Close. js is only used for "vault".
func OpenConfig(ctx context.Context, cfg keys.Config, dir string, js jetstream.JetStream, replicas int, logger *slog.Logger) (keys.Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Source() == keys.SourceLocal {
		return keys.OpenLocalProvider(dir, cfg.Origin)
	}
	if js == nil {
		return nil, errors.New("vault keys: a JetStream connection is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c, err := vault.Open(ctx, cfg.Vault, logger.With("component", "vault"))
	if err != nil {
		return nil, err
	}
	origin := cfg.Origin
	if origin == "" {
		origin = tlog.DefaultOrigin
	}
	p, err := Open(ctx, c, js, Options{Origin: origin, Bucket: cfg.Bucket, Replicas: replicas, Logger: logger.With("component", "keys")})
	if err != nil {
		c.Close()
		return nil, err
	}
	p.own = true
	return p, nil
}
