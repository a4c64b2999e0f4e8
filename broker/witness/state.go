package witness

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// StateDir keeps the latest cosigned checkpoint of each log as a file: the log-signed note exactly
// as submitted, so it is both the witness's state and evidence of what the log claimed. A write is
// atomic and durable (temporary file, fsync, rename, fsync of the directory) before the witness
// answers, as the spec requires.
type StateDir struct {
	dir string
}

// OpenStateDir opens (creating) the state directory.
func OpenStateDir(dir string) (*StateDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("witness state directory: %w", err)
	}
	return &StateDir{dir: dir}, nil
}

// path names a log's file by the hash of its origin: origins contain slashes.
func (d *StateDir) path(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return filepath.Join(d.dir, hex.EncodeToString(h[:8])+".checkpoint")
}

// Load returns the latest checkpoint cosigned for l, or a zero checkpoint (size 0) if there is none.
// A stored note that does not verify with l's keys, or names another origin, is an error, never "none":
// a witness that forgot would cosign a rewritten log.
func (d *StateDir) Load(l Log) (log.Checkpoint, error) {
	b, err := os.ReadFile(d.path(l.Origin))
	if errors.Is(err, fs.ErrNotExist) {
		return log.Checkpoint{Origin: l.Origin}, nil
	}
	if err != nil {
		return log.Checkpoint{}, fmt.Errorf("read state of %s: %w", l.Origin, err)
	}
	n, err := note.Open(b, note.VerifierList(l.Verifiers...))
	if err != nil {
		return log.Checkpoint{}, fmt.Errorf("state of %s does not verify: %w", l.Origin, err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return log.Checkpoint{}, fmt.Errorf("state of %s: %w", l.Origin, err)
	}
	if cp.Origin != l.Origin {
		return log.Checkpoint{}, fmt.Errorf("state of %s holds a checkpoint of %s", l.Origin, cp.Origin)
	}
	return cp, nil
}

// Store replaces l's latest checkpoint with the signed note b, durably.
func (d *StateDir) Store(l Log, b []byte) error {
	return writeFileAtomic(d.path(l.Origin), b)
}

// writeFileAtomic writes b to path so that a crash leaves either the old or the new content.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	dh, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer dh.Close()
	if err := dh.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
