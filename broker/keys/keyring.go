package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
)

// Sealed value layout: format byte, key version (big-endian uint32), 12-byte nonce, GCM ciphertext
// and tag. The 5-byte header is authenticated together with the caller's associated data.
const (
	sealFormat    byte = 1
	sealHeaderLen      = 1 + 4
	sealNonceLen       = 12
	sealOverhead       = sealHeaderLen + sealNonceLen + 16
)

// KeySize is the size of every data key: AES-256 and HMAC-SHA256 keys alike.
const KeySize = keySize

// AEADRing is a [Sealer] over numbered AES-256 keys. It seals with the current version and opens
// any version it holds. Add and SetCurrent may be called while it is in use.
type AEADRing struct {
	state atomic.Pointer[aeadState]
	mu    sync.Mutex // serialises writers
	// Missing, if set, is called by Open for a version the ring does not hold; it may Add the key
	// (for example after another replica rotated) and report whether it did.
	Missing func(version uint32) bool
}

type aeadState struct {
	current uint32
	aeads   map[uint32]cipher.AEAD
}

var _ Sealer = (*AEADRing)(nil)

// NewAEADRing returns an empty ring; Add keys and SetCurrent before sealing.
func NewAEADRing() *AEADRing {
	r := &AEADRing{}
	r.state.Store(&aeadState{aeads: map[uint32]cipher.AEAD{}})
	return r
}

// Add adds key (32 bytes) as version. Adding a version the ring already holds is a no-op.
func (r *AEADRing) Add(version uint32, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("data key version %d has %d bytes, want %d", version, len(key), KeySize)
	}
	if version == 0 {
		return fmt.Errorf("data key version must be positive")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("data key version %d: %w", version, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("data key version %d: %w", version, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	if _, ok := old.aeads[version]; ok {
		return nil
	}
	next := &aeadState{current: old.current, aeads: make(map[uint32]cipher.AEAD, len(old.aeads)+1)}
	for v, a := range old.aeads {
		next.aeads[v] = a
	}
	next.aeads[version] = aead
	r.state.Store(next)
	return nil
}

// SetCurrent makes version (which must have been added) the one Seal uses.
func (r *AEADRing) SetCurrent(version uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.state.Load()
	if _, ok := old.aeads[version]; !ok {
		return fmt.Errorf("data key version %d is not loaded", version)
	}
	r.state.Store(&aeadState{current: version, aeads: old.aeads})
	return nil
}

// Current returns the version Seal uses (0 if none).
func (r *AEADRing) Current() uint32 { return r.state.Load().current }

// Has reports whether the ring holds version.
func (r *AEADRing) Has(version uint32) bool {
	_, ok := r.state.Load().aeads[version]
	return ok
}

// Versions returns how many versions the ring holds.
func (r *AEADRing) Versions() int { return len(r.state.Load().aeads) }

// Seal implements [Sealer].
func (r *AEADRing) Seal(plaintext, associatedData []byte) ([]byte, error) {
	st := r.state.Load()
	aead := st.aeads[st.current]
	if aead == nil {
		return nil, fmt.Errorf("seal: no data key loaded")
	}
	out := make([]byte, sealHeaderLen+sealNonceLen, sealOverhead+len(plaintext))
	out[0] = sealFormat
	binary.BigEndian.PutUint32(out[1:sealHeaderLen], st.current)
	nonce := out[sealHeaderLen : sealHeaderLen+sealNonceLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return aead.Seal(out, nonce, plaintext, sealAD(out[:sealHeaderLen], associatedData)), nil
}

// Open implements [Sealer].
func (r *AEADRing) Open(ciphertext, associatedData []byte) ([]byte, error) {
	if len(ciphertext) < sealOverhead || ciphertext[0] != sealFormat {
		return nil, fmt.Errorf("%w: not a sealed value", ErrOpen)
	}
	version := binary.BigEndian.Uint32(ciphertext[1:sealHeaderLen])
	aead := r.state.Load().aeads[version]
	if aead == nil && r.Missing != nil && r.Missing(version) {
		aead = r.state.Load().aeads[version]
	}
	if aead == nil {
		return nil, fmt.Errorf("%w: data key version %d is unknown", ErrOpen, version)
	}
	nonce := ciphertext[sealHeaderLen : sealHeaderLen+sealNonceLen]
	pt, err := aead.Open(nil, nonce, ciphertext[sealHeaderLen+sealNonceLen:], sealAD(ciphertext[:sealHeaderLen], associatedData))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (altered, or other associated data)", ErrOpen)
	}
	return pt, nil
}

// SealedVersion returns the key version a sealed value names, without opening it (for re-sealing
// old values after a rotation).
func SealedVersion(ciphertext []byte) (uint32, error) {
	if len(ciphertext) < sealOverhead || ciphertext[0] != sealFormat {
		return 0, fmt.Errorf("%w: not a sealed value", ErrOpen)
	}
	return binary.BigEndian.Uint32(ciphertext[1:sealHeaderLen]), nil
}

func sealAD(header, ad []byte) []byte {
	b := make([]byte, 0, len(header)+len(ad))
	return append(append(b, header...), ad...)
}

// HMACPseudonymizer is a [Pseudonymizer] with one HMAC-SHA256 key: Value is the first 16 bytes of
// HMAC-SHA256(key, citizen id) in hex, as [Local] computes it.
type HMACPseudonymizer struct {
	keyID string
	pool  sync.Pool
}

var _ Pseudonymizer = (*HMACPseudonymizer)(nil)

// NewHMACPseudonymizer returns a Pseudonymizer for key (32 bytes) that labels pseudonyms keyID.
func NewHMACPseudonymizer(keyID string, key []byte) (*HMACPseudonymizer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("pseudonym key %s has %d bytes, want %d", keyID, len(key), KeySize)
	}
	k := append([]byte(nil), key...)
	p := &HMACPseudonymizer{keyID: keyID}
	p.pool.New = func() any { return hmac.New(sha256.New, k) }
	return p, nil
}

// KeyID is the id in every Pseudonym p returns.
func (p *HMACPseudonymizer) KeyID() string { return p.keyID }

// Pseudonym implements [Pseudonymizer].
func (p *HMACPseudonymizer) Pseudonym(citizenID string) Pseudonym {
	h := p.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(citizenID))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	p.pool.Put(h)
	return Pseudonym{Value: hex.EncodeToString(sum[:16]), KeyID: p.keyID}
}
