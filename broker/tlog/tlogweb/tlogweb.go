// Package tlogweb serves the access log's Merkle tree read-only over HTTP, as
// https://c2sp.org/tlog-tiles describes, so that anyone (a witness, a monitor, a citizen's own
// verifier) can follow the log without an auditor certificate:
//
//	GET <prefix>/checkpoint                 the newest checkpoint (C2SP tlog-checkpoint signed note)
//	GET <prefix>/tile/<L>/<N>[.p/<W>]       hash tiles, N in x-prefixed groups of three digits
//
// Full tiles are immutable and served with a year-long Cache-Control; partial tiles briefly; the
// checkpoint not cached. Only tiles within the served checkpoint's tree are served.
//
// # What is public and what is not
//
// Leaf contents are NOT public: an access record names a citizen's pseudonym, the agency, the
// journey and the step, which together say too much about a person to hand to anyone who asks. So no
// entry bundles (tile/entries) are served here. The level-0 tiles commit to every leaf by its RFC 6962
// leaf hash only, which reveals nothing about the record. Auditors read the leaves over the mTLS
// audit API (aperture.audit.v1); a citizen gets the exact bytes of their own records from the
// citizen API and checks their inclusion against these public tiles and checkpoint, and anyone can
// check that the log only grows (consistency) without reading a record.
package tlogweb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	sumdbtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/aperture-gov/aperture/broker/tlog"
)

// CheckpointSource gives the checkpoint to serve: a signed note. The tree's own latest checkpoint
// (TreeCheckpoints) is the default; a witness-cosigned checkpoint is served by a source that returns
// the newest checkpoint with enough cosignatures.
type CheckpointSource interface {
	LatestCheckpoint(ctx context.Context) ([]byte, error)
}

// TileSource reads stored hash tiles (tlog.Tree implements it).
type TileSource interface {
	Tile(ctx context.Context, level, index uint64, width int) ([]byte, error)
}

// TreeCheckpoints serves the tree's newest verified checkpoint.
type TreeCheckpoints struct{ Tree *tlog.Tree }

// LatestCheckpoint implements CheckpointSource.
func (s TreeCheckpoints) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	cp, err := s.Tree.LatestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return cp.Note, nil
}

// Options configure the handler. Zero values take the defaults.
type Options struct {
	// Prefix the handler is mounted under. Default "/log".
	Prefix string
	// CheckpointTTL is how long a checkpoint read from the source is reused, so that a burst of
	// requests costs one read. Default 1s.
	CheckpointTTL time.Duration
	// CachedTiles bounds the full tiles kept in memory (8 KiB each). Default 1024.
	CachedTiles int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Cache-Control values.
const (
	fullTileCache    = "public, max-age=31536000, immutable"
	partialTileCache = "public, max-age=60"
	checkpointCache  = "no-cache"
)

type handler struct {
	opts  Options
	cps   CheckpointSource
	tiles TileSource

	mu       sync.Mutex
	cp       []byte
	cpSize   uint64
	cpExpiry time.Time
	full     map[[2]uint64][]byte
}

// Handler returns the read-only log endpoint. Mount it at opts.Prefix + "/".
func Handler(cps CheckpointSource, tiles TileSource, opts Options) http.Handler {
	if opts.Prefix == "" {
		opts.Prefix = "/log"
	}
	opts.Prefix = strings.TrimSuffix(opts.Prefix, "/")
	if opts.CheckpointTTL == 0 {
		opts.CheckpointTTL = time.Second
	}
	if opts.CachedTiles == 0 {
		opts.CachedTiles = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &handler{opts: opts, cps: cps, tiles: tiles, full: map[[2]uint64][]byte{}}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, h.opts.Prefix+"/")
	switch {
	case !ok:
		http.NotFound(w, r)
	case path == "checkpoint":
		h.serveCheckpoint(w, r)
	case strings.HasPrefix(path, "tile/"):
		h.serveTile(w, r, path)
	default:
		http.NotFound(w, r)
	}
}

// checkpoint returns the checkpoint to serve and its tree size.
func (h *handler) checkpoint(ctx context.Context) ([]byte, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cp != nil && time.Now().Before(h.cpExpiry) {
		return h.cp, h.cpSize, nil
	}
	b, err := h.cps.LatestCheckpoint(ctx)
	if err != nil {
		return nil, 0, err
	}
	size, err := checkpointSize(b)
	if err != nil {
		return nil, 0, err
	}
	h.cp, h.cpSize, h.cpExpiry = b, size, time.Now().Add(h.opts.CheckpointTTL)
	return b, size, nil
}

// checkpointSize reads the size from a checkpoint note without verifying its signatures: the source
// is trusted to have verified it; the size only bounds which tiles are served.
func checkpointSize(b []byte) (uint64, error) {
	n, err := note.Open(b, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		n, err = unverified.Note, nil
	}
	if err != nil {
		return 0, fmt.Errorf("checkpoint is not a signed note: %w", err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return 0, fmt.Errorf("checkpoint does not parse: %w", err)
	}
	return cp.Size, nil
}

func (h *handler) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	b, _, err := h.checkpoint(r.Context())
	if err != nil {
		h.fail(w, "checkpoint", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", checkpointCache)
	_, _ = w.Write(b)
}

func (h *handler) serveTile(w http.ResponseWriter, r *http.Request, path string) {
	// C2SP tlog-tiles paths are sumdb tile paths without the height: parse them as height-8 tiles,
	// which also rejects non-canonical encodings of N.
	t, err := sumdbtlog.ParseTilePath("tile/8/" + strings.TrimPrefix(path, "tile/"))
	if err != nil || t.L < 0 {
		// Entry bundles (tile/entries/…) are not served: leaf contents are not public.
		http.NotFound(w, r)
		return
	}
	_, size, err := h.checkpoint(r.Context())
	if err != nil {
		h.fail(w, "checkpoint", err)
		return
	}
	level, index, width := uint64(t.L), uint64(t.N), uint64(t.W)
	// The tile's nodes must be in the served tree: 256·N+W nodes at level 8·L.
	if shift := 8 * level; shift >= 64 || index*256+width > size>>shift {
		http.NotFound(w, r)
		return
	}
	full := width == 256
	b := h.cached(level, index)
	if b == nil {
		if b, err = h.tiles.Tile(r.Context(), level, index, int(width)); err != nil {
			if errors.Is(err, tlog.ErrNotFound) {
				// Within the signed tree yet not stored: the storage lost it. Say so to the operator.
				h.opts.Logger.Error("tile within the signed tree is missing", "tile", fmt.Sprintf("%d/%d.p/%d", level, index, width), "tree_size", size)
			}
			h.fail(w, "tile", err)
			return
		}
		if full {
			h.cache(level, index, b)
		}
	} else if !full {
		b = b[:width*32]
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if full {
		w.Header().Set("Cache-Control", fullTileCache)
	} else {
		w.Header().Set("Cache-Control", partialTileCache)
	}
	_, _ = w.Write(b)
}

func (h *handler) cached(level, index uint64) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.full[[2]uint64{level, index}]
}

func (h *handler) cache(level, index uint64, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.full) >= h.opts.CachedTiles {
		for k := range h.full { // evict an arbitrary entry: full tiles never change
			delete(h.full, k)
			break
		}
	}
	h.full[[2]uint64{level, index}] = b
}

func (h *handler) fail(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, tlog.ErrNotFound) {
		http.Error(w, what+" not found", http.StatusNotFound)
		return
	}
	h.opts.Logger.Warn("serve the public log", "what", what, "err", err)
	http.Error(w, what+" unavailable", http.StatusServiceUnavailable)
}
