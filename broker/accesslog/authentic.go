package accesslog

import (
	"errors"
	"fmt"
)

// ErrUnauthenticBatch means an ACCESS message does not carry a valid MAC under the broker's sealing
// key: something other than a broker wrote it. Its records MUST NOT become leaves of the tree; the
// integrator halts on it and reports it.
var ErrUnauthenticBatch = errors.New("access batch is not authenticated by the broker")

// BatchError names the ACCESS message (stream sequence) that could not be used, and why.
type BatchError struct {
	Seq uint64
	Err error
}

func (e *BatchError) Error() string { return fmt.Sprintf("ACCESS message %d: %v", e.Seq, e.Err) }

func (e *BatchError) Unwrap() error { return e.Err }
