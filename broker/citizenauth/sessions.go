package citizenauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SessionBucket is the JetStream KV bucket that holds the portal's sessions.
const SessionBucket = "portal_sessions"

// MaxSessionAge bounds a session whatever the ID token's expiry says: the bucket's TTL, so a record
// nobody logged out of does not outlive it.
const MaxSessionAge = 12 * time.Hour

// sessionIDLen is the length of rand.Text(): 26 base32 characters, 130 random bits.
const sessionIDLen = 26

// Sealer encrypts and authenticates session records (keys.Sealer satisfies it). associatedData binds
// a record to its key, so a record copied to another key does not open.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(ciphertext, associatedData []byte) ([]byte, error)
}

// ErrSessionStore means the session store could not be read or written; the caller must treat the
// request as signed out (reads) or report the failure (sign-in, sign-out), never guess.
var ErrSessionStore = errors.New("citizenauth: session store unavailable")

// SessionStoreOptions configures OpenSessionStore.
type SessionStoreOptions struct {
	Replicas int          // replicas of the bucket (3 on a cluster); default 1
	Logger   *slog.Logger // default slog.Default()
	Now      func() time.Time
}

// SessionStore keeps the portal's sessions server-side in NATS JetStream KV, so every broker replica
// serving the portal sees the same sessions and a sign-out on one ends the session on all of them.
//
// The browser holds only an opaque random session id. The record lives under the SHA-256 of that id
// (someone who can read the bucket learns no cookie), sealed with the broker's sealing key and bound
// to its key (someone who can write the bucket cannot forge or move a session), and expires with the
// ID token it holds (per-key TTL, at most MaxSessionAge). A record that does not open counts as no
// session and is reported (error-level log line and Stats().Unauthentic).
type SessionStore struct {
	kv     jetstream.KeyValue
	sealer Sealer
	log    *slog.Logger
	now    func() time.Time

	unauthentic atomic.Uint64
}

// sessionRecord is what the store keeps per session.
type sessionRecord struct {
	Token   string `json:"t"` // the verified ID token, for the citizen API
	Created int64  `json:"c"` // unix seconds
	Expires int64  `json:"e"` // unix seconds: the token's expiry, capped at MaxSessionAge
}

// OpenSessionStore creates or updates the session bucket.
func OpenSessionStore(ctx context.Context, js jetstream.JetStream, sealer Sealer, o SessionStoreOptions) (*SessionStore, error) {
	if js == nil || sealer == nil {
		return nil, errors.New("citizenauth: the session store needs JetStream and a sealer")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SessionBucket,
		Description: "citizen portal sessions (sealed, keyed by the SHA-256 of the session id)",
		History:     1,
		TTL:         MaxSessionAge,
		// Needed for per-key TTLs, so a session ends with its ID token.
		LimitMarkerTTL: time.Minute,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
		MaxValueSize:   64 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("citizenauth: open KV %s: %w", SessionBucket, err)
	}
	return &SessionStore{kv: kv, sealer: sealer, log: o.Logger.With("component", "sessions"), now: o.Now}, nil
}

// SessionStats are counters since OpenSessionStore.
type SessionStats struct {
	// Unauthentic counts session records that did not open (forged, altered or moved): each was
	// treated as no session.
	Unauthentic uint64
}

// Stats returns the store's counters.
func (s *SessionStore) Stats() SessionStats {
	return SessionStats{Unauthentic: s.unauthentic.Load()}
}

// storeKey is the KV key of a session id.
func storeKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return "s." + hex.EncodeToString(h[:])
}

func sessionAD(key string) []byte { return []byte("aperture/portal-session\x00" + key) }

// validSessionID reports whether id could have come from create; anything else is not looked up.
func validSessionID(id string) bool {
	if len(id) != sessionIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// create stores a session for the verified token expiring at expires and returns its id and the
// session's end (expires, capped at MaxSessionAge from now).
func (s *SessionStore) create(ctx context.Context, token string, expires time.Time) (string, time.Time, error) {
	now := s.now()
	if limit := now.Add(MaxSessionAge); expires.After(limit) {
		expires = limit
	}
	ttl := expires.Sub(now).Round(time.Second)
	if ttl < time.Second {
		return "", time.Time{}, errors.New("citizenauth: session would expire at once")
	}
	b, err := json.Marshal(sessionRecord{Token: token, Created: now.Unix(), Expires: expires.Unix()})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("encode session: %w", err)
	}
	id := rand.Text()
	key := storeKey(id)
	sealed, err := s.sealer.Seal(b, sessionAD(key))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("seal session: %w", err)
	}
	if _, err := s.kv.Create(ctx, key, sealed, jetstream.KeyTTL(ttl)); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: create session: %w", ErrSessionStore, err)
	}
	return id, expires, nil
}

// get returns the token of session id, or ok=false for an unknown, ended or unauthentic session.
// err is set only when the store could not be read.
func (s *SessionStore) get(ctx context.Context, id string) (token string, ok bool, err error) {
	if !validSessionID(id) {
		return "", false, nil
	}
	key := storeKey(id)
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("%w: read session: %w", ErrSessionStore, err)
	}
	plain, err := s.sealer.Open(e.Value(), sessionAD(key))
	var rec sessionRecord
	if err == nil {
		err = json.Unmarshal(plain, &rec)
	}
	if err != nil || rec.Token == "" {
		// Only the broker writes this bucket with its sealing key: this record was forged, altered
		// or moved. Fail closed and say so. The key is a hash; it reveals no session id.
		s.unauthentic.Add(1)
		s.log.Error("session record does not authenticate; treated as signed out", "key", key, "revision", e.Revision())
		return "", false, nil
	}
	if s.now().Unix() >= rec.Expires {
		return "", false, nil
	}
	return rec.Token, true, nil
}

// end deletes session id. Deleting an unknown session is not an error.
func (s *SessionStore) end(ctx context.Context, id string) error {
	if !validSessionID(id) {
		return nil
	}
	if err := s.kv.Purge(ctx, storeKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: end session: %w", ErrSessionStore, err)
	}
	return nil
}
