package citizenauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
)

// cookieSealer seals cookie values; name is the cookie's name.
type cookieSealer interface {
	seal(name string, plain []byte) (string, error)
	open(name, value string) ([]byte, error)
}

// keySealer seals cookie values with the broker's sealing key. The associated data names the
// purpose as well as the cookie, so a sealed cookie can never pass for a session record.
type keySealer struct{ s Sealer }

func (k keySealer) seal(name string, plain []byte) (string, error) {
	b, err := k.s.Seal(plain, []byte("aperture/cookie\x00"+name))
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (k keySealer) open(name, value string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		return nil, errors.New("malformed sealed value")
	}
	return k.s.Open(b, []byte("aperture/cookie\x00"+name))
}

// sealer encrypts and authenticates small cookie values with AES-GCM. The cookie name is the
// additional data, so a value sealed for one cookie cannot be replayed as another.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("citizenauth: sign-in cookie key must be 16, 24 or 32 bytes")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(name string, plain []byte) (string, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

func (s *sealer) open(name, value string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(b) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, errors.New("malformed sealed value")
	}
	n := s.aead.NonceSize()
	return s.aead.Open(nil, b[:n], b[n:], []byte(name))
}
