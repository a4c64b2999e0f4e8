package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Protocol constants of C2SP tlog-witness.
const (
	// AddCheckpointPath is appended to a witness's submission prefix.
	AddCheckpointPath = "/add-checkpoint"
	// SizeContentType is the media type of a 409 Conflict body: the witness's latest size.
	SizeContentType = "text/x.tlog.size"
	// maxProofLines is the most consistency proof lines a client may send.
	maxProofLines = 63
	// maxBody bounds a request: a checkpoint with a few signatures and 63 proof lines is under 8 KiB.
	maxBody = 64 << 10
)

var hasher = rfc6962.DefaultHasher

// Log is a log the witness follows: its origin (the first line of its checkpoints) and the note
// verifier keys it signs with (more than one across a key rotation).
type Log struct {
	Origin    string
	Verifiers []note.Verifier
}

// ParseLogKeys groups note verifier keys ("<origin>+<hash>+<key>") into logs by their name, which is
// the log's origin.
func ParseLogKeys(vkeys []string) ([]Log, error) {
	var logs []Log
	at := map[string]int{}
	for _, k := range vkeys {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("log key %q: %w", k, err)
		}
		i, ok := at[v.Name()]
		if !ok {
			i = len(logs)
			at[v.Name()] = i
			logs = append(logs, Log{Origin: v.Name()})
		}
		logs[i].Verifiers = append(logs[i].Verifiers, v)
	}
	return logs, nil
}

// ServerConfig configures a witness server.
type ServerConfig struct {
	// Key is the witness's note signer key ("PRIVATE+KEY+<name>+<hash>+<key>", Ed25519); its
	// cosignatures are timestamped cosignature/v1 signatures.
	Key string
	// Logs are the logs this witness cosigns.
	Logs []Log
	// State keeps the latest cosigned checkpoint of each log.
	State *StateDir
	// Logger; nil uses slog.Default.
	Logger *slog.Logger
}

// Server is a C2SP tlog-witness: an http.Handler serving POST /add-checkpoint.
type Server struct {
	signer *fnote.Signer
	vkey   string
	logs   map[string]*followed
	state  *StateDir
	log    *slog.Logger
	mux    *http.ServeMux
}

// followed is one log and the lock that makes "check the old size, persist the new checkpoint" atomic
// for it (the rollback race in the spec).
type followed struct {
	Log
	mu sync.Mutex
}

// NewServer returns a witness server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.State == nil {
		return nil, errors.New("witness: a state directory is required")
	}
	if len(cfg.Logs) == 0 {
		return nil, errors.New("witness: no log to follow")
	}
	signer, err := fnote.NewSignerForCosignatureV1(strings.TrimSpace(cfg.Key))
	if err != nil {
		return nil, fmt.Errorf("witness key: %w", err)
	}
	vkey, err := VerifierKeyOf(cfg.Key)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{signer: signer, vkey: vkey, logs: map[string]*followed{}, state: cfg.State, log: cfg.Logger, mux: http.NewServeMux()}
	for _, l := range cfg.Logs {
		if l.Origin == "" || len(l.Verifiers) == 0 {
			return nil, errors.New("witness: a log needs an origin and at least one key")
		}
		if _, dup := s.logs[l.Origin]; dup {
			return nil, fmt.Errorf("witness: log %q is listed twice", l.Origin)
		}
		s.logs[l.Origin] = &followed{Log: l}
	}
	s.mux.HandleFunc("POST "+AddCheckpointPath, s.addCheckpoint)
	return s, nil
}

// Name is the witness's name, the name of its key.
func (s *Server) Name() string { return s.signer.Name() }

// VerifierKey is the witness's cosignature/v1 verifier key, for policy files.
func (s *Server) VerifierKey() string { return s.vkey }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// request is a parsed add-checkpoint body.
type request struct {
	old        uint64
	proof      [][]byte
	checkpoint []byte
}

// errMalformed is a body that does not follow the spec's grammar (400).
var errMalformed = errors.New("malformed add-checkpoint request")

// parseRequest reads "old <size>\n", up to 63 base64 hash lines, an empty line, then the checkpoint.
func parseRequest(body []byte) (request, error) {
	var req request
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return req, fmt.Errorf("%w: no old size line", errMalformed)
	}
	num, ok := strings.CutPrefix(string(line), "old ")
	if !ok || !decimal(num) {
		return req, fmt.Errorf("%w: first line must be \"old <size>\"", errMalformed)
	}
	var err error
	if req.old, err = strconv.ParseUint(num, 10, 64); err != nil {
		return req, fmt.Errorf("%w: old size: %v", errMalformed, err)
	}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return req, fmt.Errorf("%w: no empty line before the checkpoint", errMalformed)
		}
		if len(line) == 0 {
			break
		}
		if len(req.proof) == maxProofLines {
			return req, fmt.Errorf("%w: more than %d proof lines", errMalformed, maxProofLines)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(string(line))
		if err != nil || len(h) != hasher.Size() {
			return req, fmt.Errorf("%w: proof line %d is not a base64 hash", errMalformed, len(req.proof)+1)
		}
		req.proof = append(req.proof, h)
	}
	req.checkpoint = rest
	return req, nil
}

// decimal reports whether s is an ASCII decimal without leading zeroes.
func decimal(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (s *Server) addCheckpoint(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "request body too large or unreadable", http.StatusBadRequest)
		return
	}
	req, err := parseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	origin, _, _ := bytes.Cut(req.checkpoint, []byte("\n"))
	l, ok := s.logs[string(origin)]
	if !ok {
		http.Error(w, "unknown log", http.StatusNotFound)
		return
	}
	n, err := note.Open(req.checkpoint, note.VerifierList(l.Verifiers...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			http.Error(w, "no valid signature of a trusted log key", http.StatusForbidden)
			return
		}
		http.Error(w, "checkpoint is not a signed note", http.StatusBadRequest)
		return
	}
	var cp log.Checkpoint
	// Extension lines after the root are allowed by tlog-checkpoint; the cosignature covers them,
	// but the witness vouches for the first three lines only.
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil || cp.Origin != l.Origin {
		http.Error(w, "malformed checkpoint", http.StatusBadRequest)
		return
	}
	if req.old > cp.Size {
		http.Error(w, "old size is larger than the checkpoint size", http.StatusBadRequest)
		return
	}
	if req.old == 0 && len(req.proof) > 0 {
		http.Error(w, "a proof from size 0 must be empty", http.StatusBadRequest)
		return
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	latest, err := s.state.Load(l.Log)
	if err != nil {
		// A state that does not authenticate is not "no state": that would let a rewritten log
		// start over. Refuse until an operator looks.
		s.log.Error("witness state does not verify; refusing to cosign", "origin", l.Origin, "err", err)
		http.Error(w, "witness state unavailable", http.StatusInternalServerError)
		return
	}
	if req.old != latest.Size {
		s.conflict(w, latest.Size)
		return
	}
	switch {
	case req.old == 0:
	case req.old == cp.Size:
		if !bytes.Equal(latest.Hash, cp.Hash) {
			s.log.Error("log presented a different root at a size this witness cosigned: split view",
				"origin", l.Origin, "size", cp.Size)
			s.conflict(w, latest.Size)
			return
		}
	default:
		if err := proof.VerifyConsistency(hasher, req.old, cp.Size, req.proof, latest.Hash, cp.Hash); err != nil {
			s.log.Error("consistency proof does not verify: the log may have rewritten its history",
				"origin", l.Origin, "old", req.old, "size", cp.Size, "err", err)
			http.Error(w, "consistency proof does not verify", http.StatusUnprocessableEntity)
			return
		}
	}
	if cp.Size > latest.Size || latest.Size == 0 {
		if err := s.state.Store(l.Log, req.checkpoint); err != nil {
			s.log.Error("persist witness state", "origin", l.Origin, "err", err)
			http.Error(w, "witness state unavailable", http.StatusInternalServerError)
			return
		}
	}
	sigs, err := s.cosign(n.Text)
	if err != nil {
		s.log.Error("cosign", "origin", l.Origin, "err", err)
		http.Error(w, "cosigning failed", http.StatusInternalServerError)
		return
	}
	s.log.Debug("cosigned", "origin", l.Origin, "size", cp.Size, "old", req.old)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(sigs)
}

func (s *Server) conflict(w http.ResponseWriter, size uint64) {
	w.Header().Set("Content-Type", SizeContentType)
	w.WriteHeader(http.StatusConflict)
	fmt.Fprintf(w, "%d\n", size)
}

// cosign returns the witness's signature line(s) on the note text.
func (s *Server) cosign(text string) ([]byte, error) {
	signed, err := note.Sign(&note.Note{Text: text}, s.signer)
	if err != nil {
		return nil, err
	}
	return sigLines(signed, text), nil
}

// sigLines returns the signature lines of a signed note whose text is text.
func sigLines(signed []byte, text string) []byte {
	return signed[len(text)+1:]
}

// GenerateKey returns a new witness key named name: the note signer key (keep it secret) and the
// cosignature/v1 verifier key (publish it; policy files name the witness by it).
func GenerateKey(name string) (skey, vkey string, err error) {
	skey, plain, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("generate witness key: %w", err)
	}
	vkey, err = fnote.VKeyToCosignatureV1(plain)
	if err != nil {
		return "", "", fmt.Errorf("witness verifier key: %w", err)
	}
	return skey, vkey, nil
}

// VerifierKeyOf returns the cosignature/v1 verifier key of a witness's Ed25519 note signer key.
func VerifierKeyOf(skey string) (string, error) {
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("witness key is not a note private key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("witness key is not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	plain, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", fmt.Errorf("witness verifier key: %w", err)
	}
	return fnote.VKeyToCosignatureV1(plain)
}
