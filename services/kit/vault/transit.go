package vault

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TransitKey is what transit/keys/<name> tells about a key.
type TransitKey struct {
	Name string
	// Type is the key type, e.g. "ed25519" or "aes256-gcm96".
	Type string
	// LatestVersion is the version new signatures and data keys use.
	LatestVersion int
	// MinDecryptionVersion is the oldest version that still decrypts (and verifies).
	MinDecryptionVersion int
	// PublicKeys are the Ed25519 public keys by version (asymmetric keys only).
	PublicKeys map[int]ed25519.PublicKey
}

// Transit is a transit secrets engine mount.
type Transit struct {
	c     *Client
	mount string
}

// Transit returns the transit engine at mount (the configured one if empty).
func (c *Client) Transit(mount string) *Transit {
	if mount == "" {
		mount = c.cfg.Transit.Mount
	}
	return &Transit{c: c, mount: mount}
}

// ReadKey reads a key's versions and public keys (GET <mount>/keys/<name>).
func (t *Transit) ReadKey(ctx context.Context, name string) (TransitKey, error) {
	s, err := t.c.Read(ctx, t.mount+"/keys/"+name)
	if err != nil {
		return TransitKey{}, fmt.Errorf("read transit key: %w", err)
	}
	k := TransitKey{Name: name, PublicKeys: map[int]ed25519.PublicKey{}}
	k.Type, _ = s.Data["type"].(string)
	if k.LatestVersion, err = intField(s.Data, "latest_version"); err != nil {
		return TransitKey{}, fmt.Errorf("transit key %s: %w", name, err)
	}
	k.MinDecryptionVersion, _ = intField(s.Data, "min_decryption_version")
	versions, _ := s.Data["keys"].(map[string]any)
	for v, entry := range versions {
		n, err := strconv.Atoi(v)
		if err != nil {
			return TransitKey{}, fmt.Errorf("transit key %s: bad version %q", name, v)
		}
		// Symmetric keys list creation times; asymmetric ones an object with the public key.
		m, ok := entry.(map[string]any)
		if !ok {
			continue
		}
		pk, _ := m["public_key"].(string)
		if pk == "" || k.Type != "ed25519" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(pk)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return TransitKey{}, fmt.Errorf("transit key %s version %d: public key is not an Ed25519 key", name, n)
		}
		k.PublicKeys[n] = ed25519.PublicKey(raw)
	}
	return k, nil
}

// Sign signs msg with version (0 for the latest) of an ed25519 key and returns the raw Ed25519
// signature and the version that made it (POST <mount>/sign/<name>). Ed25519 signs msg itself, as a
// C2SP signed note does: no pre-hashing.
func (t *Transit) Sign(ctx context.Context, name string, version int, msg []byte) ([]byte, int, error) {
	data := map[string]any{"input": base64.StdEncoding.EncodeToString(msg)}
	if version > 0 {
		data["key_version"] = version
	}
	s, err := t.c.Write(ctx, t.mount+"/sign/"+name, data)
	if err != nil {
		return nil, 0, fmt.Errorf("transit sign: %w", err)
	}
	if s == nil {
		return nil, 0, errors.New("transit sign: empty response")
	}
	sig, _ := s.Data["signature"].(string)
	v, raw, err := parseVaultCiphertext(sig)
	if err != nil {
		return nil, 0, fmt.Errorf("transit sign: signature: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("transit sign: signature is not base64")
	}
	return b, v, nil
}

// DataKeyWrapped asks for a new random data key of bits bits, wrapped by the named key (POST
// <mount>/datakey/wrapped/<name>). Only the wrapped form ("vault:vN:...") leaves Vault.
func (t *Transit) DataKeyWrapped(ctx context.Context, name string, bits int) (string, error) {
	s, err := t.c.Write(ctx, t.mount+"/datakey/wrapped/"+name, map[string]any{"bits": bits})
	if err != nil {
		return "", fmt.Errorf("transit datakey: %w", err)
	}
	if s == nil {
		return "", errors.New("transit datakey: empty response")
	}
	ct, _ := s.Data["ciphertext"].(string)
	if _, _, err := parseVaultCiphertext(ct); err != nil {
		return "", fmt.Errorf("transit datakey: ciphertext: %w", err)
	}
	if _, ok := s.Data["plaintext"]; ok {
		return "", errors.New("transit datakey: response carries a plaintext key; use the wrapped endpoint")
	}
	return ct, nil
}

// Decrypt decrypts a transit ciphertext (POST <mount>/decrypt/<name>).
func (t *Transit) Decrypt(ctx context.Context, name, ciphertext string) ([]byte, error) {
	s, err := t.c.Write(ctx, t.mount+"/decrypt/"+name, map[string]any{"ciphertext": ciphertext})
	if err != nil {
		return nil, fmt.Errorf("transit decrypt: %w", err)
	}
	if s == nil {
		return nil, errors.New("transit decrypt: empty response")
	}
	pt, _ := s.Data["plaintext"].(string)
	b, err := base64.StdEncoding.DecodeString(pt)
	if err != nil {
		return nil, errors.New("transit decrypt: plaintext is not base64")
	}
	return b, nil
}

// CiphertextVersion returns N of a transit ciphertext or signature "vault:vN:...".
func CiphertextVersion(s string) (int, error) {
	v, _, err := parseVaultCiphertext(s)
	return v, err
}

func parseVaultCiphertext(s string) (int, string, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return 0, "", errors.New(`not of the form "vault:vN:..."`)
	}
	v, err := strconv.Atoi(parts[1][1:])
	if err != nil || v <= 0 {
		return 0, "", errors.New(`not of the form "vault:vN:..."`)
	}
	return v, parts[2], nil
}

func intField(m map[string]any, k string) (int, error) {
	switch v := m[k].(type) {
	case json.Number:
		n, err := v.Int64()
		return int(n), err
	case float64:
		return int(v), nil
	case int:
		return v, nil
	default:
		return 0, fmt.Errorf("field %s missing", k)
	}
}
