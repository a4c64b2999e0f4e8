package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// ConflictError is a 409 Conflict: the witness's latest cosigned size is not the old size sent.
type ConflictError struct {
	// Size is the witness's latest size, as it answered.
	Size uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("witness has size %d (409 Conflict)", e.Size)
}

// RefusedError is a witness saying no to this checkpoint: 400, 403, 404 or 422. Unlike a witness that
// is down, it means the witness looked and will not cosign.
type RefusedError struct {
	Status int
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("witness refused (%d %s): %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// ErrUnavailable means the witness could not be reached or answered with a server error.
var ErrUnavailable = errors.New("witness unavailable")

// Client submits checkpoints to one witness.
type Client struct {
	// URL is the witness's submission prefix.
	URL string
	// Key verifies the witness's cosignatures.
	Key note.Verifier
	// HTTP is the client; nil uses http.DefaultClient.
	HTTP *http.Client
}

// AddCheckpoint submits the log-signed checkpoint with the consistency proof from old and returns the
// witness's verified cosignature line (ending in a newline). Cosignatures of other keys in the answer are
// dropped, as the spec requires.
func (c Client) AddCheckpoint(ctx context.Context, old uint64, proof [][]byte, checkpoint []byte) ([]byte, error) {
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	for _, h := range proof {
		body.WriteString(base64.StdEncoding.EncodeToString(h))
		body.WriteByte('\n')
	}
	body.WriteByte('\n')
	body.Write(checkpoint)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+AddCheckpointPath, &body)
	if err != nil {
		return nil, fmt.Errorf("witness request: %w", err)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%w: read answer: %w", ErrUnavailable, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return c.verify(checkpoint, b)
	case http.StatusConflict:
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		size, perr := strconv.ParseUint(strings.TrimSuffix(string(b), "\n"), 10, 64)
		if mt != SizeContentType || perr != nil {
			// A conflict without a size: the same size with another root, or a witness off-spec.
			return nil, &RefusedError{Status: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
		}
		return nil, &ConflictError{Size: size}
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity:
		return nil, &RefusedError{Status: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, resp.Status)
	}
}

// verify keeps the answer's signature lines that are valid cosignatures of the witness's key.
func (c Client) verify(checkpoint, answer []byte) ([]byte, error) {
	var keep []byte
	for _, line := range bytes.SplitAfter(answer, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !bytes.HasSuffix(line, []byte("\n")) {
			line = append(line, '\n')
		}
		n, err := note.Open(append(append([]byte(nil), checkpoint...), line...), note.VerifierList(c.Key))
		if err != nil || len(n.Sigs) != 1 {
			continue // another key, or not for us: ignored
		}
		keep = append(keep, line...)
	}
	if keep == nil {
		return nil, fmt.Errorf("witness answered 200 without a valid cosignature of %s", c.Key.Name())
	}
	return keep, nil
}
