package keys

import (
	"fmt"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"

	"github.com/aperture-gov/aperture/broker/tlog"
)

// SealKeyFile is the name of the local data key (AES-256) inside the directory given to
// OpenLocalProvider.
const SealKeyFile = "seal.key"

// LocalProvider is a [Provider] with every key in a file of the data directory: pseudonym.key (as
// [OpenLocal]), checkpoint.key and checkpoint.vkey (as tlog.OpenLocalSigner) and seal.key. It has one
// version of each key: local keys are not rotated.
type LocalProvider struct {
	pseudonyms *Local
	signer     *localSigner
	sealer     *AEADRing
}

var _ Provider = (*LocalProvider)(nil)

// OpenLocalProvider loads the keys from dir, creating missing ones (files mode 0600). origin names a
// new checkpoint key (if empty, a name of this installation's own derived from the key: see
// tlog.DefaultOrigin); an existing key keeps its name.
func OpenLocalProvider(dir, origin string) (*LocalProvider, error) {
	pseudonyms, err := OpenLocal(dir)
	if err != nil {
		return nil, err
	}
	ts, err := tlog.OpenLocalSigner(dir, origin)
	if err != nil {
		return nil, err
	}
	vk, ok := ts.(interface{ VerifierKey() string })
	if !ok {
		return nil, fmt.Errorf("local checkpoint signer does not expose its verifier key")
	}
	sealKey, err := loadOrCreateKey(dir, SealKeyFile, "seal key")
	if err != nil {
		return nil, err
	}
	ring := NewAEADRing()
	if err := ring.Add(1, sealKey); err != nil {
		return nil, err
	}
	if err := ring.SetCurrent(1); err != nil {
		return nil, err
	}
	return &LocalProvider{
		pseudonyms: pseudonyms,
		signer:     &localSigner{Signer: ts, vkey: vk.VerifierKey()},
		sealer:     ring,
	}, nil
}

// Pseudonyms implements [Provider]; it is the same key as OpenLocal(dir).
func (p *LocalProvider) Pseudonyms() Pseudonymizer { return p.pseudonyms }

// Local returns the pseudonym key as the *Local existing callers use.
func (p *LocalProvider) Local() *Local { return p.pseudonyms }

// Checkpoints implements [Provider]; it is the same key as tlog.OpenLocalSigner(dir, origin).
func (p *LocalProvider) Checkpoints() Signer { return p.signer }

// Sealer implements [Provider].
func (p *LocalProvider) Sealer() Sealer { return p.sealer }

// Close implements [Provider]; local keys hold no resources.
func (p *LocalProvider) Close() error { return nil }

type localSigner struct {
	tlog.Signer
	vkey string
}

func (s *localSigner) Verifiers() []note.Verifier { return []note.Verifier{s.Verifier()} }
func (s *localSigner) VerifierKeys() []string     { return []string{s.vkey} }

// OpenLocalSealer loads only the local data key of dir, creating nothing: for tools that check what the
// broker sealed or MACed (aperture audit verify on the broker's machine). fs.ErrNotExist when there is
// no key.
func OpenLocalSealer(dir string) (*AEADRing, error) {
	key, err := loadKey(filepath.Join(dir, SealKeyFile), "seal key")
	if err != nil {
		return nil, err
	}
	ring := NewAEADRing()
	if err := ring.Add(1, key); err != nil {
		return nil, err
	}
	if err := ring.SetCurrent(1); err != nil {
		return nil, err
	}
	return ring, nil
}
